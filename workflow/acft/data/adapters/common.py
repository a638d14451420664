"""Helpers every adapter shares: layout checks with clear errors, option reading, seeded stratified splits."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".au")
MANIFEST_KEYS = ("clip_id", "path", "labels", "split", "fold")
SHOWN_MISSING = 5  # how many missing files an error lists by name


class DatasetLayoutError(FileNotFoundError):
    """A dataset directory lacks a file or folder its official layout has."""


def dataset_root(options: dict, dataset: str) -> Path:
    """The absolute dataset directory named by option ``root``; it must exist."""
    if not options.get("root"):
        raise ValueError(f"{dataset}: option 'root' (the dataset directory) is required")
    root = Path(options["root"]).expanduser().absolute()
    if not root.is_dir():
        raise DatasetLayoutError(f"{dataset}: dataset directory {root} (option 'root') does not exist")
    return root


def require(path: Path, dataset: str, what: str, *, is_dir: bool = False) -> Path:
    """Return ``path`` if it exists as a file (or directory); else say what was expected where."""
    present = path.is_dir() if is_dir else path.is_file()
    if not present:
        kind = "directory" if is_dir else "file"
        raise DatasetLayoutError(
            f"{dataset}: expected the {what} ({kind}) at {path}; the dataset is missing or incomplete"
        )
    return path


def read_table(
    path: Path, dataset: str, what: str, columns: Sequence[str], **read_csv_kwargs
) -> pd.DataFrame:
    """Read a metadata CSV and check it has ``columns``."""
    table = pd.read_csv(require(path, dataset, what), **read_csv_kwargs)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{dataset}: {path} lacks columns {missing}; it has {list(table.columns)}")
    return table


def check_files_exist(paths: Iterable[str], dataset: str) -> None:
    """Every listed audio file must exist; the error counts the missing ones and names the first few.

    A path that exists but is no regular file (a FIFO, a directory) passes here: the manifest step names it.
    """
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        shown = ", ".join(missing[:SHOWN_MISSING])
        raise DatasetLayoutError(
            f"{dataset}: {len(missing)} audio file(s) listed in the metadata are missing, e.g. {shown}; "
            "the dataset is incomplete"
        )


def choice(options: dict, key: str, allowed: Sequence[str], dataset: str) -> str:
    """Option ``key`` (default: the first allowed value), checked against ``allowed``."""
    value = options.get(key, allowed[0])
    if value not in allowed:
        raise ValueError(f"{dataset}: option {key}={value!r} is not one of {list(allowed)}")
    return value


def fraction(options: dict, key: str, default: float, dataset: str) -> float:
    value = float(options.get(key, default))
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{dataset}: option {key}={value} must be in [0, 1)")
    return value


def audio_files(directory: Path, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """Audio files directly inside ``directory``, sorted by name (hidden files and directories excluded).

    Other entries with an audio name (a FIFO, a broken link) are listed too, so that the manifest step names
    them (an error, or a counted skip) instead of dropping them silently.
    """
    return sorted(
        Path(entry.path)
        for entry in os.scandir(directory)
        if not entry.is_dir()
        and not entry.name.startswith(".")
        and Path(entry.name).suffix.lower() in extensions
    )


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _groups(keys: Sequence[str]) -> dict[str, list[int]]:
    members = defaultdict(list)
    for i, key in enumerate(keys):
        members[key].append(i)
    return dict(sorted(members.items()))


def stratified_split(keys: Sequence[str], val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Seeded train/val/test roles, stratified by ``keys`` (a class label or label-set string per clip).

    Within each group of n clips, round(n * test_fraction) go to test and round(n * val_fraction) to val
    (at least one clip stays in train); which ones is drawn with ``seed``.

    Returns:
        object array [N] of "train" / "val" / "test".
    """
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no training clips"
        )
    rng = np.random.default_rng(seed)
    roles = np.full(len(keys), "train", dtype=object)
    for members in _groups(keys).values():
        order = rng.permutation(members)
        n_test = min(_round_half_up(len(order) * test_fraction), len(order) - 1)
        n_val = min(_round_half_up(len(order) * val_fraction), len(order) - 1 - n_test)
        roles[order[:n_test]] = "test"
        roles[order[n_test : n_test + n_val]] = "val"
    return roles


def stratified_folds(keys: Sequence[str], n_folds: int, seed: int) -> np.ndarray:
    """Seeded fold numbers 1..n_folds, stratified by ``keys``.

    The clips of each group, shuffled, are dealt round-robin into the folds, continuing where the previous
    group stopped, so every group's fold counts (and the fold sizes) differ by at most one.

    Returns:
        int64 array [N] of fold numbers.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds={n_folds} must be at least 2")
    rng = np.random.default_rng(seed)
    dealt = np.concatenate([rng.permutation(members) for members in _groups(keys).values()])
    folds = np.empty(len(keys), dtype=np.int64)
    folds[dealt] = np.arange(len(dealt)) % n_folds + 1
    return folds


def manifest_frame(rows: pd.DataFrame | list[dict], dataset: str) -> pd.DataFrame:
    """Order the manifest columns (clip_id, path, labels, split, fold, then source columns) and check ids."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise ValueError(f"{dataset}: the dataset holds no clips")
    missing = [c for c in MANIFEST_KEYS if c not in frame.columns]
    if missing:
        raise ValueError(f"{dataset}: adapter rows lack columns {missing}")
    duplicated = frame["clip_id"][frame["clip_id"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{dataset}: clip ids are not unique, e.g. {duplicated[:SHOWN_MISSING]}")
    frame["split"] = frame["split"].astype(object).where(frame["split"].notna(), None)
    frame["fold"] = [None if pd.isna(f) else int(f) for f in frame["fold"]]
    frame["fold"] = frame["fold"].astype(object)
    ordered = list(MANIFEST_KEYS) + [c for c in frame.columns if c not in MANIFEST_KEYS]
    return frame[ordered].reset_index(drop=True)


def check_folds(folds: Sequence[int], n_folds: int, dataset: str, source: Path) -> None:
    """Official fold numbers must all lie in 1..n_folds and every fold must be present."""
    present = set(int(f) for f in folds)
    unexpected = sorted(present - set(range(1, n_folds + 1)))
    absent = sorted(set(range(1, n_folds + 1)) - present)
    if unexpected or absent:
        raise ValueError(
            f"{dataset}: {source} should hold folds 1..{n_folds}; unexpected {unexpected}, absent {absent}"
        )
