# Stage 4: the two probes (linear: global separability; kNN: local cluster structure) and geometry diagnostics,
# each a separate job over the cached Parquet embeddings. Frozen runs use tune seed 0.


rule knn_probe:
    input:
        embedding=probe_embedding,
        vocab="results/data/{dataset}/labels.txt",
        code=script_code("probe.py"),
    output:
        "results/probe/knn/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}.parquet",
    log:
        "logs/probe/knn/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}.log",
    conda:
        "../../envs/probe.yaml"
    threads: config["probes"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=config["probes"]["knn"],
        val_offset=lambda w: config["datasets"][w.dataset]["val_offset"],
        config_hash=lineage_hash("knn"),
    script:
        "../scripts/probe.py"


rule linear_probe:
    input:
        embedding=probe_embedding,
        vocab="results/data/{dataset}/labels.txt",
        code=script_code("probe.py"),
    output:
        "results/probe/linear/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}.parquet",
    log:
        "logs/probe/linear/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}.log",
    conda:
        "../../envs/probe.yaml"
    threads: config["probes"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=config["probes"]["linear"],
        val_offset=lambda w: config["datasets"][w.dataset]["val_offset"],
        config_hash=lineage_hash("linear"),
    script:
        "../scripts/probe.py"


rule geometry:
    input:
        embedding=probe_embedding,
        vocab="results/data/{dataset}/labels.txt",
        code=script_code("probe.py"),
    output:
        "results/geometry/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}.parquet",
    log:
        "logs/geometry/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}.log",
    conda:
        "../../envs/probe.yaml"
    threads: config["probes"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=config["probes"]["geometry"],
        val_offset=lambda w: config["datasets"][w.dataset]["val_offset"],
        config_hash=lineage_hash("geometry"),
    script:
        "../scripts/probe.py"
