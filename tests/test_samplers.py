"""Label-balanced batch sampler: positive guarantees, coverage, determinism; positive statistics."""

import numpy as np
import pytest
import torch

from acft.tune.samplers import (
    LabelBalancedBatchSampler,
    PositiveStats,
    ShuffledBatchSampler,
    anchors_with_positive,
    make_batch_sampler,
)

torch.set_num_threads(1)


def one_hot(classes, n_classes):
    return np.eye(n_classes, dtype=np.float32)[classes]


def test_single_label_batches_hold_p_classes_of_m_clips_and_cover_the_epoch():
    classes = np.repeat(np.arange(6), 8)  # 6 classes x 8 clips
    sampler = LabelBalancedBatchSampler(one_hot(classes, 6), classes_per_batch=3, clips_per_class=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4  # ceil(48 / (3 * 4))
    for batch in batches:
        assert len(set(batch.tolist())) == len(batch) == 12
        counts = np.bincount(classes[batch], minlength=6)
        assert sorted(counts[counts > 0].tolist()) == [4, 4, 4]
    # every label is drawn twice per epoch and every clip exactly once
    assert sorted(np.concatenate(batches).tolist()) == list(range(48))


def test_every_anchor_has_a_positive_when_classes_have_two_clips():
    rng = np.random.default_rng(1)
    classes = np.concatenate([np.arange(10), np.arange(10), rng.integers(0, 10, size=80)])  # >= 2 clips each
    labels = one_hot(classes, 10)
    sampler = LabelBalancedBatchSampler(labels, classes_per_batch=4, clips_per_class=3, seed=5)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        for batch in sampler:
            assert anchors_with_positive(torch.from_numpy(labels[batch])).all()


def test_small_classes_give_all_their_clips_without_repeats():
    classes = np.array([0, 0, 1, 2, 2, 2, 2, 2, 2])
    sampler = LabelBalancedBatchSampler(one_hot(classes, 3), classes_per_batch=3, clips_per_class=4, seed=2)
    for batch in sampler:
        counts = np.bincount(classes[batch], minlength=3)
        assert counts.tolist() == [2, 1, 4]
        assert len(set(batch.tolist())) == len(batch)


def test_classes_per_batch_is_capped_at_the_number_of_labels():
    classes = np.repeat(np.arange(2), 5)
    sampler = LabelBalancedBatchSampler(one_hot(classes, 2), classes_per_batch=16, clips_per_class=2, seed=0)
    assert sampler.classes_per_batch == 2
    assert len(sampler) == 3  # ceil(10 / (2 * 2))
    assert all(len(batch) == 4 for batch in sampler)


def test_multilabel_batches_guarantee_m_clips_for_p_labels_and_keep_unlabelled_clips():
    rng = np.random.default_rng(3)
    labels = (rng.random((120, 7)) < 0.25).astype(np.float32)
    labels[:10] = 0  # unlabelled clips form their own group
    sampler = LabelBalancedBatchSampler(labels, classes_per_batch=3, clips_per_class=4, seed=9)
    seen = set()
    group_sizes = np.concatenate([labels.sum(axis=0), [10]])
    for epoch in range(4):
        sampler.set_epoch(epoch)
        for batch in sampler:
            assert len(set(batch.tolist())) == len(batch)
            seen.update(batch.tolist())
            per_label = np.concatenate([labels[batch].sum(axis=0), [(labels[batch].sum(axis=1) == 0).sum()]])
            # at least P groups are present with min(m, group size) clips each
            assert (per_label >= np.minimum(4, group_sizes)).sum() >= 3
    assert set(range(10)) <= seen


def test_batches_are_a_function_of_seed_and_epoch_and_state_round_trips():
    labels = one_hot(np.repeat(np.arange(5), 6), 5)
    a = LabelBalancedBatchSampler(labels, 2, 3, seed=4)
    b = LabelBalancedBatchSampler(labels, 2, 3, seed=4)
    a.set_epoch(3)
    b.load_state_dict(a.state_dict())
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    b.set_epoch(4)
    assert not all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="seed"):
        LabelBalancedBatchSampler(labels, 2, 3, seed=5).load_state_dict(a.state_dict())


def test_sampler_rejects_empty_labels():
    with pytest.raises(ValueError, match="non-empty"):
        LabelBalancedBatchSampler(np.zeros((0, 3)), 2, 2, seed=0)


def test_positive_stats_match_brute_force():
    rng = np.random.default_rng(0)
    batches = [
        torch.from_numpy((rng.random((int(rng.integers(1, 6)), 4)) < 0.3).astype(np.float32))
        for _ in range(20)
    ]
    stats = PositiveStats()
    for batch in batches:
        stats.update(batch)
    flags = []
    zero_batches = 0
    for batch in batches:
        sets = [set(np.flatnonzero(row.numpy())) for row in batch]
        batch_flags = [any(sets[i] & sets[j] for j in range(len(sets)) if j != i) for i in range(len(sets))]
        flags += batch_flags
        zero_batches += not any(batch_flags)
    assert stats.as_dict() == {
        "positive_share": pytest.approx(np.mean(flags)),
        "zero_positive_batches": zero_batches,
    }


# ---------------------------------------------------------------- shuffled batches (vanilla fine-tuning)


def test_shuffled_batches_are_uniform_permutations_covering_every_clip_once_per_epoch():
    classes = np.r_[np.zeros(90, dtype=int), np.ones(8, dtype=int), np.full(2, 2)]  # imbalanced: 90 / 8 / 2
    labels = one_hot(classes, 3)
    sampler = make_batch_sampler("shuffle", labels, classes_per_batch=16, clips_per_class=4, seed=3)
    balanced = make_batch_sampler("balanced", labels, classes_per_batch=16, clips_per_class=4, seed=3)
    # one budget: P is capped at 3 labels, so B = 3 x 4 = 12 and both give ceil(100 / 12) = 9 batches
    assert isinstance(sampler, ShuffledBatchSampler) and len(sampler) == len(balanced) == 9
    first_positions = []
    for epoch in range(400):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert [len(b) for b in batches] == [12] * 8 + [4]
        assert sorted(np.concatenate(batches).tolist()) == list(range(100))  # every clip exactly once
        first_positions.append(np.concatenate(batches))
    # uniform: each batch mirrors the data's class mix (90 %), not a balanced 1/3 share
    share = np.mean([np.mean(classes[order[:12]] == 0) for order in first_positions])
    assert share == pytest.approx(0.9, abs=0.02)
    # and every clip is equally likely to come first (a chi-square-free check: no clip far from 4 / 400)
    counts = np.bincount([order[0] for order in first_positions], minlength=100)
    assert counts.max() <= 15
    # a balanced sampler on the same labels over-represents the rare classes
    balanced_share = np.mean([np.mean(classes[b] == 0) for b in balanced])
    assert balanced_share < 0.5


def test_shuffled_sampler_is_a_function_of_seed_and_epoch():
    sampler = ShuffledBatchSampler(20, 6, seed=1)
    sampler.set_epoch(2)
    first = [b.tolist() for b in sampler]
    other = ShuffledBatchSampler(20, 6, seed=1)
    other.load_state_dict(sampler.state_dict())
    assert [b.tolist() for b in other] == first
    other.set_epoch(3)
    assert [b.tolist() for b in other] != first
    with pytest.raises(ValueError, match="unknown sampler"):
        make_batch_sampler("random", one_hot([0, 1], 2), 2, 2, 0)
