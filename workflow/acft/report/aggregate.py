"""Every probe's tidy rows into one results table (Parquet + CSV), refusing rows made under another config.

Each row carries in its ``config_hash`` column the lineage hash of its run (``acft.plan.lineage``: the config
sub-trees behind it); the workflow passes the hash the current config gives each row file.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import pandas as pd

from ..io import write_csv, write_parquet, write_text
from ..results import RESULT_COLUMNS, validate_rows

log = logging.getLogger(__name__)

# Sort order of the results table; together these columns identify one result (value and counts excluded).
KEY_COLUMNS = [
    "dataset",
    "backbone",
    "method",
    "fold",
    "tune_seed",
    "probe",
    "probe_seed",
    "layer",
    "shots",
    "k",
    "metric",
]


class StaleResultsError(RuntimeError):
    """Row files whose rows carry another lineage hash than the current config gives; ``stale`` lists them."""

    def __init__(self, stale: list[str], message: str):
        super().__init__(message)
        self.stale = stale


def aggregate(
    row_files: list[str],
    out_parquet,
    out_csv,
    *,
    lineage_hashes: dict[str, str] | None = None,
    allow_stale: bool = False,
) -> pd.DataFrame:
    """Concatenate per-job row files into one validated, deterministically sorted results table.

    Args:
        row_files: Parquet files of tidy rows (acft.results); an empty file is fine (a job with no rows).
        out_parquet, out_csv: the results table, both written atomically.
        lineage_hashes: {row file path: its lineage hash under the current config}; every row of the file must
            carry it in ``config_hash``.
        allow_stale: warn about stale files and keep their rows instead of raising.

    Returns:
        the results table (columns RESULT_COLUMNS), sorted by KEY_COLUMNS.

    Raises:
        StaleResultsError: a file's rows carry another hash (listing every such file), unless allow_stale.
        ValueError: a file is invalid, has no expected hash, or two rows describe the same result.
    """
    frames = {str(path): _read_rows(path) for path in row_files}
    if lineage_hashes is not None:
        _check_hashes(frames, lineage_hashes, allow_stale)
    non_empty = [frame for frame in frames.values() if len(frame)]
    if non_empty:
        results = pd.concat(non_empty, ignore_index=True)
    else:
        results = pd.DataFrame({c: pd.Series(dtype=t) for c, t in RESULT_COLUMNS.items()})
    results = validate_rows(results)
    _check_duplicates(results, frames)
    results = results.sort_values(KEY_COLUMNS, kind="mergesort").reset_index(drop=True)
    write_parquet(results, out_parquet)
    write_csv(results, out_csv)
    log.info("aggregated %d rows from %d files", len(results), len(frames))
    return results


def check_fresh(
    row_files: list[str], out_path, *, lineage_hashes: dict[str, str], allow_stale: bool = False
) -> None:
    """Fail if any row file was made under another config; on success write a marker file.

    The workflow names the marker after the hash of the current config, so this check runs after every
    config edit even when ``--rerun-triggers mtime`` skips the jobs (and the aggregation) the edit affects.
    """
    _check_hashes({str(path): _read_rows(path) for path in row_files}, lineage_hashes, allow_stale)
    write_text(out_path, "every result row matches the current config\n")


def _read_rows(path) -> pd.DataFrame:
    if not Path(path).is_file():
        raise FileNotFoundError(f"result row file {path} does not exist")
    if Path(path).stat().st_size == 0:  # a job with nothing to report may leave a zero-byte file
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    frame = pd.read_parquet(path)
    if frame.empty:
        return frame
    try:
        return validate_rows(frame)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def _check_hashes(frames: dict[str, pd.DataFrame], lineage_hashes: dict[str, str], allow_stale: bool) -> None:
    # Paths are compared normalised, so "results/./x" and "results/x" name the same file.
    expected = {os.path.normpath(path): hash_ for path, hash_ in lineage_hashes.items()}
    unknown = [path for path in frames if os.path.normpath(path) not in expected]
    if unknown:
        raise ValueError(f"no expected lineage hash for row files {unknown}")
    stale = {}
    for path, frame in frames.items():
        want = expected[os.path.normpath(path)]
        found = sorted(set(frame["config_hash"]) - {want})
        if found:
            stale[path] = f"{path} (rows carry {', '.join(found)}; current config gives {want})"
    if not stale:
        return
    listing = "\n  ".join(stale.values())
    if not allow_stale:
        message = (
            f"{len(stale)} result file(s) were produced under another config; rerun them "
            f"(or set report.allow_stale to mix them in):\n  {listing}"
        )
        raise StaleResultsError(list(stale), message)
    warnings.warn(f"mixing {len(stale)} stale result file(s) (allow_stale):\n  {listing}", stacklevel=3)
    log.warning("mixing %d stale result file(s):\n  %s", len(stale), listing)


def _check_duplicates(results: pd.DataFrame, frames: dict[str, pd.DataFrame]) -> None:
    """Two rows for one result would silently double-weight it in every mean."""
    duplicated = results.duplicated(KEY_COLUMNS, keep=False)
    if not duplicated.any():
        return
    keys = results.loc[duplicated, KEY_COLUMNS].drop_duplicates().head(5).to_dict("records")
    sources = [path for path, frame in frames.items() if len(frame) and frame.duplicated(KEY_COLUMNS).any()]
    raise ValueError(
        f"{int(duplicated.sum())} rows describe the same result more than once, e.g. {keys}"
        + (
            f"; files with internal duplicates: {sources}"
            if sources
            else "; the duplicates span several files"
        )
    )
