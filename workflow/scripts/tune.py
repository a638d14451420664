"""Rule tune: fine-tune a backbone with the method's loss; select the lr on val; write checkpoint and logs."""

import _bootstrap  # noqa: F401  (puts the acft package on sys.path)

from pathlib import Path

from acft import provenance
from acft.identity import Run
from acft.io import write_parquet
from acft.results import make_rows
from acft.runlog import log_to
from acft.tune.trainer import tune

log_to(snakemake.log[0], threads=snakemake.threads)
tune_cfg = dict(snakemake.params.tune, threads=snakemake.threads)
out_dir = Path(snakemake.output.model).parent
with provenance.track(snakemake.output, dict(snakemake.params.items()), rule="tune") as facts:
    meta = tune(
        Path(snakemake.input.index).parent,
        snakemake.input.vocab,
        snakemake.params.backbone,
        snakemake.params.method,
        tune_cfg,
        run=Run.from_wildcards(snakemake.wildcards),
        out_dir=out_dir,
        val_offset=snakemake.params.val_offset,
        lineage_hash=snakemake.params.lineage_hash,  # the rows' config_hash
    )
    facts["chosen_lr"], facts["chosen_epoch"] = meta.get("chosen_lr"), meta.get("best_epoch")
    # tune() always writes the run's rows (probe "tune", plus "head" with a classifier); kept as a safeguard
    if not Path(snakemake.output.head).exists():
        write_parquet(make_rows([]), snakemake.output.head)
