"""Rule aggregate: every tidy row into results.parquet / results.csv, refusing stale rows."""

import _bootstrap  # noqa: F401  (puts the acft package on sys.path)

from acft import provenance
from acft.report.aggregate import aggregate
from acft.runlog import log_to

log_to(snakemake.log[0])
with provenance.track(snakemake.output, dict(snakemake.params.items()), rule="aggregate") as facts:
    results = aggregate(
        list(snakemake.input.rows),
        snakemake.output.parquet,
        snakemake.output.csv,
        lineage_hashes=snakemake.params.lineage_hashes,
        allow_stale=snakemake.params.allow_stale,
    )
    facts["rows"] = len(results)
