"""Rules plot_metric_vs_k / plot_projection / plot_curves: the figures of the report."""

from pathlib import Path

import _bootstrap  # noqa: F401  (puts the acft package on sys.path)
import pandas as pd

from acft import provenance
from acft.report import plots
from acft.runlog import log_to

log_to(snakemake.log[0])
out = Path(snakemake.output[0])
with provenance.track(out, dict(snakemake.params.items()), rule=snakemake.rule):
    if snakemake.rule == "plot_metric_vs_k":
        results = pd.read_parquet(snakemake.input.results)
        plots.plot_metric_vs_k(results[results["dataset"] == snakemake.wildcards.dataset], out)
    elif snakemake.rule == "plot_projection":
        embeddings = dict(zip(snakemake.params.names, snakemake.input.embeddings, strict=True))
        plots.plot_embedding_projection(
            embeddings,
            snakemake.input.vocab,
            out,
            method_order=snakemake.params.method_order,
            frozen=snakemake.params.frozen,
            fold=snakemake.params.fold,
            seed=snakemake.params.seed,
        )
    else:
        plots.plot_training_curves(dict(zip(snakemake.params.names, snakemake.input.logs, strict=True)), out)
