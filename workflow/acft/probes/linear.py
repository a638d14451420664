"""Linear probe: standardised features, one linear layer fitted by full-batch L-BFGS, grid chosen on val.

Loss: mean cross-entropy (single-label) or mean over clips of the summed per-class binary cross-entropy
(multi-label), plus 0.5 * weight_decay * ||W||^2 (bias not penalised). scikit-learn's
``LogisticRegression(C=C)`` minimises C * sum(CE) + 0.5 ||W||^2, the same optimum as weight_decay =
1 / (C * n_train). The problem is convex, so probe seeds (which draw the initial weights) differ only by
how far L-BFGS got in ``max_iter`` iterations.

Only the weight decay is chosen on val. L-BFGS has no learning rate to tune: its ``lr`` is the initial step
of the strong-Wolfe line search, which rescales every step, and each fit runs to the gradient tolerance, so
a grid over it would pick among fits of the same optimum (an earlier ``lr_grid`` did exactly that).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..device import select_device
from .metrics import mean_average_precision, multilabel_metrics, single_label_metrics

# stop when every gradient entry is below this, scikit-learn's lbfgs default (its loss has the same scale)
GRAD_TOL = 1e-4
LBFGS_STEP = 1.0  # initial step of the line search (torch's default); not a hyper-parameter, see above


def standardise(train: np.ndarray, *others: np.ndarray, device: torch.device) -> list[torch.Tensor]:
    """Centre and scale every array by the train split's per-feature mean and std (constant features: std 1).

    Returns float32 tensors on ``device`` in the order given (train first).
    """
    train_t = torch.as_tensor(np.asarray(train), dtype=torch.float32, device=device)
    mean = train_t.mean(dim=0)
    std = train_t.std(dim=0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    tensors = [train_t] + [torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device) for x in others]
    return [(t - mean) / std for t in tensors]


def _loss_and_logit_grad(logits_t: torch.Tensor, targets_t: torch.Tensor, multilabel: bool):
    """Mean data loss and its gradient w.r.t. the logits, classes along dim 0. logits_t: [C, N].

    targets_t: int64 [N] class indices (cross-entropy) or float32 [C, N] multi-hot (binary cross-entropy
    summed over classes). The gradients are the textbook (softmax - one-hot) / N and (sigmoid - y) / N.
    """
    n = logits_t.shape[1]
    if multilabel:
        loss = (F.softplus(logits_t) - targets_t * logits_t).sum() / n
        return loss, (torch.sigmoid(logits_t) - targets_t) / n
    log_probs = torch.log_softmax(logits_t, dim=0)
    loss = -log_probs.gather(0, targets_t[None, :]).sum() / n
    grad = log_probs.exp_()
    grad.scatter_add_(0, targets_t[None, :], torch.full((1, n), -1.0, device=grad.device))
    return loss, grad / n


def fit_linear(
    features: torch.Tensor,
    targets: torch.Tensor,
    n_classes: int,
    *,
    multilabel: bool,
    weight_decay: float,
    max_iter: int,
    seed: int,
    lr: float = LBFGS_STEP,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit logits = features @ W + b by full-batch L-BFGS (strong-Wolfe line search; ``lr`` = initial step).

    Gradients are analytic and the features are kept in both layouts so each product is a wide matrix
    product (about 3x faster on CPU than autograd through ``features @ W``).

    Args:
        features: float32 [N, D] standardised train features.
        targets: int64 [N] class indices, or float32 [N, C] multi-hot.
        n_classes: C. seed: draws the initial weights, uniform(+-1/sqrt(D)) like ``nn.Linear``.

    Returns:
        (W [D, C], b [C]).
    """
    dim = features.shape[1]
    features_t = features.T.contiguous()  # [D, N]
    targets_t = targets.T.contiguous() if multilabel else targets
    generator = torch.Generator().manual_seed(seed)
    scale = 1.0 / math.sqrt(dim)
    weight_t = ((torch.rand(n_classes, dim, generator=generator) * 2 - 1) * scale).to(features.device)
    bias = ((torch.rand(n_classes, generator=generator) * 2 - 1) * scale).to(features.device)
    optimiser = torch.optim.LBFGS(
        [weight_t, bias],
        lr=lr,
        max_iter=max_iter,
        history_size=10,
        tolerance_grad=GRAD_TOL,
        line_search_fn="strong_wolfe",
    )

    def closure():
        logits_t = (weight_t @ features_t).add_(
            bias[:, None]
        )  # (torch.addmm with this broadcast is 2x slower)
        loss, grad_logits = _loss_and_logit_grad(logits_t, targets_t, multilabel)
        weight_t.grad = grad_logits @ features + weight_decay * weight_t
        bias.grad = grad_logits.sum(dim=1)
        return loss + 0.5 * weight_decay * weight_t.pow(2).sum()

    with torch.no_grad():
        optimiser.step(closure)
    return weight_t.T, bias


