"""Tuning losses by name: vanilla fine-tuning (ce / bce), SupCon, two Jaccard-weighted SupCons, MulSupCon and a
hybrid.

Every loss reads the model's output dict (``embedding``, ``projection``, ``logits``) and the batch's multi-hot
label matrix [B, C] (single-label data arrives one-hot), so the trainer needs no per-loss branches. A method
config names its loss and hyper-parameters, e.g. ``{"loss": "jaccard_supcon", "temperature": 0.1}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..methods import loss_params


def shared_label_weights(multi_hot: Tensor) -> Tensor:
    """Binary positive mask: 1 where clips i != j share at least one label.

    Args:
        multi_hot: [B, C] float multi-hot labels (one-hot for single-label data).

    Returns:
        [B, B] float weights with a zero diagonal.
    """
    shared = (multi_hot @ multi_hot.T) > 0
    shared.fill_diagonal_(False)
    return shared.to(multi_hot.dtype)


def jaccard_weights(multi_hot: Tensor, threshold: float = 0.0, power: float = 1.0) -> Tensor:
    """Pair weights J(i, j) ** power, where J is the Jaccard index of the two label sets.

    A pair whose Jaccard index is below ``threshold`` gets weight 0; a clip without labels has J = 0 with every
    clip (empty union), so it has no positives. On one-hot labels the weights equal ``shared_label_weights``.

    Args:
        multi_hot: [B, C] float multi-hot labels.
        threshold: minimum Jaccard index of a weighted pair.
        power: exponent applied to the Jaccard index (>1 favours near-identical label sets).

    Returns:
        [B, B] float weights with a zero diagonal.
    """
    intersection = multi_hot @ multi_hot.T
    sizes = multi_hot.sum(dim=1)
    union = sizes[:, None] + sizes[None, :] - intersection
    jaccard = torch.where(union > 0, intersection / union.clamp_min(1.0), torch.zeros_like(union))
    keep = (jaccard > 0) & (jaccard >= threshold)
    weights = torch.where(keep, jaccard.pow(power), torch.zeros_like(jaccard))
    weights.fill_diagonal_(0.0)
    return weights


def weighted_supcon(
    z: Tensor, pair_weights: Tensor, temperature: float, *, normalise_by_count: bool = False
) -> Tensor:
    """Supervised contrastive loss with per-pair positive weights, normalised per anchor.

    Khosla et al. 2020, eq. 2 (L_out): for anchor i,
    ``l_i = -sum_j w_ij / (sum_j w_ij) * log(exp(z_i.z_j / tau) / sum_{a != i} exp(z_i.z_a / tau))``.
    The denominator holds every other clip of the batch (partial positives too); binary weights give SupCon,
    Jaccard weights give the multi-label variant. With ``normalise_by_count`` the anchor's sum is divided by
    its number of positives |P(i)| = #{j : w_ij > 0} instead of sum_j w_ij, so a partial positive (w < 1)
    pulls less than a full one instead of being rescaled to a full share. The loss is the mean over anchors
    with a positive weight; a batch without any positive pair returns a zero that still carries the graph.

    Args:
        z: [B, D] L2-normalised features.
        pair_weights: [B, B] non-negative weights; the diagonal is ignored.
        temperature: softmax temperature tau.
        normalise_by_count: divide by the positive count rather than the weight sum.

    Returns:
        scalar loss.
    """
    self_pair = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    weights = pair_weights.masked_fill(self_pair, 0.0)
    weight_sum = weights.sum(dim=1)
    has_positive = weight_sum > 0
    if not bool(has_positive.any()):
        return z.sum() * 0.0
    logits = (z @ z.T / temperature).masked_fill(self_pair, float("-inf"))
    log_prob = (logits - torch.logsumexp(logits, dim=1, keepdim=True)).masked_fill(self_pair, 0.0)
    normaliser = (weights > 0).sum(dim=1).to(z.dtype) if normalise_by_count else weight_sum
    per_anchor = -(weights * log_prob).sum(dim=1)[has_positive] / normaliser[has_positive]
    return per_anchor.mean()


def mulsupcon(z: Tensor, multi_hot: Tensor, temperature: float) -> Tensor:
    """MulSupCon (Zhang & Wu, AAAI 2024): every (clip, label) pair is its own anchor.

    Anchor (i, c) for each label c of clip i has the positives P(i, c) = {j != i : clip j carries c} and the
    loss ``-1/|P(i, c)| sum_{j in P(i, c)} log(exp(z_i.z_j / tau) / sum_{a != i} exp(z_i.z_a / tau))``; the
    loss is the mean over label anchors with a positive (in-batch form of the authors' queue-based loss, with
    its default equal weight per label anchor). Summed over c, anchor i weights pair (i, j) by
    w_ij = sum_{c in Y_i & Y_j} 1 / |P(i, c)|, so one weighted log-softmax pass computes it.

    Args:
        z: [B, D] L2-normalised features.
        multi_hot: [B, C] multi-hot labels (one-hot data gives SupCon).
        temperature: softmax temperature tau.

    Returns:
        scalar loss; a defined zero (with graph) when no label occurs twice in the batch.
    """
    labels = (multi_hot > 0).to(z.dtype)  # [B, C]
    positives_per_anchor = labels.sum(dim=0) - 1  # [C] |P(i, c)| for every clip i carrying c
    valid = positives_per_anchor > 0  # labels that occur at least twice
    n_anchors = (labels[:, valid]).sum()
    if not bool(n_anchors > 0):
        return z.sum() * 0.0
    inverse = torch.where(
        valid, 1.0 / positives_per_anchor.clamp_min(1.0), torch.zeros_like(positives_per_anchor)
    )
    pair_weights = (labels * inverse) @ labels.T  # [B, B] w_ij = sum_c y_ic y_jc / |P(i, c)|
    self_pair = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    pair_weights = pair_weights.masked_fill(self_pair, 0.0)
    logits = (z @ z.T / temperature).masked_fill(self_pair, float("-inf"))
    log_prob = (logits - torch.logsumexp(logits, dim=1, keepdim=True)).masked_fill(self_pair, 0.0)
    return -(pair_weights * log_prob).sum() / n_anchors


def _ce(outputs: dict[str, Tensor], multi_hot: Tensor, *, multilabel: bool) -> Tensor:
    return F.cross_entropy(outputs["logits"], multi_hot.argmax(dim=1))


def _bce(outputs: dict[str, Tensor], multi_hot: Tensor, *, multilabel: bool) -> Tensor:
    return F.binary_cross_entropy_with_logits(outputs["logits"], multi_hot)


def _supcon(outputs: dict[str, Tensor], multi_hot: Tensor, *, multilabel: bool, temperature: float) -> Tensor:
    return weighted_supcon(outputs["projection"], shared_label_weights(multi_hot), temperature)


def _jaccard_supcon(
    outputs: dict[str, Tensor],
    multi_hot: Tensor,
    *,
    multilabel: bool,
    temperature: float,
    jaccard_threshold: float,
    jaccard_power: float,
) -> Tensor:
    weights = jaccard_weights(multi_hot, jaccard_threshold, jaccard_power)
    return weighted_supcon(outputs["projection"], weights, temperature)


def _jaccard_supcon_count(
    outputs: dict[str, Tensor],
    multi_hot: Tensor,
    *,
    multilabel: bool,
    temperature: float,
    jaccard_threshold: float,
) -> Tensor:
    weights = jaccard_weights(multi_hot, jaccard_threshold)
    return weighted_supcon(outputs["projection"], weights, temperature, normalise_by_count=True)


def _mulsupcon(
    outputs: dict[str, Tensor], multi_hot: Tensor, *, multilabel: bool, temperature: float
) -> Tensor:
    return mulsupcon(outputs["projection"], multi_hot, temperature)


def _supcon_ce(
    outputs: dict[str, Tensor], multi_hot: Tensor, *, multilabel: bool, temperature: float, ce_weight: float
) -> Tensor:
    # (1 - lambda) SupCon + lambda CE, the convex mix of Gunel et al. 2021; the classification term is BCE on
    # multi-label data so one method name serves both label kinds.
    classification = (_bce if multilabel else _ce)(outputs, multi_hot, multilabel=multilabel)
    contrastive = _supcon(outputs, multi_hot, multilabel=multilabel, temperature=temperature)
    return (1.0 - ce_weight) * contrastive + ce_weight * classification


@dataclass(frozen=True)
class Loss:
    """A loss; its hyper-parameter names are ``acft.methods.LOSS_PARAMS[name]``, their defaults and ranges the
    config schema's."""

    heads: tuple[str, ...]  # heads the model needs: "projection" (SupCon family), "classifier" (ce family)
    labels: str  # data the loss accepts: "single", "multi" or "any"
    compute: Callable[..., Tensor]  # (outputs, multi_hot, *, multilabel, **hyper-parameters) -> scalar


