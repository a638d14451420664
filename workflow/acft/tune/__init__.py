"""Contrastive tuning (SupCon, Jaccard-weighted SupCons, MulSupCon) and vanilla fine-tuning (ce / bce) of a backbone."""

from .losses import LOSSES, jaccard_weights, mulsupcon, shared_label_weights, weighted_supcon
from .samplers import LabelBalancedBatchSampler, ShuffledBatchSampler, make_batch_sampler
from .trainer import TuneConfig, tune

__all__ = [
    "LOSSES",
    "LabelBalancedBatchSampler",
    "ShuffledBatchSampler",
    "TuneConfig",
    "jaccard_weights",
    "make_batch_sampler",
    "mulsupcon",
    "shared_label_weights",
    "tune",
    "weighted_supcon",
]
