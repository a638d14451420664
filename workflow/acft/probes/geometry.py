"""Embedding-space diagnostics on the unit sphere (every embedding is L2-normalised first).

Computed on one seeded subsample of at most ``max_clips`` clips (the pairwise terms are O(N^2)). Positive
pairs are distinct clips of the same class (multi-label: sharing at least one label); negatives share none.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import silhouette_score


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def positive_pair_mask(labels: np.ndarray, multilabel: bool) -> np.ndarray:
    """bool [N, N]: distinct clips sharing a class (multi-label: at least one label)."""
    if multilabel:
        hot = np.asarray(labels) > 0
        same = (hot.astype(np.float64) @ hot.T.astype(np.float64)) > 0
    else:
        same = np.asarray(labels)[:, None] == np.asarray(labels)[None, :]
    np.fill_diagonal(same, False)
    return same


def alignment(unit: np.ndarray, positives: np.ndarray) -> float:
    """Mean squared distance between positive pairs, E ||f(x) - f(y)||^2 (Wang & Isola 2020, alpha = 2)."""
    if not positives.any():
        return float("nan")
    sq_dist = np.maximum(2.0 - 2.0 * (unit @ unit.T), 0.0)
    return float(sq_dist[positives].mean())


def uniformity(unit: np.ndarray, t: float = 2.0) -> float:
    """log E_{x != y} exp(-t ||f(x) - f(y)||^2) over distinct pairs (Wang & Isola 2020), via logsumexp."""
    n = len(unit)
    if n < 2:
        return float("nan")
    sq_dist = np.maximum(2.0 - 2.0 * (unit @ unit.T), 0.0)
    exponents = -t * sq_dist[~np.eye(n, dtype=bool)]
    peak = exponents.max()
    return float(peak + math.log(np.mean(np.exp(exponents - peak))))


def effective_rank(x: np.ndarray) -> float:
    """Effective rank of Roy & Vetterli (2007): exp of the Shannon entropy of the normalised singular values.

    Of the centred [N, D] matrix: p_k = sigma_k / sum_j sigma_j, erank = exp(-sum_k p_k log p_k), between 1
    (one non-zero singular value) and min(N, D) (a flat spectrum). The singular values themselves, not their
    squares (the covariance eigenvalues), which would give a smaller number for any non-flat spectrum.
    """
    centred = x - x.mean(axis=0)
    singular_values = np.linalg.svd(centred, compute_uv=False)
    if singular_values.sum() == 0:
        return float("nan")
    p = singular_values / singular_values.sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def anisotropy(unit: np.ndarray) -> float:
    """Mean cosine between two different clips (Ethayarajh 2019), exact over all pairs:
    sum_{i != j} u_i . u_j = ||sum u||^2 - sum ||u_i||^2."""
    n = len(unit)
    if n < 2:
        return float("nan")
    total = unit.sum(axis=0)
    return float((total @ total - np.sum(unit * unit)) / (n * (n - 1)))


def class_cosines(unit: np.ndarray, positives: np.ndarray) -> tuple[float, float]:
    """(mean cosine over positive pairs, mean cosine over pairs sharing no label)."""
    cos = unit @ unit.T
    negatives = ~positives
    np.fill_diagonal(negatives, False)
    intra = float(cos[positives].mean()) if positives.any() else float("nan")
    inter = float(cos[negatives].mean()) if negatives.any() else float("nan")
    return intra, inter


def geometry(
    emb: np.ndarray, labels: np.ndarray, *, multilabel: bool, max_clips: int, seed: int
) -> list[dict]:
    """Alignment, uniformity, intra/inter-class cosine, silhouette, effective rank and anisotropy.

    Args:
        emb: [N, D] embeddings (typically the test clips of one round).
        labels: int64 [N] class indices, or multi-hot [N, C] if ``multilabel``.
        max_clips: subsample size (seeded) when N is larger.

    Returns:
        records {"probe": "geometry", "metric", "value"}; a value that is undefined on this data (e.g. the
        silhouette with a single class) is NaN rather than missing. ``n_clips`` records the subsample size.
        The silhouette (cosine distance, sklearn) is single-label only.
    """
    emb = np.asarray(emb, dtype=np.float64)
    labels = np.asarray(labels)
    if len(emb) > max_clips:
        keep = np.sort(np.random.default_rng(seed).choice(len(emb), size=max_clips, replace=False))
        emb, labels = emb[keep], labels[keep]
    unit = _unit(emb)
    positives = positive_pair_mask(labels, multilabel)
    intra, inter = class_cosines(unit, positives)
    metrics = {
        "alignment": alignment(unit, positives),
        "uniformity": uniformity(unit),
        "intra_class_cosine": intra,
        "inter_class_cosine": inter,
        "effective_rank": effective_rank(unit),
        "anisotropy": anisotropy(unit),
        "n_clips": float(len(unit)),
    }
    if not multilabel:
        n_labels = len(np.unique(labels))
        # sklearn defines the silhouette only for 2 <= classes <= N - 1
        metrics["silhouette"] = (
            float(silhouette_score(emb, labels, metric="cosine"))
            if 2 <= n_labels < len(labels)
            else float("nan")
        )
    return [{"probe": "geometry", "metric": name, "value": value} for name, value in metrics.items()]


def evaluate(data, emb: np.ndarray, train: np.ndarray, *, max_clips, seed) -> list[dict]:
    """Geometry of one embedding column over the round's test clips (``acft.probes.run.run_probe``); the
    train clips are not used, so its rows say n_train 0."""
    test = data.positions("test")
    records = geometry(
        emb[test], data.targets[test], multilabel=data.multilabel, max_clips=max_clips, seed=seed
    )
    n_used = min(len(test), max_clips)
    return [{**record, "n_train": 0, "n_test": n_used} for record in records]
