"""The tidy result row: the one contract between every probe and the tables.

Every probe writes rows with exactly these columns; tables and plots are computed from rows alone.

- ``dataset, backbone, method``: config names (the Snakemake wildcards).
- ``fold``: evaluation round (0 = fixed split); ``tune_seed``: tuning seed (0 for ``frozen``).
- ``probe``: ``linear``, ``knn_majority``, ``knn_weighted``, ``head`` (the fine-tuned model's own classifier),
  ``geometry``, or ``tune`` (a tuning run's choices: ``chosen_lr``, ``chosen_epoch``, ``epochs_run``,
  ``val_selection_metric``); ``probe_seed``: seed of a stochastic probe (0 otherwise).
- ``k``: neighbours for kNN rows, 0 otherwise.
- ``metric, value``: e.g. ``accuracy``, ``macro_f1``, ``map``; grid choices as ``chosen_lr`` etc.
- ``layer``: the backbone layer the embedding came from ("last" or an index);
  ``shots``: train clips per class in a few-shot run ("all" for the full train split).
- ``n_train, n_test``: clips the probe fitted on and scored; ``config_hash``: the run's lineage hash, the hash of
  the config sub-trees behind the row's inputs and settings (``acft.plan.lineage``), checked by aggregation.
"""

from __future__ import annotations

import pandas as pd

from .probes import PROBES

RESULT_COLUMNS = {
    "dataset": "string",
    "backbone": "string",
    "method": "string",
    "fold": "int64",
    "tune_seed": "int64",
    "probe": "string",
    "probe_seed": "int64",
    "k": "int64",
    "metric": "string",
    "value": "float64",
    "layer": "string",
    "shots": "string",
    "n_train": "int64",
    "n_test": "int64",
    "config_hash": "string",
}

# the probe column's values: every registered probe's row names, plus the tuning runs' own rows
ROW_PROBES = (*(name for probe in PROBES.values() for name in probe.rows), "head", "tune")


def make_rows(records: list[dict], **common) -> pd.DataFrame:
    """Build a validated tidy frame from per-metric dicts plus columns shared by all of them.

    Missing optional columns get neutral defaults (k=0, probe_seed=0, layer="last", shots="all").
    """
    defaults = {"k": 0, "probe_seed": 0, "layer": "last", "shots": "all", "n_train": 0, "n_test": 0}
    rows = [{**defaults, **common, **record} for record in records]
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    return validate_rows(frame)


def validate_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Check columns, types and probe names; return the frame with canonical dtypes and column order."""
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"result rows lack columns {missing}")
    extra = [c for c in frame.columns if c not in RESULT_COLUMNS]
    if extra:
        raise ValueError(f"result rows have unknown columns {extra}")
    missing_values = frame[list(RESULT_COLUMNS)].drop(columns="value").isna().any()
    if missing_values.any():
        raise ValueError(
            f"result rows have missing values in {missing_values[missing_values].index.tolist()}"
        )
    unknown = sorted(set(frame["probe"]) - set(ROW_PROBES))
    if unknown:
        raise ValueError(f"unknown probe names {unknown}; expected one of {ROW_PROBES}")
    frame = frame[list(RESULT_COLUMNS)].astype(RESULT_COLUMNS)
    return frame.reset_index(drop=True)
