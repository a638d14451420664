# Stage 3: embeddings of every clip to Parquet. The frozen backbone is extracted once per dataset and backbone,
# by the same rule with the tuned checkpoint left out and a path without fold and seed.


rule embed_tuned:
    input:
        index=cache_file("index.parquet"),
        waveforms=cache_file("waveforms.npy"),
        checkpoint=f"{TUNE_DIR}/model.safetensors",
        code=script_code("embed.py"),
    output:
        EMBED,
    log:
        f"logs/embed/{RUN}.log",
    benchmark:
        f"benchmarks/embed/{RUN}.tsv"
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


use rule embed_tuned as embed_frozen with:
    input:
        index=cache_file("index.parquet"),
        waveforms=cache_file("waveforms.npy"),
        code=script_code("embed.py"),
    output:
        FROZEN_EMBED,
    log:
        f"logs/embed/{FROZEN_RUN}.log",
    benchmark:
        f"benchmarks/embed/{FROZEN_RUN}.tsv"
    wildcard_constraints:
        method="|".join(frozen_methods()) or "__none__",
