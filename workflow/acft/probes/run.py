"""Probe runners called by the Snakemake scripts: one embedding file -> tidy result rows (written atomically).

Embedding file schema (acft.embed writes it; a file made elsewhere works if it follows it):
``clip_id`` string (unique), ``split`` string (train / val / test; null in k-fold datasets), ``fold`` int
(1..k; null in fixed-split datasets), ``labels`` list<string> (labels from the dataset's ``labels.txt``), and
one or more embedding columns of equal-length float lists (fixed_size_list<float32>[D] preferred):
``embedding`` (layer "last") or ``embedding_L{i}`` (layer i of a layer sweep). A missing ``split`` or
``fold`` column counts as all null. Clip roles come from ``acft.data.splits.roles_for_fold``.

Few-shot curves (``shots``) subsample the train split only, to n clips per class: one seeded permutation of
the train clips, and for each class its first n clips in that order (multi-label: the first n carrying the
class; a clip drawn for one class also counts for its other labels). The same seed gives nested subsets
(1-shot within 5-shot), and the kNN and linear probes see the same subsets when their shot seeds agree.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..data.splits import roles_for_fold
from ..io import write_parquet
from ..labels import encode_multi_hot, encode_single, is_multilabel, read_vocab
from ..results import make_rows
from .geometry import geometry
from .knn import knn_probe
from .linear import linear_probe

log = logging.getLogger(__name__)

# every setting a probe takes, with its default (workflow/schemas/config.schema.yaml documents them)
SETTINGS = {
    "knn": {
        "k": [1, 5, 10, 20, 50],
        "temperature": 0.07,
        "chunk_size": 4096,
        "search": "auto",
        "shots": ["all"],
        "shot_seed": 0,
    },
    "linear": {
        "weight_decay_grid": [0.0, 1.0e-4, 1.0e-3, 1.0e-2],
        "max_iter": 100,
        "probe_seeds": [0],
        "shots": ["all"],
        "shot_seed": 0,
        "device": "auto",
    },
    "geometry": {"max_clips": 2000, "seed": 0},
}
IDENTITY_KEYS = ("dataset", "backbone", "method", "tune_seed")
UNSEEN_METRIC = "test_classes_without_train"  # a row counting them, written only where there are some
EMBEDDING_COLUMN = re.compile(r"embedding(_L(\d+))?")


def check_settings(probe: str, settings: dict | None) -> dict:
    """Defaults overlaid with ``settings``; an unknown key or a bad shots entry raises naming it."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(SETTINGS[probe]))
    if unknown:
        raise ValueError(f"probes.{probe}: unknown setting(s) {unknown}; known: {sorted(SETTINGS[probe])}")
    merged = {**SETTINGS[probe], **settings}
    for shots in merged.get("shots", []):
        if shots != "all" and not (isinstance(shots, int) and shots >= 1):
            raise ValueError(f"probes.{probe}.shots: entry {shots!r} must be 'all' or an integer >= 1")
    if probe == "knn" and any(not isinstance(k, int) or k < 1 for k in merged["k"]):
        raise ValueError(f"probes.knn.k: {merged['k']} must be integers >= 1")
    if probe == "linear" and not merged["probe_seeds"]:
        raise ValueError("probes.linear.probe_seeds must not be empty")
    return merged


def _matrix(table: pa.Table, column: str, path) -> np.ndarray:
    """An equal-length list column -> float32 [N, D]; nulls, ragged rows or non-finite values raise."""
    values = table.column(column).combine_chunks()
    if values.null_count:
        raise ValueError(f"{path}: column '{column}' has {values.null_count} null embeddings")
    if not (pa.types.is_fixed_size_list(values.type) or pa.types.is_list(values.type)):
        raise ValueError(f"{path}: column '{column}' has type {values.type}; expected a list of floats")
    lengths = (
        np.unique(values.value_lengths().to_numpy(zero_copy_only=False)) if len(values) else np.array([0])
    )
    if len(lengths) != 1:
        raise ValueError(f"{path}: column '{column}' mixes embedding lengths {lengths.tolist()}")
    flat = values.flatten().to_numpy(zero_copy_only=False)
    matrix = np.asarray(flat, dtype=np.float32).reshape(len(values), int(lengths[0]))
    if not np.isfinite(matrix).all():
        bad = int((~np.isfinite(matrix)).any(axis=1).sum())
        raise ValueError(f"{path}: column '{column}' has non-finite values in {bad} clips")
    return matrix


