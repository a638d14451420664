"""kNN probe: the train split is the memory bank, cosine similarity, majority and similarity-weighted votes.

As in DINO's ``eval_knn.py`` (Caron et al. 2021): find every test clip's k nearest train clips, let them vote
(one vote each, or exp(s / tau)), and score the votes. The neighbours come from ``knn_search`` (exact float64
similarities in every search mode; order similarity descending, exactly equal similarities by lower train
index). scikit-learn's brute-force cosine ``KNeighborsClassifier`` (``KNeighborsMixin._kneighbors_reduce_func``:
``np.argpartition`` then a non-stable ``np.argsort``) picks among exactly equal distances in no specified order,
so the two agree whenever no exact tie between different labels straddles the k-th neighbour. Majority-vote
ties go to the smallest class index in both (sklearn votes with ``scipy.stats.mode``, which returns the smallest
tied value).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from .knn_search import Neighbours, nearest_neighbours
from .metrics import multilabel_metrics, single_label_metrics

log = logging.getLogger(__name__)


def _vote_weights(sim: torch.Tensor, temperature: float) -> torch.Tensor:
    """exp(s / tau) per neighbour (Wu et al. 2018; DINO, Caron et al. 2021), scaled per query by
    exp(-max s / tau) so a small tau cannot overflow; votes only compare within a query. [Q, k] -> [Q, k]."""
    return torch.exp((sim - sim.max(dim=1, keepdim=True).values) / temperature)


def predict_single(
    neighbours: Neighbours,
    k: int,
    train_labels: np.ndarray,
    n_classes: int,
    *,
    weighted: bool,
    temperature: float,
) -> np.ndarray:
    """Class of every query by majority or exp(s/tau)-weighted vote of its k neighbours -> int64 [Q].

    Ties go to the smallest class index (``argmax`` returns the first maximum).
    """
    labels = torch.as_tensor(train_labels, dtype=torch.long)[neighbours.index[k]]
    weights = (
        _vote_weights(neighbours.sim[k], temperature)
        if weighted
        else torch.ones(labels.shape, dtype=torch.float64)
    )
    votes = torch.zeros(len(labels), n_classes, dtype=torch.float64)
    return votes.scatter_add_(1, labels, weights).argmax(1).numpy()


def score_multilabel(
    neighbours: Neighbours, k: int, train_multi_hot: np.ndarray, *, weighted: bool, temperature: float
) -> np.ndarray:
    """Per-class score = (weighted) mean of the k neighbours' multi-hot labels -> float64 [Q, C] in [0, 1]."""
    labels = torch.as_tensor(train_multi_hot, dtype=torch.float64)
    index = neighbours.index[k]
    weights = (
        _vote_weights(neighbours.sim[k], temperature)
        if weighted
        else torch.ones(index.shape, dtype=torch.float64)
    )
    scores = torch.zeros(len(index), labels.shape[1], dtype=torch.float64)
    for j in range(k):  # one neighbour rank at a time keeps memory at [Q, C] instead of [Q, k, C]
        scores += weights[:, j : j + 1] * labels[index[:, j]]
    return (scores / weights.sum(dim=1, keepdim=True)).numpy()


PROBES = {"knn_majority": False, "knn_weighted": True}  # probe name -> similarity-weighted vote


def knn_probe(
    train_emb: np.ndarray,
    train_labels: np.ndarray,
    test_emb: np.ndarray,
    test_labels: np.ndarray,
    *,
    multilabel: bool,
    ks: Sequence[int],
    temperature: float,
    chunk_size: int,
    search: str,
    val_emb: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
) -> list[dict]:
    """Majority and weighted kNN probes for every k.

    A k larger than the memory bank is clamped to the bank size; the rows keep the requested k (so tables
    line up across runs) and an ``effective_k`` row records the k used. Multi-label: per-class thresholds for
    macro-F1 are chosen on the val split's kNN scores (queries against the same train bank), see
    ``metrics.multilabel_metrics``.

    Args:
        train_emb: [N, D] memory bank; test_emb: [Q, D]; val_emb: [V, D] (multi-label only; optional).
        train_labels, test_labels, val_labels: int64 [.] class indices, or multi-hot float [., C] if
            ``multilabel``.
        ks: requested neighbour counts. temperature: tau of the exp(s/tau) vote weights.
        chunk_size: similarity block size. search: see ``nearest_neighbours`` (same outputs in every mode).

    Returns:
        records {"probe", "k", "metric", "value"} for ``probe`` in knn_majority, knn_weighted.
    """
    if len(train_emb) == 0:
        raise ValueError("the kNN memory bank (train split) is empty")
    if temperature <= 0:
        raise ValueError(f"kNN temperature must be > 0, got {temperature}")
    effective = {k: min(int(k), len(train_emb)) for k in ks}
    search_ks = sorted(set(effective.values()))
    test_nn = nearest_neighbours(train_emb, test_emb, search_ks, chunk_size=chunk_size, search=search)
    has_val = multilabel and val_emb is not None and len(val_emb) > 0
    val_nn = (
        nearest_neighbours(train_emb, val_emb, search_ks, chunk_size=chunk_size, search=search)
        if has_val
        else None
    )
    n_classes = 0 if multilabel else int(max(np.max(train_labels), np.max(test_labels))) + 1
    records = []
    for k in ks:
        k_used = effective[k]
        for probe, weighted in PROBES.items():
            if multilabel:
                test_scores = score_multilabel(
                    test_nn, k_used, train_labels, weighted=weighted, temperature=temperature
                )
                val_scores = (
                    score_multilabel(val_nn, k_used, train_labels, weighted=weighted, temperature=temperature)
                    if has_val
                    else None
                )
                metrics = multilabel_metrics(
                    val_labels if has_val else None, val_scores, test_labels, test_scores
                )
            else:
                predicted = predict_single(
                    test_nn, k_used, train_labels, n_classes, weighted=weighted, temperature=temperature
                )
                metrics = single_label_metrics(test_labels, predicted)
            metrics["effective_k"] = float(k_used)
            records += [
                {"probe": probe, "k": int(k), "metric": name, "value": v} for name, v in metrics.items()
            ]
    return records


def evaluate(data, emb: np.ndarray, train: np.ndarray, *, k, temperature, chunk_size, search) -> list[dict]:
    """The kNN probe of one embedding column (``acft.probes.run.run_probe``): bank = the ``train`` positions,
    queries = the round's test clips (and val clips, whose scores set multi-label thresholds)."""
    clamped = [n for n in k if n > len(train)]
    if clamped:
        log.warning(
            "%s: probes.knn.k %s exceed the %d train clips (the memory bank); clamped to %d "
            "(rows keep the requested k; metric effective_k holds the k used)",
            data.path,
            clamped,
            len(train),
            len(train),
        )
    test, val = data.positions("test"), data.positions("val")
    return knn_probe(
        emb[train],
        data.targets[train],
        emb[test],
        data.targets[test],
        multilabel=data.multilabel,
        ks=k,
        temperature=temperature,
        chunk_size=chunk_size,
        search=search,
        val_emb=emb[val],
        val_labels=data.targets[val],
    )
