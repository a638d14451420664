"""Rule preprocess: decode, mono, resample, crop/pad into the audio cache."""

from pathlib import Path

import _bootstrap  # noqa: F401  (puts the acft package on sys.path)

from acft import provenance
from acft.data.preprocess import preprocess
from acft.runlog import log_to

log_to(snakemake.log[0], threads=snakemake.threads)
settings = snakemake.params.preprocess
with provenance.track(snakemake.output, dict(snakemake.params.items()), rule="preprocess") as facts:
    index = preprocess(
        snakemake.input.manifest,
        Path(snakemake.output.index).parent,
        sample_rate=int(snakemake.wildcards.sr),
        length_s=settings["length_s"],
        crop=settings["crop"],
        pad=settings["pad"],
        seed=snakemake.params.seed,
        dtype=settings["dtype"],
    )
    facts["clips"] = len(index)