def read_embeddings(path: str | Path) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, str]]:
    """Read an embedding Parquet file (schema in the module docstring).

    Returns:
        (rows DataFrame[clip_id, split, fold (float, NaN = null), labels (list[str])],
         {embedding column: float32 [N, D]}, schema metadata as str -> str).
    """
    table = pq.read_table(path)
    names = set(table.column_names)
    missing = sorted({"clip_id", "labels"} - names)
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    if not names & {"split", "fold"}:
        raise ValueError(f"{path}: needs a 'split' or a 'fold' column to assign train / val / test roles")
    n = table.num_rows
    labels = table.column("labels").to_pylist()
    if any(clip_labels is None for clip_labels in labels):
        raise ValueError(f"{path}: {sum(x is None for x in labels)} clips have null labels")
    folds = table.column("fold").to_pylist() if "fold" in names else [None] * n
    rows = pd.DataFrame(
        {
            "clip_id": table.column("clip_id").to_pylist(),
            "split": table.column("split").to_pylist() if "split" in names else [None] * n,
            "fold": np.array([np.nan if f is None else f for f in folds], dtype=np.float64),
            "labels": labels,
        }
    )
    duplicated = rows["clip_id"][rows["clip_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"{path}: duplicate clip_id values, e.g. {duplicated[:5]}")
    # "embedding" first, then the sweep in layer order
    columns = sorted(
        (c for c in names if EMBEDDING_COLUMN.fullmatch(c)),
        key=lambda c: (c != "embedding", int(EMBEDDING_COLUMN.fullmatch(c).group(2) or 0)),
    )
    if not columns:
        raise ValueError(f"{path}: no 'embedding' or 'embedding_L<i>' column (columns: {sorted(names)})")
    metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    return rows, {c: _matrix(table, c, path) for c in columns}, metadata


def layer_of(column: str) -> str:
    """Result-row layer of an embedding column: ``embedding`` -> "last", ``embedding_L3`` -> "3"."""
    match = EMBEDDING_COLUMN.fullmatch(column)
    if match is None:
        raise ValueError(f"'{column}' is not an embedding column name")
    return match.group(2) or "last"


def few_shot_positions(hot: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Sorted positions of a subsample with ``shots`` clips per class (see module docstring).

    Args:
        hot: bool [N, C] class membership (one-hot for single-label).
    """
    order = np.random.default_rng(seed).permutation(len(hot))
    keep = np.zeros(len(hot), dtype=bool)
    for c in range(hot.shape[1]):
        keep[order[hot[order, c]][:shots]] = True
    return np.flatnonzero(keep)


@dataclass
class ProbeData:
    """One embedding file resolved against its vocabulary and evaluation round."""

    path: str
    columns: dict[str, np.ndarray]  # embedding column -> float32 [N, D]
    roles: np.ndarray  # object [N]: train / val / test
    targets: np.ndarray  # int64 [N] or float32 multi-hot [N, C]
    multilabel: bool
    n_classes: int
    unseen_classes: tuple[str, ...] = ()  # test classes without a train clip: no probe can predict them

    def positions(self, role: str) -> np.ndarray:
        return np.flatnonzero(self.roles == role)

    def train_positions(self, shots, seed: int) -> np.ndarray:
        """Train clips, all of them or ``shots`` per class."""
        train = self.positions("train")
        if shots == "all":
            return train
        labels = self.targets[train]
        hot = labels > 0 if self.multilabel else np.eye(self.n_classes, dtype=bool)[labels]
        return train[few_shot_positions(hot, int(shots), seed)]


def load_probe_data(embedding_path, vocab_path, fold: int, val_offset: int) -> ProbeData:
    """Read embeddings and vocabulary, encode labels, assign roles for round ``fold``."""
    rows, columns, _ = read_embeddings(embedding_path)
    vocab = read_vocab(vocab_path)
    unknown = sorted({label for labels in rows["labels"] for label in labels} - set(vocab))
    if unknown:
        raise ValueError(f"{embedding_path}: labels {unknown[:10]} are not in the vocabulary {vocab_path}")
    multilabel = is_multilabel(rows["labels"])
    targets = (encode_multi_hot if multilabel else encode_single)(list(rows["labels"]), vocab)
    roles = roles_for_fold(rows, fold, val_offset)
    for role in ("train", "test"):
        if not np.any(roles == role):
            raise ValueError(f"{embedding_path}: round fold{fold} has no {role} clips")
    unseen = _classes_without_train(targets, roles, vocab, multilabel)
    if unseen:
        log.warning(
            "%s: round fold%d: test class(es) %s have no train clip, so no probe can predict them; "
            "their test clips count as errors (rows: metric %s)",
            embedding_path,
            fold,
            list(unseen),
            UNSEEN_METRIC,
        )
    return ProbeData(str(embedding_path), columns, roles, targets, multilabel, len(vocab), unseen)


def _classes_without_train(targets: np.ndarray, roles: np.ndarray, vocab: list[str], multilabel: bool):
    """Names of the classes that have test clips but no train clip."""
    if multilabel:
        in_test, in_train = targets[roles == "test"].any(axis=0), targets[roles == "train"].any(axis=0)
        missing = np.flatnonzero(in_test & ~in_train)
    else:
        missing = np.setdiff1d(targets[roles == "test"], targets[roles == "train"])
    return tuple(vocab[int(c)] for c in missing)


def _with_unseen_count(records: list[dict], data: ProbeData) -> list[dict]:
    """``records`` plus, when some test class has no train clip, one row counting them per (probe, k)."""
    if not data.unseen_classes:
        return records
    pairs = dict.fromkeys((r["probe"], r.get("k", 0)) for r in records)
    count = float(len(data.unseen_classes))
    return records + [{"probe": p, "k": k, "metric": UNSEEN_METRIC, "value": count} for p, k in pairs]


def _common(identity: dict, fold: int, config_hash: str) -> dict:
    missing = sorted(set(IDENTITY_KEYS) - set(identity))
    extra = sorted(set(identity) - set(IDENTITY_KEYS))
    if missing or extra:
        raise ValueError(
            f"probe identity must have exactly {list(IDENTITY_KEYS)}; missing {missing}, extra {extra}"
        )
    return {**identity, "fold": int(fold), "config_hash": config_hash}


def _finish(frames: list[pd.DataFrame], out_path) -> pd.DataFrame:
    rows = pd.concat(frames, ignore_index=True)
    write_parquet(rows, out_path)
    return rows


def run_knn(
    embedding_path,
    vocab_path,
    out_path,
    *,
    fold: int,
    identity: dict,
    settings: dict,
    val_offset: int = 1,
    config_hash: str = "",
) -> pd.DataFrame:
    """kNN probe rows for every embedding column and shot count; see ``knn.knn_probe``."""
    cfg = check_settings("knn", settings)
    common = _common(identity, fold, config_hash)
    data = load_probe_data(embedding_path, vocab_path, fold, val_offset)
    test, val = data.positions("test"), data.positions("val")
    frames = []
    for column, emb in data.columns.items():
        for shots in cfg["shots"]:
            train = data.train_positions(shots, cfg["shot_seed"])
            clamped = [k for k in cfg["k"] if k > len(train)]
            if clamped:
                log.warning(
                    "%s %s shots=%s: probes.knn.k %s exceed the %d train clips (the memory bank); "
                    "clamped to %d (rows keep the requested k; metric effective_k holds the k used)",
                    data.path,
                    column,
                    shots,
                    clamped,
                    len(train),
                    len(train),
                )
            records = knn_probe(
                emb[train],
                data.targets[train],
                emb[test],
                data.targets[test],
                multilabel=data.multilabel,
                ks=cfg["k"],
                temperature=cfg["temperature"],
                chunk_size=cfg["chunk_size"],
                search=cfg["search"],
                val_emb=emb[val],
                val_labels=data.targets[val],
            )
            frames.append(
                make_rows(
                    _with_unseen_count(records, data),
                    **common,
                    layer=layer_of(column),
                    shots=str(shots),
                    n_train=len(train),
                    n_test=len(test),
                )
            )
    return _finish(frames, out_path)


def run_linear(
    embedding_path,
    vocab_path,
    out_path,
    *,
    fold: int,
    identity: dict,
    settings: dict,
    val_offset: int = 1,
    config_hash: str = "",
) -> pd.DataFrame:
    """Linear probe rows for every embedding column, shot count and probe seed; see ``linear.linear_probe``."""
    cfg = check_settings("linear", settings)
    common = _common(identity, fold, config_hash)
    data = load_probe_data(embedding_path, vocab_path, fold, val_offset)
    test, val = data.positions("test"), data.positions("val")
    frames = []
    for column, emb in data.columns.items():
        for shots in cfg["shots"]:
            train = data.train_positions(shots, cfg["shot_seed"])
            for seed in cfg["probe_seeds"]:
                records = linear_probe(
                    emb[train],
                    data.targets[train],
                    emb[val],
                    data.targets[val],
                    emb[test],
                    data.targets[test],
                    multilabel=data.multilabel,
                    n_classes=data.n_classes,
                    weight_decay_grid=cfg["weight_decay_grid"],
                    max_iter=cfg["max_iter"],
                    seed=seed,
                    device=cfg["device"],
                )
                frames.append(
                    make_rows(
                        _with_unseen_count(records, data),
                        **common,
                        layer=layer_of(column),
                        shots=str(shots),
                        n_train=len(train),
                        n_test=len(test),
                    )
                )
    return _finish(frames, out_path)


def run_geometry(
    embedding_path,
    vocab_path,
    out_path,
    *,
    fold: int,
    identity: dict,
    settings: dict,
    val_offset: int = 1,
    config_hash: str = "",
) -> pd.DataFrame:
    """Geometry rows of the round's test clips for every embedding column; see ``geometry.geometry``."""
    cfg = check_settings("geometry", settings)
    common = _common(identity, fold, config_hash)
    data = load_probe_data(embedding_path, vocab_path, fold, val_offset)
    test = data.positions("test")
    frames = []
    for column, emb in data.columns.items():
        records = geometry(
            emb[test],
            data.targets[test],
            multilabel=data.multilabel,
            max_clips=cfg["max_clips"],
            seed=cfg["seed"],
        )
        n_used = min(len(test), cfg["max_clips"])
        frames.append(make_rows(records, **common, layer=layer_of(column), n_train=0, n_test=n_used))
    return _finish(frames, out_path)
