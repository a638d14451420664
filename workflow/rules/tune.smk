# Stage 2: contrastive tuning (or the CE/BCE baseline) of a backbone, one job per fold and seed.
# The test fold never reaches the tuner; the frozen method has no tune job.


rule tune:
    input:
        index=lambda w: f"{cache_dir(w)}/index.parquet",
        waveforms=lambda w: f"{cache_dir(w)}/waveforms.npy",
        vocab="results/data/{dataset}/labels.txt",
        code=script_code("tune.py"),
    output:
        model="results/tune/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}/model.safetensors",
        meta="results/tune/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}/meta.json",
        log_csv="results/tune/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}/log.csv",
        curve="results/tune/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}/curve.png",
        # result rows of the run: its tuning choices (probe "tune") and, with a classifier, its head's test scores
        head="results/tune/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}/head.parquet",
    log:
        "logs/tune/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}.log",
    benchmark:
        "benchmarks/tune/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}.tsv"
    wildcard_constraints:
        method="|".join(tuned_methods()) or "__none__",
    conda:
        "../../envs/torch.yaml"
    threads: config["tune"]["threads"]
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        backbone=lambda w: config["backbones"][w.backbone],
        method=lambda w: method_config(config, w.method),
        tune=config["tune"],
        val_offset=lambda w: config["datasets"][w.dataset]["val_offset"],
        config_hash=lineage_hash("head"),
    script:
        "../scripts/tune.py"
