# Stage 2: contrastive tuning (or the CE/BCE baseline) of a backbone, one job per fold and seed.
# The test fold never reaches the tuner; the frozen method has no tune job.


rule tune:
    input:
        index=cache_file("index.parquet"),
        waveforms=cache_file("waveforms.npy"),
        vocab=VOCAB,
        code=script_code("tune.py"),
    output:
        model=f"{TUNE_DIR}/model.safetensors",
        meta=f"{TUNE_DIR}/meta.json",
        log_csv=f"{TUNE_DIR}/log.csv",
        curve=f"{TUNE_DIR}/curve.png",
        # result rows of the run: its tuning choices (probe "tune") and, with a classifier, its head's test scores
        head=f"{TUNE_DIR}/head.parquet",
    log:
        f"logs/tune/{RUN}.log",
    benchmark:
        f"benchmarks/tune/{RUN}.tsv"
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
        lineage_hash=lineage_hash("head"),
    script:
        "../scripts/tune.py"
