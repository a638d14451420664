"""The canonical manifest: one Parquet table per dataset, written by every adapter through this module.

Columns: ``clip_id`` (unique string), ``path``, ``labels`` (list<string>), ``split`` (train / val / test, or null
for k-fold datasets), ``fold`` (1..k, or null), ``duration_s``, ``sample_rate``, plus the adapter's source columns.
Beside it: ``labels.txt`` (the label vocabulary, one per line, in class-index order), ``stats.json`` and
``skipped.csv``. Every file is decoded once here, so the manifest lists only usable clips: bad audio (unreadable,
empty, non-finite) stops the run naming the file, or with ``on_bad_audio: skip`` is listed in ``skipped.csv``
and counted in the stats. Nothing is dropped silently.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
from tqdm import tqdm

from ..io import atomic_path, write_csv, write_json, write_text
from ..labels import build_vocab, is_multilabel
from .splits import ROLES

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("clip_id", "path", "labels", "split", "fold", "duration_s", "sample_rate")
SKIPPED_COLUMNS = ("clip_id", "path", "reason")
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


class BadAudioError(RuntimeError):
    """A clip that cannot be used, named by its file."""


# what a path that is not a regular file is, for the error message
FILE_KINDS = {
    stat.S_ISDIR: "a directory",
    stat.S_ISFIFO: "a FIFO (named pipe)",
    stat.S_ISSOCK: "a socket",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
}


def inspect_audio(path: str) -> tuple[float, int]:
    """Decode ``path`` fully and return (duration_s, sample_rate); raise BadAudioError if it is unusable.

    Only regular files (or links to one) are opened: reading a FIFO or a device can block forever.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise BadAudioError(f"{path}: unreadable audio ({error})") from error
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in FILE_KINDS.items() if test(mode)), "an unknown kind of file")
        raise BadAudioError(f"{path}: not a regular file but {kind}; it is not opened")
    try:
        samples, sample_rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for unreadable or truncated files
        raise BadAudioError(f"{path}: unreadable audio ({error})") from error
    if samples.shape[0] == 0:
        raise BadAudioError(f"{path}: zero-length audio")
    if not np.isfinite(samples).all():
        raise BadAudioError(f"{path}: audio holds NaN or infinite samples")
    return samples.shape[0] / sample_rate, int(sample_rate)


