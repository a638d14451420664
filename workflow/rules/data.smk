# Stage 1: datasets -> canonical manifest -> resampled audio cache.


rule manifest:
    input:
        code=script_code("manifest.py"),
    output:
        manifest="results/data/{dataset}/manifest.parquet",
        vocab=VOCAB,
        stats="results/data/{dataset}/stats.json",
        skipped="results/data/{dataset}/skipped.csv",
    log:
        "logs/data/{dataset}/manifest.log",
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        dataset=lambda w: config["datasets"][w.dataset],
        on_bad_audio=config["preprocess"]["on_bad_audio"],
        seed=config["seed"],
    script:
        "../scripts/manifest.py"


rule preprocess:
    input:
        manifest="results/data/{dataset}/manifest.parquet",
        code=script_code("preprocess.py"),
    output:
        waveforms=f"{CACHE_DIR}/waveforms.npy",
        index=f"{CACHE_DIR}/index.parquet",
        stats=f"{CACHE_DIR}/stats.json",
    log:
        "logs/data/{dataset}/sr{sr}/preprocess.log",
    benchmark:
        "benchmarks/data/{dataset}/sr{sr}/preprocess.tsv"
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        preprocess={
            k: v for k, v in config["preprocess"].items() if k != "on_bad_audio"
        },
        seed=config["seed"],
    script:
        "../scripts/preprocess.py"
