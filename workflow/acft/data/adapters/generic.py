"""Generic importers for user data: one folder per class, or a CSV table of paths and labels.

Where the data names no split, a seeded split stratified by label (or label set) makes one; ``n_folds`` asks
for seeded stratified folds instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .common import (
    AUDIO_EXTENSIONS,
    DatasetLayoutError,
    check_files_exist,
    check_folds,
    dataset_root,
    fraction,
    manifest_frame,
    require,
    stratified_folds,
    stratified_split,
)

log = logging.getLogger(__name__)

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
RESERVED = ("clip_id", "path", "labels", "split", "fold", "duration_s", "sample_rate")
SPLIT_OPTIONS = {
    "val_fraction": "share of each label's clips made val when the data names no split (default 0.1)",
    "test_fraction": "share of each label's clips made test when the data names no split (default 0.2)",
    "n_folds": "0 (default): a fixed train/val/test split; k >= 3: seeded stratified folds 1..k instead",
}
FOLDER_OPTIONS = {
    "root": "directory with one sub-folder per class (nested folders inside a class folder belong to it)",
    "extensions": f"audio file extensions to import (default {list(AUDIO_EXTENSIONS)})",
    **SPLIT_OPTIONS,
}
CSV_OPTIONS = {
    "root": "dataset directory; relative paths in the table are relative to it",
    "csv": "the table (relative to root or absolute)",
    "sep": "field separator of the table (default ',')",
    "path_column": "column holding the audio path (default 'path')",
    "label_column": "column holding the label(s) (default 'labels')",
    "label_delimiter": "separator of the labels in one cell; set it for a multi-label dataset (default none)",
    "id_column": "column of unique clip ids (default: the path as written)",
    "split_column": "column of train/val/test; a role it lacks is carved from train by the seeded split",
    "fold_column": "column of official folds 1..k (instead of split_column)",
    **SPLIT_OPTIONS,
}


def _n_split_folds(options: dict, dataset: str) -> int:
    k = int(options.get("n_folds", 0))
    if k != 0 and k < 3:
        raise ValueError(f"{dataset}: option n_folds={k} must be 0 (fixed split) or at least 3")
    return k


def _stratify_key(labels: list[str]) -> str:
    return "|".join(sorted(labels))


def _seeded_roles(rows: pd.DataFrame, options: dict, seed: int, dataset: str) -> pd.DataFrame:
    """Fill split (or fold, with n_folds) by the seeded stratified split."""
    keys = [_stratify_key(labels) for labels in rows["labels"]]
    k = _n_split_folds(options, dataset)
    if k:
        return rows.assign(split=None, fold=stratified_folds(keys, k, seed).tolist())
    val_fraction = fraction(options, "val_fraction", 0.1, dataset)
    test_fraction = fraction(options, "test_fraction", 0.2, dataset)
    return rows.assign(split=stratified_split(keys, val_fraction, test_fraction, seed).tolist(), fold=None)


# --- folder per class ---------------------------------------------------------------------------------------

FOLDER = "folder importer"


def build_folder(options: dict, work_dir: Path, seed: int) -> pd.DataFrame:
    """Manifest rows from root/<class>/**/<audio>; clip_id is the path relative to root."""
    root = dataset_root(options, FOLDER)
    extensions = tuple(
        e.lower() if e.startswith(".") else f".{e.lower()}"
        for e in options.get("extensions", AUDIO_EXTENSIONS)
    )
    stray = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    if stray:
        raise ValueError(
            f"{FOLDER}: audio files {stray[:5]} lie directly in {root}; put each in its class folder"
        )
    rows, ignored, empty = [], 0, []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        before = len(rows)
        for folder, subfolders, files in os.walk(class_dir):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            for name in sorted(files):
                path = Path(folder) / name
                if name.startswith(".") or path.suffix.lower() not in extensions:
                    ignored += 1
                    continue
                rows.append(
                    {
                        "clip_id": path.relative_to(root).as_posix(),
                        "path": str(path),
                        "labels": [class_dir.name],
                    }
                )
        if len(rows) == before:
            empty.append(class_dir.name)
    if not rows:
        raise DatasetLayoutError(f"{FOLDER}: no {list(extensions)} files in class sub-folders of {root}")
    if ignored:
        log.info("%s: ignored %d non-audio or hidden files under %s", FOLDER, ignored, root)
    if empty:
        log.warning(
            "%s: class folder(s) %s under %s hold no %s file: no class is made of them (see stats.json)",
            FOLDER,
            empty,
            root,
            list(extensions),
        )
    frame = manifest_frame(_seeded_roles(pd.DataFrame(rows), options, seed, FOLDER), FOLDER)
    frame.attrs["empty_class_folders"] = empty  # counted in stats.json by acft.data.manifest.dataset_stats
    return frame


def folder_folds(options: dict) -> int:
    return _n_split_folds(options, FOLDER)


# --- CSV table ----------------------------------------------------------------------------------------------

CSV = "CSV importer"


def _table(options: dict) -> tuple[Path, pd.DataFrame]:
    root = dataset_root(options, CSV)
    if not options.get("csv"):
        raise ValueError(f"{CSV}: option 'csv' (the table of paths and labels) is required")
    csv_path = Path(options["csv"]).expanduser()
    csv_path = require(
        csv_path if csv_path.is_absolute() else root / csv_path, CSV, "table named by option csv"
    )
    table = pd.read_csv(csv_path, sep=options.get("sep", ","), dtype=str, keep_default_na=False)
    for key, default in (("path_column", "path"), ("label_column", "labels"), ("id_column", None),
                         ("split_column", None), ("fold_column", None)):  # fmt: skip
        column = options.get(key, default)
        if column is not None and column not in table.columns:
            raise ValueError(
                f"{CSV}: {csv_path} has no column {column!r} (option {key}); it has {list(table.columns)}"
            )
    if options.get("split_column") and options.get("fold_column"):
        raise ValueError(f"{CSV}: give split_column or fold_column, not both")
    return csv_path, table


def _parse_labels(cell: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return [cell.strip()] if cell.strip() else []
    return [label.strip() for label in cell.split(delimiter) if label.strip()]


def _roles_from_column(
    rows: pd.DataFrame, values: pd.Series, options: dict, seed: int, csv_path: Path
) -> pd.DataFrame:
    """Roles from the split column; a role the table lacks is carved from train (seeded, stratified)."""
    unknown = sorted({v for v in values if v.strip().lower() not in SPLIT_ALIASES})
    if unknown:
        raise ValueError(
            f"{CSV}: {csv_path} split column holds {unknown}; expected one of {sorted(SPLIT_ALIASES)}"
        )
    roles = np.array([SPLIT_ALIASES[v.strip().lower()] for v in values], dtype=object)
    fractions = {
        "test": fraction(options, "test_fraction", 0.2, CSV),
        "val": fraction(options, "val_fraction", 0.1, CSV),
    }
    for role, share in fractions.items():
        if role in roles:
            continue
        train = np.flatnonzero(roles == "train")
        keys = [_stratify_key(rows["labels"].iloc[i]) for i in train]
        carved = stratified_split(
            keys, share if role == "val" else 0.0, share if role == "test" else 0.0, seed
        )
        roles[train] = carved
        log.info(
            "%s: %s names no %s clips; %d of its train clips made %s",
            CSV,
            csv_path,
            role,
            (carved == role).sum(),
            role,
        )
    return rows.assign(split=roles.tolist(), fold=None)


def build_csv(options: dict, work_dir: Path, seed: int) -> pd.DataFrame:
    """Manifest rows from a table of paths and labels; its other columns are kept as source columns."""
    root = dataset_root(options, CSV)
    csv_path, table = _table(options)
    path_column, label_column = options.get("path_column", "path"), options.get("label_column", "labels")
    delimiter = options.get("label_delimiter")
    labels = [_parse_labels(cell, delimiter) for cell in table[label_column]]
    unlabelled = [i + 2 for i, clip in enumerate(labels) if not clip]  # +2: header line, 1-based lines
    if delimiter is None and unlabelled:
        raise ValueError(f"{CSV}: {csv_path} lines {unlabelled[:5]} have an empty {label_column!r} cell")
    paths = [
        str(p if p.is_absolute() else root / p)
        for p in (Path(cell).expanduser() for cell in table[path_column])
    ]
    check_files_exist(paths, CSV)
    used = {path_column, label_column} | {
        options.get(k) for k in ("id_column", "split_column", "fold_column")
    }
    sources = {
        (f"source_{c}" if c in RESERVED else c): table[c].tolist() for c in table.columns if c not in used
    }
    id_column = options.get("id_column")
    rows = pd.DataFrame(
        {
            "clip_id": (table[id_column] if id_column else table[path_column]).tolist(),
            "path": paths,
            "labels": labels,
            **sources,
        }
    )
    if options.get("fold_column"):
        return manifest_frame(
            rows.assign(split=None, fold=_folds(table, options["fold_column"], csv_path)), CSV
        )
    if options.get("split_column"):
        return manifest_frame(
            _roles_from_column(rows, table[options["split_column"]], options, seed, csv_path), CSV
        )
    return manifest_frame(_seeded_roles(rows, options, seed, CSV), CSV)


def _folds(table: pd.DataFrame, column: str, csv_path: Path) -> list[int]:
    try:
        folds = [int(v) for v in table[column]]
    except ValueError as error:
        raise ValueError(
            f"{CSV}: {csv_path} fold column {column!r} must hold integers 1..k ({error})"
        ) from None
    check_folds(folds, max(folds), CSV, csv_path)
    return folds


def csv_task(options: dict) -> str:
    return "multi_label" if options.get("label_delimiter") else "single_label"


def csv_folds(options: dict) -> int:
    """Folds named by fold_column (read from the table), else the n_folds option."""
    if options.get("fold_column"):
        csv_path, table = _table(options)
        return max(_folds(table, options["fold_column"], csv_path))
    return _n_split_folds(options, CSV)
