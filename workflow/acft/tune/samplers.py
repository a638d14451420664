"""Training batches: class-balanced P x m batches for the contrastive losses, uniform shuffles for vanilla
fine-tuning, with one budget for both.

Balanced: each batch draws P labels and m clips carrying each label ("P x m" sampling), so every drawn label
with at least two clips gives each of its clips a positive. Multi-label clips drawn for two labels appear once.
Clips without any label form one extra group, so they still reach the loss (as negatives only).
Shuffled: a uniform permutation of the train clips cut into batches of B clips, every clip once per epoch.
Budget: both give ceil(N / B) batches per epoch with B = P x m (P capped at the number of label groups), so an
epoch means the same number of optimiser steps and about N clip draws under either sampler.
Batches are a pure function of (seed, epoch): a sampler's resume state is just those two numbers.
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor


class _Cycle:
    """Endless shuffled pass over items: ``take(k)`` returns k distinct items, reshuffling when a pass ends."""

    def __init__(self, items: np.ndarray, rng: np.random.Generator):
        self.items, self.rng = items, rng
        self.order, self.pos = rng.permutation(items), 0

    def take(self, k: int) -> np.ndarray:
        k = min(k, len(self.items))
        taken = self.order[self.pos : self.pos + k]
        self.pos += len(taken)
        if len(taken) < k:
            # New pass; items already taken in this draw go to its end so a draw never repeats an item.
            fresh = self.rng.permutation(self.items)
            repeat = np.isin(fresh, taken)
            self.order, self.pos = np.concatenate([fresh[~repeat], fresh[repeat]]), k - len(taken)
            taken = np.concatenate([taken, self.order[: self.pos]])
        return taken


class LabelBalancedBatchSampler:
    """Yields batches of clip positions: ``classes_per_batch`` labels x ``clips_per_class`` clips each.

    An epoch has ceil(N / (P * m)) batches, so it shows about as many clips as the split holds. Within an epoch,
    labels are drawn in shuffled passes (class-balanced: rare labels are oversampled, frequent ones subsampled)
    and so are each label's clips, so a label's clips all appear before any of them repeats.

    Args:
        multi_hot: [N, C] multi-hot labels of the clips (one-hot for single-label data).
        classes_per_batch: P, labels per batch (capped at the number of label groups).
        clips_per_class: m, clips per label (a label with fewer clips contributes all of them).
        seed: base seed; the epoch's batches come from (seed, epoch).
    """

    def __init__(self, multi_hot: np.ndarray, classes_per_batch: int, clips_per_class: int, seed: int):
        if classes_per_batch < 1 or clips_per_class < 1:
            raise ValueError(
                f"classes_per_batch ({classes_per_batch}) and clips_per_class ({clips_per_class}) must be >= 1"
            )
        multi_hot = np.asarray(multi_hot)
        if multi_hot.ndim != 2 or len(multi_hot) == 0:
            raise ValueError(f"sampler needs a non-empty [N, C] label matrix, got shape {multi_hot.shape}")
        self.groups = [np.flatnonzero(column) for column in multi_hot.T if column.any()]
        unlabelled = np.flatnonzero(~multi_hot.any(axis=1))
        if len(unlabelled):
            self.groups.append(unlabelled)
        self.n_clips = len(multi_hot)
        self.classes_per_batch = min(classes_per_batch, len(self.groups))
        self.clips_per_class = clips_per_class
        self.seed, self.epoch = int(seed), 0

    @property
    def batch_size(self) -> int:
        """B = P x m, the nominal clips per batch (fewer when a label has under m clips or clips repeat)."""
        return self.classes_per_batch * self.clips_per_class

    def __len__(self) -> int:
        return max(1, math.ceil(self.n_clips / self.batch_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        group_cycle = _Cycle(np.arange(len(self.groups)), rng)
        clip_cycles = [_Cycle(group, rng) for group in self.groups]
        for _ in range(len(self)):
            labels = group_cycle.take(self.classes_per_batch)
            drawn = np.concatenate([clip_cycles[g].take(self.clips_per_class) for g in labels])
            _, first = np.unique(drawn, return_index=True)
            yield drawn[np.sort(first)]

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        if int(state["seed"]) != self.seed:
            raise ValueError(
                f"sampler state was saved with seed {state['seed']}, this sampler has seed {self.seed}"
            )
        self.epoch = int(state["epoch"])


class ShuffledBatchSampler:
    """Yields batches of clip positions from a uniform permutation: every clip exactly once per epoch.

    Args:
        n_clips: N, clips of the split.
        batch_size: B; the last batch of an epoch holds the remaining N mod B clips (if any).
        seed: base seed; the epoch's permutation comes from (seed, epoch).
    """

    def __init__(self, n_clips: int, batch_size: int, seed: int):
        if n_clips < 1 or batch_size < 1:
            raise ValueError(f"shuffled batches need n_clips ({n_clips}) and batch_size ({batch_size}) >= 1")
        self.n_clips, self.batch_size = int(n_clips), int(batch_size)
        self.seed, self.epoch = int(seed), 0

    def __len__(self) -> int:
        return math.ceil(self.n_clips / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n_clips)
        yield from (order[i : i + self.batch_size] for i in range(0, self.n_clips, self.batch_size))

    state_dict = LabelBalancedBatchSampler.state_dict
    load_state_dict = LabelBalancedBatchSampler.load_state_dict


def make_batch_sampler(
    kind: str, multi_hot: np.ndarray, classes_per_batch: int, clips_per_class: int, seed: int
):
    """A ``balanced`` (P x m) or ``shuffle`` sampler over the clips of ``multi_hot`` [N, C], same budget.

    The shuffled batches hold B = P x m clips with P capped at the label groups, exactly the balanced batch
    size, so both samplers give ceil(N / B) batches per epoch.
    """
    balanced = LabelBalancedBatchSampler(multi_hot, classes_per_batch, clips_per_class, seed)
    if kind == "balanced":
        return balanced
    if kind == "shuffle":
        return ShuffledBatchSampler(balanced.n_clips, balanced.batch_size, seed)
    raise ValueError(f"unknown sampler {kind!r}; expected 'balanced' or 'shuffle'")


def anchors_with_positive(multi_hot: Tensor) -> Tensor:
    """Which clips of a batch share a label with another clip of the batch.

    Args:
        multi_hot: [B, C] float multi-hot labels.

    Returns:
        [B] bool.
    """
    shared = (multi_hot @ multi_hot.T) > 0
    shared.fill_diagonal_(False)
    return shared.any(dim=1)


class PositiveStats:
    """Running count of anchors with a positive and of batches without any (logged once per epoch)."""

    def __init__(self):
        self.anchors = self.positive_anchors = self.zero_positive_batches = 0

    def update(self, multi_hot: Tensor) -> None:
        """Count one batch of [B, C] labels."""
        has_positive = anchors_with_positive(multi_hot)
        self.anchors += int(has_positive.numel())
        self.positive_anchors += int(has_positive.sum())
        self.zero_positive_batches += int(not bool(has_positive.any()))

    def as_dict(self) -> dict:
        share = self.positive_anchors / self.anchors if self.anchors else float("nan")
        return {"positive_share": share, "zero_positive_batches": self.zero_positive_batches}
