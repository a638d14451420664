"""Rules embed_tuned / embed_frozen: embeddings of every cached clip to one Parquet file."""

from pathlib import Path

import _bootstrap  # noqa: F401  (puts the acft package on sys.path)

from acft import provenance
from acft.embed import extract_embeddings
from acft.identity import Run
from acft.runlog import log_to

log_to(snakemake.log[0], threads=snakemake.threads)
checkpoint = snakemake.input.get("checkpoint")
settings = dict(snakemake.params.items())
with provenance.track(snakemake.output, settings, rule=snakemake.rule) as facts:
    extract_embeddings(
        Path(snakemake.input.index).parent,
        snakemake.params.backbone,
        snakemake.output[0],
        checkpoint=checkpoint,
        batch_size=snakemake.params.embed["batch_size"],
        device=snakemake.params.embed["device"],
        run=Run.from_wildcards(snakemake.wildcards),  # the frozen file has no fold or seed: 0 and 0
        params_hash=provenance.config_hash(settings),
    )
    facts["checkpoint_sha256"] = provenance.file_sha256(checkpoint) if checkpoint else None
