# Stage 4: the two probes (linear: global separability; kNN: local cluster structure) and geometry diagnostics,
# one rule for all three ({probe}: knn, linear or geometry), each job over one cached Parquet embedding file.
# Frozen runs use tune seed 0.


rule probe:
    input:
        embedding=probe_embedding,
        vocab=VOCAB,
        code=script_code("probe.py"),
    output:
        PROBE_ROWS,
    log:
        f"logs/probe/{{probe}}/{RUN}.log",
    conda:
        "../../envs/probe.yaml"
    threads: config["probes"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=lambda w: config["probes"][w.probe],
        val_offset=lambda w: config["datasets"][w.dataset]["val_offset"],
        lineage_hash=lineage_hash(),
    script:
        "../scripts/probe.py"