def validate_manifest(manifest: pd.DataFrame) -> None:
    """Check the contract; errors say which column or clip is wrong."""
    missing = [c for c in ("clip_id", "path", "labels", "split", "fold") if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")
    duplicated = manifest["clip_id"][manifest["clip_id"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"manifest clip_id values are not unique: {duplicated[:5]}")
    has_split, has_fold = manifest["split"].notna(), manifest["fold"].notna()
    if (has_split & has_fold).any() or (~has_split & ~has_fold).any():
        raise ValueError(
            "every clip needs exactly one of split (fixed-split dataset) or fold (k-fold dataset)"
        )
    if has_split.any() and has_fold.any():
        raise ValueError("a dataset is either fixed-split or k-fold, not a mix of both")
    bad_roles = sorted(set(manifest.loc[has_split, "split"]) - set(ROLES))
    if bad_roles:
        raise ValueError(f"split values {bad_roles} are not among {list(ROLES)}")
    if has_fold.any() and manifest["fold"].min() < 1:
        raise ValueError("folds are numbered from 1")
    for labels in manifest["labels"]:
        if not isinstance(labels, (list, tuple, np.ndarray)) or any(not isinstance(x, str) for x in labels):
            raise ValueError(f"labels must be lists of strings, got {labels!r}")


def dataset_stats(manifest: pd.DataFrame, n_skipped: int) -> dict:
    """Counts for stats.json; ``empty_class_folders`` lists the folders an adapter found without audio
    (passed in ``manifest.attrs``, e.g. by the folder importer), since they make no class of the vocabulary."""
    durations = manifest["duration_s"].to_numpy()
    class_counts = pd.Series([label for labels in manifest["labels"] for label in labels]).value_counts()
    split_counts = manifest["split"].fillna("").astype(str) + manifest["fold"].map(
        lambda f: "" if pd.isna(f) else f"fold{int(f)}"
    )
    return {
        "clips": int(len(manifest)),
        "skipped": int(n_skipped),
        "classes": int(len(class_counts)),
        "multilabel": bool(is_multilabel(manifest["labels"])),
        "duration_s_quantiles": {str(q): round(float(np.quantile(durations, q)), 4) for q in QUANTILES}
        if len(durations)
        else {},
        "total_duration_s": round(float(durations.sum()), 3),
        "class_counts": {str(k): int(v) for k, v in sorted(class_counts.items())},
        "split_counts": {str(k): int(v) for k, v in sorted(split_counts.value_counts().items())},
        "empty_class_folders": sorted(manifest.attrs.get("empty_class_folders", [])),
    }


def build_manifest(
    dataset: str, dataset_cfg: dict, out_dir: str | Path, *, on_bad_audio: str = "error", seed: int = 0
) -> pd.DataFrame:
    """Run the dataset's adapter, decode every clip once, and write manifest, vocabulary, stats and skips.

    Args:
        dataset: dataset name (for messages).
        dataset_cfg: ``{"adapter": name, "options": {...}}`` from the config.
        out_dir: ``results/data/{dataset}``; adapters that render audio write under ``out_dir/source``.
        on_bad_audio: "error" stops at the first bad file; "skip" lists it in skipped.csv.
        seed: seed for adapters that render or split.
    """
    from .adapters import check_options, get_adapter
    from .download import ensure_downloaded

    if on_bad_audio not in ("error", "skip"):
        raise ValueError(f"on_bad_audio must be 'error' or 'skip', got {on_bad_audio!r}")
    out_dir = Path(out_dir)
    options = dataset_cfg.get("options", {})
    check_options(dataset_cfg["adapter"], options)
    adapter = get_adapter(dataset_cfg["adapter"])
    ensure_downloaded(dataset_cfg["adapter"], options)  # only with options.download: true
    rows = adapter.build(options, out_dir / "source", seed)
    validate_manifest(rows)

    durations, rates, skipped = [], [], []
    keep = np.ones(len(rows), dtype=bool)
    for i, (clip_id, path) in enumerate(
        tqdm(
            zip(rows["clip_id"], rows["path"], strict=True),
            total=len(rows),
            desc=f"{dataset}: checking audio",
            disable=None,
        )
    ):
        try:
            duration, rate = inspect_audio(path)
        except BadAudioError as error:
            if on_bad_audio == "error":
                raise BadAudioError(
                    f"{error} (set preprocess.on_bad_audio: skip to list and skip it)"
                ) from None
            log.warning("skipping %s", error)
            skipped.append({"clip_id": clip_id, "path": path, "reason": str(error)})
            keep[i] = False
            duration, rate = float("nan"), 0
        durations.append(duration)
        rates.append(rate)
    rows = rows.assign(duration_s=durations, sample_rate=rates)[keep].reset_index(drop=True)
    if rows.empty:
        raise BadAudioError(f"dataset '{dataset}': no usable clip left ({len(skipped)} skipped)")

    ordered = list(MANIFEST_COLUMNS) + [c for c in rows.columns if c not in MANIFEST_COLUMNS]
    rows = rows[ordered]
    rows["fold"] = rows["fold"].astype("Int64")
    rows["split"] = rows["split"].astype("string")
    schema_labels = pa.list_(pa.string())
    table = pa.Table.from_pandas(rows, preserve_index=False)
    table = table.set_column(
        table.schema.get_field_index("labels"), "labels", table.column("labels").cast(schema_labels)
    )

    write_text(out_dir / "labels.txt", "\n".join(build_vocab(rows["labels"])) + "\n")
    write_json(out_dir / "stats.json", dataset_stats(rows, len(skipped)))
    write_csv(pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS)), out_dir / "skipped.csv")
    with atomic_path(out_dir / "manifest.parquet", suffix=".parquet.tmp") as tmp:
        pq.write_table(table, tmp)
    log.info("%s: %d clips, %d skipped", dataset, len(rows), len(skipped))
    return rows


def read_manifest(path: str | Path) -> pd.DataFrame:
    manifest = pd.read_parquet(path)
    manifest["labels"] = manifest["labels"].map(list)
    return manifest