LOSSES = {
    "ce": Loss(("classifier",), "single", _ce),
    "bce": Loss(("classifier",), "multi", _bce),
    "supcon": Loss(("projection",), "any", _supcon),
    "jaccard_supcon": Loss(("projection",), "any", _jaccard_supcon),
    # Jaccard weights thresholded (pairs below jaccard_threshold are not positives), normalised by the number
    # of positives
    "jaccard_supcon_count": Loss(("projection",), "any", _jaccard_supcon_count),
    "mulsupcon": Loss(("projection",), "any", _mulsupcon),
    "supcon_ce": Loss(("projection", "classifier"), "any", _supcon_ce),
}


def resolve_method(method_cfg: dict) -> tuple[str, Loss, dict]:
    """Look up a method config's loss and read its hyper-parameters.

    Args:
        method_cfg: the method entry as the schema filled it (``acft.plan.method_config``): ``{"loss": name,
            **the loss's hyper-parameters}``, optionally with the training keys of ``acft.methods`` (sampler,
            select_on, views), which are not loss parameters. A null ``jaccard_threshold`` is the loss's own
            value (``acft.methods.loss_params``).

    Returns:
        (loss name, Loss entry, hyper-parameters).
    """
    name = method_cfg.get("loss")
    if name == "none":
        raise ValueError("method loss 'none' is the frozen backbone: it has no tuning job")
    if name not in LOSSES:
        raise ValueError(f"unknown method loss {name!r}; expected one of {sorted(LOSSES)} (or 'none')")
    return name, LOSSES[name], loss_params(method_cfg)


def check_label_kind(name: str, loss: Loss, multilabel: bool) -> None:
    """Refuse a loss that does not fit the dataset's label kind, naming the loss to use instead."""
    if loss.labels == "single" and multilabel:
        raise ValueError(
            f"method loss {name!r} is single-label cross-entropy but this dataset is multi-label; use loss: bce"
        )
    if loss.labels == "multi" and not multilabel:
        raise ValueError(
            f"method loss {name!r} is multi-label binary cross-entropy but this dataset is single-label; "
            "use loss: ce"
        )
