"""Rule manifest: run the dataset's adapter and write the canonical manifest."""

from pathlib import Path

import _bootstrap  # noqa: F401  (puts the acft package on sys.path)

from acft import provenance
from acft.data.manifest import build_manifest
from acft.runlog import log_to

log_to(snakemake.log[0])
with provenance.track(snakemake.output, dict(snakemake.params.items()), rule="manifest") as facts:
    manifest = build_manifest(
        snakemake.wildcards.dataset,
        snakemake.params.dataset,
        Path(snakemake.output.manifest).parent,
        on_bad_audio=snakemake.params.on_bad_audio,
        seed=snakemake.params.seed,
    )
    facts["clips"] = len(manifest)
