# Stage 5: every tidy row into one results table, then paper tables, plots and the Snakemake report.


rule aggregate:
    input:
        rows=list(ROW_FILES),
        code=script_code("aggregate.py"),
    output:
        parquet="results/results.parquet",
        csv=report(
            "results/results.csv", caption="../report/results.rst", category="Results"
        ),
    log:
        "logs/report/aggregate.log",
    conda:
        "../../envs/report.yaml"
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        lineage_hashes=ROW_FILES,
        allow_stale=config["report"]["allow_stale"],
    script:
        "../scripts/aggregate.py"


rule tables:
    input:
        results="results/results.parquet",
        code=script_code("tables.py"),
    output:
        md=report(
            "results/tables/{dataset}.md",
            caption="../report/tables.rst",
            category="Tables",
        ),
        tex="results/tables/{dataset}.tex",
        csv="results/tables/{dataset}.csv",
        extra=multiext(
            "results/tables/{dataset}",
            *[
                f"_{t}.{e}"
                for t in ("deltas", "geometry", "fewshot")
                for e in ("md", "tex", "csv")
            ],
            "_long.csv",
        ),
    log:
        "logs/report/tables_{dataset}.log",
    conda:
        "../../envs/report.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        report=config["report"],
        probes=config["probes"],
        tune=config["tune"],
        methods=config["methods"],
        method_order=list(config["methods"]),
        baselines={
            "frozen": frozen_methods(),
            "supervised": [
                m
                for m in config["methods"]
                if config["methods"][m]["loss"] in ("ce", "bce")
            ],
        },
    script:
        "../scripts/tables.py"


rule plot_metric_vs_k:
    input:
        results="results/results.parquet",
        code=script_code("plots.py"),
    output:
        report(
            "results/plots/{dataset}_metric_vs_k.png",
            caption="../report/metric_vs_k.rst",
            category="Plots",
        ),
    log:
        "logs/report/metric_vs_k_{dataset}.log",
    conda:
        "../../envs/report.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../scripts/plots.py"


rule plot_projection:
    input:
        embeddings=lambda w: list(projection_embeddings(w.dataset).values()),
        vocab=VOCAB,
        code=script_code("plots.py"),
    output:
        report(
            "results/plots/{dataset}_projection.png",
            caption="../report/projection.rst",
            category="Plots",
        ),
    log:
        "logs/report/projection_{dataset}.log",
    conda:
        "../../envs/report.yaml"
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        names=lambda w: list(projection_embeddings(w.dataset)),
        # config order, only the dataset's own methods: a method added elsewhere does not rerun this plot
        method_order=lambda w: [
            m
            for m in config["methods"]
            if any(r.dataset == w.dataset and r.method == m for r in RUNS)
        ],
        frozen=frozen_methods(),
        fold=lambda w: min(run.fold for run in RUNS if run.dataset == w.dataset),
        seed=config["seed"],
    script:
        "../scripts/plots.py"


rule plot_curves:
    input:
        logs=lambda w: [f"{tune_dir(r)}/log.csv" for r in tuned_runs(w.dataset)],
        code=script_code("plots.py"),
    output:
        report(
            "results/plots/{dataset}_curves.png",
            caption="../report/curves.rst",
            category="Plots",
        ),
    log:
        "logs/report/curves_{dataset}.log",
    conda:
        "../../envs/report.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        names=lambda w: [
            f"{r.backbone}/{r.method}/fold{r.fold}/seed{r.seed}"
            for r in tuned_runs(w.dataset)
        ],
    script:
        "../scripts/plots.py"


rule check_fresh:
    input:
        rows=list(ROW_FILES),
        code=script_code("check_fresh.py"),
    output:
        FRESH_MARKER,
    log:
        "logs/report/check_fresh.log",
    localrule: True
    conda:
        "../../envs/report.yaml"
    params:
        lineage_hashes=ROW_FILES,
        allow_stale=config["report"]["allow_stale"],
    script:
        "../scripts/check_fresh.py"
