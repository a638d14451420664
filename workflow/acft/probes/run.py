"""Probe runners called by the Snakemake scripts: one embedding file -> tidy result rows (written atomically).

The embedding file follows ``acft.embeddings`` (a file made elsewhere works if it follows that schema); each
embedding column gives its own rows (``layer``). Clip roles come from ``acft.data.splits.roles_for_fold``.

Few-shot curves (``shots``) subsample the train split only, to n clips per class: one seeded permutation of
the train clips, and for each class its first n clips in that order (multi-label: the first n carrying the
class; a clip drawn for one class also counts for its other labels). The same seed gives nested subsets
(1-shot within 5-shot), and the kNN and linear probes see the same subsets when their shot seeds agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.splits import roles_for_fold
from ..embeddings import layer_of, read_embeddings
from ..identity import Run
from ..io import write_parquet
from ..labels import encode_multi_hot, encode_single, is_multilabel, read_vocab
from ..results import make_rows
from .geometry import geometry
from .knn import knn_probe
from .linear import linear_probe

log = logging.getLogger(__name__)

# the keys of each probe's config section (their defaults and checks: workflow/schemas/config.schema.yaml)
SETTINGS = {
    "knn": ("k", "temperature", "chunk_size", "search", "shots", "shot_seed"),
    "linear": ("weight_decay_grid", "max_iter", "probe_seeds", "shots", "shot_seed", "device"),
    "geometry": ("max_clips", "seed"),
}
UNSEEN_METRIC = "test_classes_without_train"  # a row counting them, written only where there are some


def check_settings(probe: str, settings: dict) -> dict:
    """``settings``, the ``probes.<probe>`` section as the schema filled and checked it; a missing key raises."""
    missing = [key for key in SETTINGS[probe] if key not in settings]
    if missing:
        raise ValueError(f"probes.{probe}: settings lack {missing} (the config schema fills them)")
    return settings


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


def _common(run: Run, lineage_hash: str) -> dict:
    """The columns every row of ``run`` shares; ``config_hash`` holds its lineage hash (``acft.plan.lineage``)."""
    return {
        "dataset": run.dataset,
        "backbone": run.backbone,
        "method": run.method,
        "fold": run.fold,
        "tune_seed": run.seed,
        "config_hash": lineage_hash,
    }


def _finish(frames: list[pd.DataFrame], out_path) -> pd.DataFrame:
    rows = pd.concat(frames, ignore_index=True)
    write_parquet(rows, out_path)
    return rows


def run_knn(
    embedding_path,
    vocab_path,
    out_path,
    *,
    run: Run,
    settings: dict,
    val_offset: int = 1,
    lineage_hash: str = "",
) -> pd.DataFrame:
    """kNN probe rows for every embedding column and shot count; see ``knn.knn_probe``."""
    cfg = check_settings("knn", settings)
    common = _common(run, lineage_hash)
    data = load_probe_data(embedding_path, vocab_path, run.fold, val_offset)
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
    run: Run,
    settings: dict,
    val_offset: int = 1,
    lineage_hash: str = "",
) -> pd.DataFrame:
    """Linear probe rows for every embedding column, shot count and probe seed; see ``linear.linear_probe``."""
    cfg = check_settings("linear", settings)
    common = _common(run, lineage_hash)
    data = load_probe_data(embedding_path, vocab_path, run.fold, val_offset)
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
    run: Run,
    settings: dict,
    val_offset: int = 1,
    lineage_hash: str = "",
) -> pd.DataFrame:
    """Geometry rows of the round's test clips for every embedding column; see ``geometry.geometry``."""
    cfg = check_settings("geometry", settings)
    common = _common(run, lineage_hash)
    data = load_probe_data(embedding_path, vocab_path, run.fold, val_offset)
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


# probe name (the rule's {probe} wildcard, a key of config ``probes``) -> its runner
RUNNERS = {"knn": run_knn, "linear": run_linear, "geometry": run_geometry}
