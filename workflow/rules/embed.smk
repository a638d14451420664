# Stage 3: embeddings of every clip to Parquet. The frozen backbone is extracted once per dataset and backbone.

EMBED_CODE = script_code("embed.py")


rule embed_frozen:
    input:
        index=lambda w: f"{cache_dir(w)}/index.parquet",
        waveforms=lambda w: f"{cache_dir(w)}/waveforms.npy",
        code=EMBED_CODE,
    output:
        "results/embed/{dataset}/{backbone}/{method}.parquet",
    log:
        "logs/embed/{dataset}/{backbone}/{method}.log",
    benchmark:
        "benchmarks/embed/{dataset}/{backbone}/{method}.tsv"
    wildcard_constraints:
        method="|".join(frozen_methods()) or "__none__",
    conda:
        "../../envs/torch.yaml"
    threads: config["embed"]["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        backbone=lambda w: config["backbones"][w.backbone],
        embed={k: v for k, v in config["embed"].items() if k != "threads"},
    script:
        "../scripts/embed.py"


rule embed_tuned:
    input:
        index=lambda w: f"{cache_dir(w)}/index.parquet",
        waveforms=lambda w: f"{cache_dir(w)}/waveforms.npy",
        checkpoint="results/tune/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}/model.safetensors",
        code=EMBED_CODE,
    output:
        "results/embed/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}.parquet",
    log:
        "logs/embed/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}.log",
    benchmark:
        "benchmarks/embed/{dataset}/{backbone}/{method}/fold{fold}/seed{seed}.tsv"
    wildcard_constraints:
        method="|".join(tuned_methods()) or "__none__",
    conda:
        "../../envs/torch.yaml"
    threads: config["embed"]["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        backbone=lambda w: config["backbones"][w.backbone],
        embed={k: v for k, v in config["embed"].items() if k != "threads"},
    script:
        "../scripts/embed.py"
