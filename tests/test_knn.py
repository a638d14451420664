"""kNN probe against a brute-force loop (ties, k beyond a class, k beyond the bank) and scikit-learn."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from sklearn.neighbors import KNeighborsClassifier

from acft.probes import knn, knn_search
from acft.probes.knn import knn_probe, predict_single
from acft.probes.knn_search import SCREENS, nearest_neighbours, screen_error, unit_rows

sys.path.insert(0, str(Path(__file__).resolve().parent))
from schema_defaults import knn_probe_args  # noqa: E402

torch.set_num_threads(1)
SEARCHES = ["exact", "float32", "bfloat16"]


@pytest.fixture
def small_groups(monkeypatch):
    """Groups of 2 clips and a margin of 2 groups, so banks of a few dozen clips take the screened search."""
    monkeypatch.setattr(knn_search, "GROUP", 2)
    monkeypatch.setattr(knn_search, "GROUP_MARGIN", 2)


def brute_force_neighbours(train, query, k):
    """Python loop: cosine of every pair, order by (similarity desc, train index asc)."""
    unit_train = [t / np.linalg.norm(t) for t in train]
    out = []
    for q in query:
        q = q / np.linalg.norm(q)
        sims = [float(np.dot(q, t)) for t in unit_train]
        order = sorted(range(len(train)), key=lambda j: (-sims[j], j))[:k]
        out.append([(j, sims[j]) for j in order])
    return out


def brute_force_votes(neighbours, labels, n_classes, temperature):
    majority, weighted = [], []
    for row in neighbours:
        counts, scores = [0] * n_classes, [0.0] * n_classes
        for j, s in row:
            counts[labels[j]] += 1
            scores[labels[j]] += math.exp(s / temperature)
        majority.append(counts.index(max(counts)))  # first maximum = smallest class
        weighted.append(scores.index(max(scores)))
    return np.array(majority), np.array(weighted)


def tie_heavy_data(seed=0):
    """30 directions; 5 of them have 7 copies each with different labels, so equal similarities abound;
    class 3 has only two clips, so k = 5 exceeds it."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(30, 8))
    which = np.r_[np.repeat(np.arange(5), 7), [5, 5], np.arange(6, 30)]
    rng.shuffle(which)  # copies sit at scattered bank positions, where a BLAS may block them differently
    train = directions[which] * rng.choice(
        [1.0, 2.0, 4.0], size=(len(which), 1)
    )  # powers of 2: exact rescaling, the same unit vector
    labels = np.where(which == 5, 3, rng.integers(0, 3, len(which)))
    query = rng.normal(size=(40, 8))
    return train, labels, query


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("k", [1, 2, 5, 12, 61])
def test_neighbours_and_votes_match_brute_force_loop_with_ties(search, k, small_groups):
    train, labels, query = tie_heavy_data()
    reference = brute_force_neighbours(train, query, k)
    found = nearest_neighbours(train, query, [k], chunk_size=7, search=search)
    assert found.stats["duplicate_train_rows"] == 61 - 30
    screened = 2 * min(k, 30) + knn_search.GROUP_MARGIN < 15  # 30 distinct rows in groups of 2: 15 groups
    assert found.stats["search"] == (search if screened else "exact")
    for row, expected in zip(found.index[k].numpy(), reference, strict=True):
        assert set(row.tolist()) == {j for j, _ in expected}
    np.testing.assert_allclose(
        np.sort(found.sim[k].numpy(), axis=1),
        np.sort([[s for _, s in r] for r in reference], axis=1),
        atol=1e-12,
    )
    majority, weighted = brute_force_votes(reference, labels, 4, 0.07)
    assert (predict_single(found, k, labels, 4, weighted=False, temperature=0.07) == majority).all()
    assert (predict_single(found, k, labels, 4, weighted=True, temperature=0.07) == weighted).all()


@pytest.mark.parametrize("k", [1, 2, 4, 5, 10, 25])
def test_majority_vote_equals_sklearn_brute_cosine_in_float64(k, small_groups):
    """Duplicated train clips (same label) give exact distance ties, even k gives vote ties (smallest label)."""
    rng = np.random.default_rng(k)
    base = rng.normal(size=(150, 16))
    base_labels = rng.integers(0, 5, 150)
    train = np.concatenate([base, base[:60]])
    labels = np.concatenate([base_labels, base_labels[:60]])
    query = rng.normal(size=(300, 16))
    reference = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(train, labels)
    expected = reference.predict(query)
    for search in SEARCHES:
        found = nearest_neighbours(train, query, [k], chunk_size=64, search=search)
        assert found.stats["search"] == search
        assert (predict_single(found, k, labels, 5, weighted=False, temperature=0.07) == expected).all()


