"""Linear probe: Bayes accuracy on Gaussian blobs, scikit-learn's optimum, grid choice on val."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score

from acft.probes import linear
from acft.probes.linear import _scores, fit_linear, linear_probe, standardise

sys.path.insert(0, str(Path(__file__).resolve().parent))
from schema_defaults import linear_probe_args  # noqa: E402

torch.set_num_threads(1)
CPU = torch.device("cpu")


def two_gaussians(n, distance, dim, rng):
    """Isotropic unit Gaussians whose means are ``distance`` apart: Bayes accuracy Phi(distance / 2)."""
    labels = rng.integers(0, 2, n)
    points = rng.normal(size=(n, dim))
    points[:, 0] += np.where(labels == 1, distance / 2, -distance / 2)
    return points.astype(np.float32), labels


def values(records):
    return {r["metric"]: r["value"] for r in records}


def test_reaches_bayes_accuracy_of_two_gaussians():
    rng = np.random.default_rng(0)
    distance = 2.0
    splits = [two_gaussians(n, distance, 8, rng) for n in (3000, 500, 6000)]
    records = linear_probe(
        *splits[0], *splits[1], *splits[2], multilabel=False, **linear_probe_args(max_iter=50, device="cpu")
    )
    bayes = norm.cdf(distance / 2)  # 0.841; the test-set estimate has sd 0.005
    assert values(records)["accuracy"] == pytest.approx(bayes, abs=0.02)
    assert {r["probe"] for r in records} == {"linear"}


def test_weight_decay_maps_to_sklearn_C_and_reaches_the_same_optimum(monkeypatch):
    monkeypatch.setattr(linear, "GRAD_TOL", 1e-7)  # converge fully so the optima can be compared tightly
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 10))
    labels = rng.integers(0, 4, 600)
    points = centres[labels] + 1.5 * rng.normal(size=(600, 10))
    (features,) = standardise(points, device=CPU)
    c = 0.5
    reference = LogisticRegression(C=c, tol=1e-10, max_iter=2000).fit(features.numpy(), labels)
    weight, bias = fit_linear(
        features,
        torch.as_tensor(labels),
        4,
        multilabel=False,
        lr=1.0,
        weight_decay=1 / (c * 600),
        max_iter=500,
        seed=0,
    )
    # softmax logits are defined up to a per-clip constant; sklearn's L2 optimum has zero-mean class weights
    np.testing.assert_allclose(
        weight.T.numpy(), reference.coef_, atol=2e-3
    )  # float32 floor ~6e-4; a 10 % wrong penalty is off by 2e-2
    np.testing.assert_allclose(bias.numpy() - bias.numpy().mean(), reference.intercept_, atol=2e-3)


def test_grid_point_with_the_best_val_accuracy_is_chosen_and_reported():
    rng = np.random.default_rng(2)
    dim = 60  # many noise dimensions and few clips: the penalty matters
    train, val, test = (two_gaussians(n, 1.5, dim, rng) for n in (80, 400, 400))
    grid = [0.0, 0.1, 1.0, 10.0]
    train_x, val_x = standardise(train[0], val[0], device=CPU)
    val_acc = []
    for wd in grid:
        weight, bias = fit_linear(
            train_x,
            torch.as_tensor(train[1]),
            2,
            multilabel=False,
            lr=1.0,
            weight_decay=wd,
            max_iter=100,
            seed=0,
        )
        val_acc.append(accuracy_score(val[1], _scores(val_x, weight, bias, False).argmax(1)))
    got = values(
        linear_probe(*train, *val, *test, multilabel=False, **linear_probe_args(weight_decay_grid=grid))
    )
    assert got["chosen_weight_decay"] == grid[int(np.argmax(val_acc))]
    assert "chosen_lr" not in got  # the L-BFGS step is not a grid dimension


def test_the_lbfgs_initial_step_does_not_change_the_fit():
    # why lr_grid was dropped: both steps reach the same optimum, so a grid over them only picks noise
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.normal(size=(120, 8)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 3, size=120))
    fits = [
        fit_linear(x, y, 3, multilabel=False, weight_decay=1e-2, max_iter=200, seed=0, lr=lr)
        for lr in (0.1, 1.0)
    ]
    assert torch.allclose(fits[0][0], fits[1][0], atol=2e-3) and torch.allclose(
        fits[0][1], fits[1][1], atol=2e-3
    )


def test_multilabel_probe_reports_map_thresholded_f1_and_missing_classes():
    rng = np.random.default_rng(3)
    dim, n_classes = 12, 4

    def split(n):
        hot = (rng.random((n, n_classes)) < 0.35).astype(np.float32)
        points = rng.normal(size=(n, dim)) + 2.0 * hot @ np.eye(n_classes, dim)  # each class shifts one axis
        return points.astype(np.float32), hot

    (train, train_hot), (val, val_hot), (test, test_hot) = split(600), split(200), split(300)
    test_hot[:, 3] = 0
    got = values(
        linear_probe(
            train, train_hot, val, val_hot, test, test_hot, multilabel=True, **linear_probe_args(max_iter=50)
        )
    )
    assert got["n_classes_without_test_positive"] == 1 and got["n_classes_without_val_positive"] == 0
    # an axis shift of 2 sd separates each class well: check against AP of the true axis as score
    oracle = np.mean([average_precision_score(test_hot[:, c], test[:, c]) for c in range(3)])
    assert got["map"] > oracle - 0.05
    assert 0.6 < got["macro_f1"] <= 1.0


def test_probe_seed_is_deterministic_and_recorded():
    rng = np.random.default_rng(4)
    train, val, test = (two_gaussians(n, 2.0, 5, rng) for n in (200, 100, 100))
    first = linear_probe(*train, *val, *test, multilabel=False, **linear_probe_args(seed=7, max_iter=20))
    again = linear_probe(*train, *val, *test, multilabel=False, **linear_probe_args(seed=7, max_iter=20))
    assert first == again and {r["probe_seed"] for r in first} == {7}


def test_grid_without_val_split_is_an_error():
    rng = np.random.default_rng(5)
    train, test = two_gaussians(50, 2.0, 3, rng), two_gaussians(50, 2.0, 3, rng)
    empty = (np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="val split is empty"):
        linear_probe(
            *train, *empty, *test, multilabel=False, **linear_probe_args(weight_decay_grid=[0.0, 0.1])
        )
    single = linear_probe(
        *train, *empty, *test, multilabel=False, **linear_probe_args(weight_decay_grid=[0.1])
    )
    assert values(single)["chosen_weight_decay"] == 0.1
