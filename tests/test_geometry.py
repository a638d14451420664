"""Geometry diagnostics on constructed data with known answers."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from acft.probes.geometry import anisotropy, effective_rank, geometry, positive_pair_mask, uniformity

sys.path.insert(0, str(Path(__file__).resolve().parent))
from schema_defaults import probe_settings  # noqa: E402

GEOMETRY = probe_settings("geometry")  # {"max_clips", "seed"}: the schema's defaults


def values(records):
    return {r["metric"]: r["value"] for r in records}


def cross_polytope(n):
    """The 2n points +-e_i in n dims; class i = {e_i, -e_i}. Returns (points, labels)."""
    eye = np.eye(n)
    return np.concatenate([eye, -eye]) * 3.0, np.r_[np.arange(n), np.arange(n)]


def test_cross_polytope_has_known_geometry():
    n = 5
    points, labels = cross_polytope(n)
    got = values(geometry(points, labels, multilabel=False, **GEOMETRY))
    # positives are antipodes: squared distance 4, cosine -1; other pairs are orthogonal: distance^2 2
    assert got["alignment"] == pytest.approx(4.0)
    assert got["intra_class_cosine"] == pytest.approx(-1.0)
    assert got["inter_class_cosine"] == pytest.approx(0.0, abs=1e-12)
    expected_uniformity = math.log((math.exp(-8) + (2 * n - 2) * math.exp(-4)) / (2 * n - 1))
    assert got["uniformity"] == pytest.approx(expected_uniformity)
    assert got["anisotropy"] == pytest.approx(-1 / (2 * n - 1))
    assert got["effective_rank"] == pytest.approx(n)  # covariance is a multiple of the identity
    assert got["n_clips"] == 2 * n
    assert got["silhouette"] == pytest.approx(-0.5)  # own class at cosine distance 2, the rest at 1


def test_two_opposite_tight_classes_have_silhouette_one_and_collapsed_uniformity():
    points = np.r_[np.tile([1.0, 0.0], (4, 1)), np.tile([-2.0, 0.0], (4, 1))]
    labels = np.r_[np.zeros(4), np.ones(4)].astype(int)
    got = values(geometry(points, labels, multilabel=False, **GEOMETRY))
    assert got["silhouette"] == pytest.approx(1.0)
    assert got["alignment"] == pytest.approx(0.0)
    # distinct pairs: 24 at distance 0, 32 at squared distance 4
    assert got["uniformity"] == pytest.approx(math.log((24 + 32 * math.exp(-8)) / 56))
    assert got["effective_rank"] == pytest.approx(1.0)


def test_effective_rank_is_exp_entropy_of_normalised_singular_values():
    # Roy & Vetterli 2007 normalise the singular values themselves, not their squares
    scales = np.array([3.0, 2.0, 1.0, 0.5])
    eye = np.eye(4)
    points = np.concatenate([eye * scales, -eye * scales])  # zero mean, singular values sqrt(2) * scales
    p = scales / np.sum(scales)
    assert effective_rank(points) == pytest.approx(np.exp(-np.sum(p * np.log(p))))
    eigen_p = scales**2 / np.sum(scales**2)
    assert effective_rank(points) > np.exp(-np.sum(eigen_p * np.log(eigen_p))) + 0.3  # not the old value


@pytest.mark.parametrize("dim", [3, 16, 64])
def test_effective_rank_closed_forms(dim):
    rng = np.random.default_rng(dim)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))  # a random rotation changes nothing
    flat = np.concatenate([basis, -basis]) * 2.5  # every singular value equal: erank = D
    assert effective_rank(flat) == pytest.approx(dim)
    direction = basis[0]
    line = np.outer(rng.normal(size=50), direction)  # one non-zero singular value: erank = 1
    assert effective_rank(line) == pytest.approx(1.0)


def test_anisotropy_and_uniformity_match_pairwise_loops():
    rng = np.random.default_rng(0)
    unit = rng.normal(size=(30, 6)) + 1.0
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    pairs = [(i, j) for i in range(30) for j in range(30) if i != j]
    assert anisotropy(unit) == pytest.approx(np.mean([unit[i] @ unit[j] for i, j in pairs]))
    brute = math.log(np.mean([math.exp(-2 * np.sum((unit[i] - unit[j]) ** 2)) for i, j in pairs]))
    assert uniformity(unit) == pytest.approx(brute)


def test_multilabel_positives_share_a_label_and_skip_silhouette():
    hot = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=np.float32)
    expected = np.array(
        [[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]],
        dtype=bool,
    )
    assert (positive_pair_mask(hot, multilabel=True) == expected).all()
    points = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    got = values(geometry(points, hot, multilabel=True, **GEOMETRY))
    assert "silhouette" not in got
    # positive pairs (0,1), (1,2): orthogonal; negatives (0,2) cos -1, (0,3) 0, (1,3) -1, (2,3) 0
    assert got["intra_class_cosine"] == pytest.approx(0.0) and got["alignment"] == pytest.approx(2.0)
    assert got["inter_class_cosine"] == pytest.approx(-0.5)


def test_subsample_is_seeded_and_bounded():
    rng = np.random.default_rng(1)
    points, labels = rng.normal(size=(300, 5)), rng.integers(0, 3, 300)
    first = geometry(points, labels, multilabel=False, max_clips=50, seed=3)
    assert values(first)["n_clips"] == 50
    assert first == geometry(points, labels, multilabel=False, max_clips=50, seed=3)
    assert first != geometry(points, labels, multilabel=False, max_clips=50, seed=4)
