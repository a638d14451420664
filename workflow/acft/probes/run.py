"""Probe runners called by the Snakemake scripts: one embedding file -> tidy result rows (written atomically).

The embedding file follows ``acft.embeddings`` (a file made elsewhere works if it follows that schema); each
embedding column gives its own rows (``layer``). Clip roles come from ``acft.data.splits.roles_for_fold``.

Few-shot curves (``shots``) subsample the train split only, to n clips per class: one seeded permutation of
the train clips, and for each class its first n clips in that order (multi-label: the first n carrying the
class; a clip drawn for one class also counts for its other labels). The same seed gives nested subsets
(1-shot within 5-shot), and the kNN and linear probes see the same subsets when their shot seeds agree.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from importlib import import_module

import numpy as np
import pandas as pd

from ..data.splits import roles_for_fold
from ..embeddings import layer_of, read_embeddings
from ..identity import Run
from ..io import write_parquet
from ..labels import encode_multi_hot, encode_single, is_multilabel, read_vocab
from ..results import make_rows
from . import PROBES

log = logging.getLogger(__name__)

UNSEEN_METRIC = "test_classes_without_train"  # a row counting them, written only where there are some


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


def _checked_settings(probe: str, evaluate, settings: dict) -> dict:
    """``settings`` (the ``probes.<probe>`` section as the schema filled and checked it) less the few-shot keys,
    which the runner uses; a key ``evaluate`` lacks or takes but is not given raises, naming it."""
    options = {k: v for k, v in settings.items() if k not in ("shots", "shot_seed")}
    params = inspect.signature(evaluate).parameters
    named = {name for name, param in params.items() if param.kind is param.KEYWORD_ONLY}
    missing = sorted(name for name in named - set(options) if params[name].default is inspect.Parameter.empty)
    unknown = sorted(set(options) - named)
    if missing or unknown:
        problems = [f"lack {missing}"] * bool(missing) + [f"have unknown keys {unknown}"] * bool(unknown)
        raise ValueError(f"probes.{probe}: settings {' and '.join(problems)} (the config schema fills them)")
    return options


def run_probe(
    probe: str,
    embedding_path,
    vocab_path,
    out_path,
    *,
    run: Run,
    settings: dict,
    val_offset: int = 1,
    lineage_hash: str = "",
) -> pd.DataFrame:
    """Rows of ``probe`` (a key of ``acft.probes.PROBES``) for every embedding column and shot count.

    The probe's ``evaluate(data, emb, train, **settings)`` scores one embedding column ``emb`` [N, D] of
    ``data`` (a ``ProbeData``) with the train clips at positions ``train`` and returns records
    ``{"probe", "metric", "value", ...}`` (a record may set any row column, e.g. ``k`` or ``n_test``).
    """
    evaluate = import_module(f"{__package__}.{PROBES[probe].module}").evaluate
    options = _checked_settings(probe, evaluate, settings)
    common = _common(run, lineage_hash)
    data = load_probe_data(embedding_path, vocab_path, run.fold, val_offset)
    n_test = len(data.positions("test"))
    frames = []
    for column, emb in data.columns.items():
        for shots in settings.get("shots", ["all"]):
            train = data.train_positions(shots, settings.get("shot_seed", 0))
            log.info("%s %s %s shots=%s: %d train clips", probe, data.path, column, shots, len(train))
            records = evaluate(data, emb, train, **options)
            frames.append(
                make_rows(
                    _with_unseen_count(records, data),
                    **common,
                    layer=layer_of(column),
                    shots=str(shots),
                    n_train=len(train),
                    n_test=n_test,
                )
            )
    rows = pd.concat(frames, ignore_index=True)
    write_parquet(rows, out_path)
    return rows
