"""Rule tables: pivot the tidy rows of one dataset into Markdown, LaTeX and CSV paper tables."""

from pathlib import Path

import _bootstrap  # noqa: F401  (puts the acft package on sys.path)
import pandas as pd

from acft import provenance
from acft.report.tables import render_tables
from acft.runlog import log_to

log_to(snakemake.log[0])
results = pd.read_parquet(snakemake.input.results)
results = results[results["dataset"] == snakemake.wildcards.dataset]
with provenance.track(snakemake.output, dict(snakemake.params.items()), rule="tables"):
    render_tables(
        results,
        Path(snakemake.output.md).parent,
        settings={
            **snakemake.params.probes,
            "tune": snakemake.params.tune,
            "methods": snakemake.params.methods,
        },
        headline_k=snakemake.params.report["headline_k"],
        method_order=snakemake.params.method_order,
        baselines=snakemake.params.baselines,
        sign_flips=snakemake.params.report["sign_flips"],
    )