def _scores(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, multilabel: bool) -> np.ndarray:
    """Class probabilities [N, C] (softmax, or per-class sigmoid) as float64 numpy."""
    logits = features @ weight + bias
    probs = torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)
    return probs.double().cpu().numpy()


def _val_criterion(val_true: np.ndarray, val_scores: np.ndarray, multilabel: bool) -> float:
    """What the grid maximises: val mAP (multi-label) or val accuracy (single-label)."""
    if multilabel:
        return mean_average_precision(val_true, val_scores)[0]
    return float(np.mean(val_scores.argmax(1) == val_true))


def linear_probe(
    train_emb: np.ndarray,
    train_labels: np.ndarray,
    val_emb: np.ndarray,
    val_labels: np.ndarray,
    test_emb: np.ndarray,
    test_labels: np.ndarray,
    *,
    multilabel: bool,
    n_classes: int | None = None,
    weight_decay_grid: Sequence[float],
    max_iter: int,
    seed: int,
    device: str,
) -> list[dict]:
    """Fit on train for every weight decay of the grid, keep the best on val, test it once.

    Args:
        train_emb, val_emb, test_emb: [N_split, D] embeddings (val may have 0 rows if the grid has one point).
        train_labels, val_labels, test_labels: int64 [N] class indices, or multi-hot [N, C] if ``multilabel``.
        n_classes: C for single-label (default: 1 + the largest label seen).
        weight_decay_grid: candidates; ties on the val criterion go to the earlier one.
        max_iter: L-BFGS iterations per fit. seed: probe seed (initial weights). device: see ``acft.device.select_device``.

    Returns:
        records {"probe": "linear", "probe_seed", "metric", "value"}: accuracy and macro_f1 (single-label) or
        map, macro_f1, n_classes_without_test_positive, n_classes_without_val_positive (multi-label); plus
        chosen_weight_decay.
    """
    grid = list(weight_decay_grid)  # not empty: the schema's minItems
    has_val = len(val_emb) > 0
    if len(grid) > 1 and not has_val:
        raise ValueError(f"the linear probe grid has {len(grid)} points but the val split is empty")
    if len(train_emb) == 0:
        raise ValueError("the linear probe's train split is empty")
    target = select_device(device)
    train_x, val_x, test_x = standardise(train_emb, val_emb, test_emb, device=target)
    if multilabel:
        n_classes = np.asarray(train_labels).shape[1]
        train_y = torch.as_tensor(np.asarray(train_labels), dtype=torch.float32, device=target)
    else:
        seen = [np.max(y) for y in (train_labels, val_labels, test_labels) if len(y)]
        n_classes = n_classes or int(max(seen)) + 1
        train_y = torch.as_tensor(np.asarray(train_labels), dtype=torch.long, device=target)

    best = None
    for weight_decay in grid:
        weight, bias = fit_linear(
            train_x,
            train_y,
            n_classes,
            multilabel=multilabel,
            weight_decay=weight_decay,
            max_iter=max_iter,
            seed=seed,
        )
        criterion = (
            _val_criterion(val_labels, _scores(val_x, weight, bias, multilabel), multilabel)
            if has_val
            else 0.0
        )
        criterion = -math.inf if math.isnan(criterion) else criterion  # e.g. no val positive for any class
        if best is None or criterion > best[0]:
            best = (criterion, weight_decay, weight, bias)
    _, weight_decay, weight, bias = best

    test_scores = _scores(test_x, weight, bias, multilabel)
    if multilabel:
        val_scores = _scores(val_x, weight, bias, multilabel) if has_val else None
        metrics = multilabel_metrics(val_labels if has_val else None, val_scores, test_labels, test_scores)
    else:
        metrics = single_label_metrics(test_labels, test_scores.argmax(1))
    metrics.update(chosen_weight_decay=float(weight_decay))
    return [{"probe": "linear", "probe_seed": int(seed), "metric": m, "value": v} for m, v in metrics.items()]


def evaluate(
    data, emb: np.ndarray, train: np.ndarray, *, weight_decay_grid, max_iter, probe_seeds, device
) -> list[dict]:
    """The linear probe of one embedding column (``acft.probes.run.run_probe``), once per probe seed: fitted
    on the ``train`` positions, its weight decay chosen on the round's val clips, scored on its test clips."""
    test, val = data.positions("test"), data.positions("val")
    records = []
    for seed in probe_seeds:
        records += linear_probe(
            emb[train],
            data.targets[train],
            emb[val],
            data.targets[val],
            emb[test],
            data.targets[test],
            multilabel=data.multilabel,
            n_classes=data.n_classes,
            weight_decay_grid=weight_decay_grid,
            max_iter=max_iter,
            seed=seed,
            device=device,
        )
    return records
