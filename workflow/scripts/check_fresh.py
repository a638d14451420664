"""Rule check_fresh: stale result rows (made under another config) cannot hide behind mtime-only reruns."""

import _bootstrap  # noqa: F401  (puts the acft package on sys.path)

from acft.report.aggregate import check_fresh
from acft.runlog import log_to

log_to(snakemake.log[0])
check_fresh(
    list(snakemake.input.rows),
    snakemake.output[0],
    lineage_hashes=snakemake.params.lineage_hashes,
    allow_stale=snakemake.params.allow_stale,
)
