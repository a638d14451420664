"""Rule probe: one probe (the {probe} wildcard: knn, linear or geometry) over one embedding file -> tidy rows."""

import _bootstrap  # noqa: F401  (puts the acft package on sys.path)

from acft import provenance
from acft.identity import Run
from acft.probes.run import run_probe
from acft.runlog import log_to

log_to(snakemake.log[0], threads=snakemake.threads)
probe = snakemake.wildcards.probe
with provenance.track(snakemake.output, dict(snakemake.params.items()), rule=f"probe ({probe})") as facts:
    rows = run_probe(
        probe,
        snakemake.input.embedding,
        snakemake.input.vocab,
        snakemake.output[0],
        run=Run.from_wildcards(snakemake.wildcards),
        settings=snakemake.params.settings,
        val_offset=snakemake.params.val_offset,
        lineage_hash=snakemake.params.lineage_hash,
    )
    facts["rows"] = len(rows)