@pytest.mark.parametrize("search", ["float32", "bfloat16"])
def test_screen_searches_the_whole_row_when_near_ties_spill_past_the_searched_groups(search, small_groups):
    """Near-copies of one clip (closer than the screen's error bound, distinct in float64) fill more groups
    than are searched: the screen must look at the whole row."""
    rng = np.random.default_rng(0)
    near_copies = np.tile(rng.normal(size=(1, 8)), (40, 1)) * (1 + 1e-9 * rng.normal(size=(40, 8)))
    train = np.concatenate([rng.normal(size=(30, 8)), near_copies])
    query = train[-1:] + 0.3 * rng.normal(size=(20, 8))
    fast = nearest_neighbours(train, query, [1, 3, 5], chunk_size=16, search=search)
    exact = nearest_neighbours(train, query, [1, 3, 5], chunk_size=16, search="exact")
    assert fast.stats["whole_rows"] > 0
    for k in (1, 3, 5):
        assert torch.equal(fast.index[k], exact.index[k])
        np.testing.assert_allclose(fast.sim[k], exact.sim[k], rtol=0, atol=1e-14)


@pytest.mark.parametrize("search", ["float32", "bfloat16"])
def test_screened_search_equals_exact_search_on_clustered_data(search):
    """Default group sizes (a real screen: 6000 clips = 188 groups), 768 dims, anisotropic clusters."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(10, 768)) + 2.0 * rng.normal(size=768)  # a shared offset: all cosines > 0
    train = (centres[rng.integers(0, 10, 6000)] + 3 * rng.normal(size=(6000, 768))).astype(np.float32)
    query = (centres[rng.integers(0, 10, 300)] + 3 * rng.normal(size=(300, 768))).astype(np.float32)
    ks = [1, 5, 10, 20, 50]
    fast = nearest_neighbours(train, query, ks, chunk_size=512, search=search)
    exact = nearest_neighbours(train, query, ks, search="exact")
    assert fast.stats["search"] == search and fast.stats["rescored_pairs"] >= 300 * 50
    for k in ks:
        assert torch.equal(fast.index[k], exact.index[k])
        np.testing.assert_allclose(fast.sim[k], exact.sim[k], rtol=0, atol=1e-14)


@pytest.mark.parametrize("screen", SCREENS)
def test_screen_error_bound_covers_observed_error(screen):
    dtype, output_roundoff = SCREENS[screen]
    rng = np.random.default_rng(2)
    a = unit_rows(rng.normal(size=(300, 768)))
    b = unit_rows(rng.normal(size=(200, 768)) + a[:200].numpy())
    a_low, b_low = a.to(dtype), b.to(dtype)
    observed = ((b_low @ a_low.T).double() - b @ a.T).abs().max(dim=1).values
    shift = lambda low, unit: (low.double() - unit).norm(dim=1)  # noqa: E731
    bound = screen_error(shift(b_low, b), float(shift(a_low, a).max()), 768, torch.ones(200), output_roundoff)
    assert (observed > 0).all() and (observed <= bound).all()
    assert bound.max() < {"float32": 1e-4, "bfloat16": 0.02}[screen]  # tight enough to be useful


def test_violated_bound_falls_back_to_the_exact_search(monkeypatch):
    monkeypatch.setattr(knn_search, "screen_error", lambda *args, **kwargs: torch.zeros(len(args[0])))
    rng = np.random.default_rng(5)
    train, query = rng.normal(size=(2000, 32)), rng.normal(size=(50, 32))
    with pytest.warns(UserWarning, match="exceed their error bound"):
        found = nearest_neighbours(train, query, [5], search="bfloat16")
    assert found.stats["search"] == "exact"
    assert torch.equal(found.index[5], nearest_neighbours(train, query, [5], search="exact").index[5])


def test_unknown_search_is_an_error():
    with pytest.raises(ValueError, match="kNN search 'float16'"):
        nearest_neighbours(np.ones((3, 2)), np.ones((1, 2)), [1], search="float16")


def test_weighted_vote_uses_exp_similarity_over_temperature():
    """Two far-but-many neighbours of class 0 against one close neighbour of class 1."""
    train = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8]])
    labels = np.array([1, 0, 0])
    query = np.array([[1.0, 0.0]])
    found = nearest_neighbours(train, query, [3])
    assert predict_single(found, 3, labels, 2, weighted=False, temperature=0.07)[0] == 0
    # weights exp(1/0.07) vs 2 exp(0.6/0.07): class 1 wins unless tau is large (2 e^{0.6/t} > e^{1/t} iff t > 0.577)
    assert predict_single(found, 3, labels, 2, weighted=True, temperature=0.07)[0] == 1
    assert predict_single(found, 3, labels, 2, weighted=True, temperature=1.0)[0] == 0


def test_k_beyond_the_bank_is_clamped_and_recorded():
    rng = np.random.default_rng(3)
    train, labels = rng.normal(size=(6, 4)), np.array([0, 0, 0, 1, 1, 2])
    query, query_labels = rng.normal(size=(10, 4)), rng.integers(0, 3, 10)
    records = knn_probe(train, labels, query, query_labels, multilabel=False, **knn_probe_args(ks=[1, 50]))
    effective = {(r["probe"], r["k"]): r["value"] for r in records if r["metric"] == "effective_k"}
    assert effective == {
        ("knn_majority", 1): 1,
        ("knn_weighted", 1): 1,
        ("knn_majority", 50): 6,
        ("knn_weighted", 50): 6,
    }
    # with the whole bank as neighbours the majority vote is the most frequent train class for every query
    acc = next(
        r["value"]
        for r in records
        if r["k"] == 50 and r["probe"] == "knn_majority" and r["metric"] == "accuracy"
    )
    assert acc == pytest.approx(np.mean(query_labels == 0))


def test_multilabel_scores_are_weighted_means_of_neighbour_labels():
    rng = np.random.default_rng(4)
    train = rng.normal(size=(40, 6))
    hot = (rng.random((40, 3)) < 0.4).astype(np.float32)
    val, val_hot = rng.normal(size=(15, 6)), (rng.random((15, 3)) < 0.4).astype(np.float32)
    test, test_hot = rng.normal(size=(25, 6)), (rng.random((25, 3)) < 0.4).astype(np.float32)
    test_hot[:, 2] = 0  # no test positive: left out of mAP and counted
    k, tau = 5, 0.1
    reference = brute_force_neighbours(train, test, k)
    expected = np.array(
        [
            sum(math.exp(s / tau) * hot[j] for j, s in row) / sum(math.exp(s / tau) for _, s in row)
            for row in reference
        ]
    )
    found = nearest_neighbours(train, test, [k])
    np.testing.assert_allclose(
        knn.score_multilabel(found, k, hot, weighted=True, temperature=tau), expected, atol=1e-12
    )
    records = knn_probe(
        train,
        hot,
        test,
        test_hot,
        multilabel=True,
        val_emb=val,
        val_labels=val_hot,
        **knn_probe_args(ks=[k], temperature=tau),
    )
    got = {(r["probe"], r["metric"]): r["value"] for r in records}
    expected_map = np.mean([average_precision_score(test_hot[:, c], expected[:, c]) for c in (0, 1)])
    assert got[("knn_weighted", "map")] == pytest.approx(expected_map)
    assert got[("knn_weighted", "n_classes_without_test_positive")] == 1
    assert {metric for _, metric in got} >= {
        "map",
        "macro_f1",
        "effective_k",
        "n_classes_without_val_positive",
    }


def test_empty_bank_is_an_error():
    with pytest.raises(ValueError, match="memory bank"):
        knn_probe(
            np.zeros((0, 4)),
            np.zeros(0, dtype=np.int64),
            np.ones((2, 4)),
            np.zeros(2, dtype=np.int64),
            multilabel=False,
            **knn_probe_args(),
        )


@pytest.mark.parametrize("search", SEARCHES)
def test_search_leaves_the_callers_float64_arrays_unchanged(search):
    rng = np.random.default_rng(6)
    train, query = rng.normal(size=(5000, 16)), rng.normal(size=(20, 16))
    train_before, query_before = train.copy(), query.copy()
    nearest_neighbours(train, query, [5], search=search)
    assert np.array_equal(train, train_before) and np.array_equal(query, query_before)


@pytest.mark.parametrize("search", SEARCHES)
def test_copies_of_a_row_share_one_similarity_and_rank_by_index(search, small_groups):
    """The tie contract: bitwise-equal unit rows (here at many bank positions and scales) get the same
    similarity by construction, so they rank by train index on any BLAS; it holds for every chunking."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(40, 16))
    copied = rng.normal(size=16)
    train = base.copy()
    positions = np.sort(rng.choice(40, size=12, replace=False))
    train[positions] = copied * rng.choice([0.5, 1.0, 8.0], size=(12, 1))
    query = copied + 0.05 * rng.normal(size=(30, 16))  # the copies are every query's nearest rows
    for chunk_size in (3, 7, 64):
        found = nearest_neighbours(train, query, [12, 15], chunk_size=chunk_size, search=search)
        assert found.stats["duplicate_train_rows"] == 11
        assert (found.index[12] == torch.as_tensor(positions)).all()
        assert (found.sim[12] == found.sim[12][:, :1]).all()  # exactly equal, not merely close
