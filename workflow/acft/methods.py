"""How a tuned method is trained besides its loss: batch sampler, val selection metric and views (torch-free).

A method entry may set ``sampler``, ``select_on`` and ``views`` next to its loss. ``auto`` (the default) gives
vanilla fine-tuning for the classifier losses and the SupCon recipe for the rest:

- ce / bce: ``sampler: shuffle`` (uniformly shuffled batches, every train clip once per epoch) and
  ``select_on: head`` (lr and epoch chosen on the head's own val accuracy, or val mAP for bce);
- supcon, jaccard_supcon, mulsupcon, supcon_ce, ...: ``sampler: balanced`` (P labels x m clips per batch, so
  every anchor has positives) and ``select_on: knn`` (val similarity-weighted kNN accuracy or mAP).

Setting ``sampler: balanced, select_on: knn`` on a ce method reproduces the earlier CE baseline, so both can
be tabulated side by side. Kept free of torch so planning and the tables can read it.
"""

from __future__ import annotations

CLASSIFIER_LOSSES = ("ce", "bce")  # vanilla fine-tuning: their auto settings differ from the contrastive ones
SAMPLERS = ("balanced", "shuffle")
SELECTIONS = ("knn", "head")
VIEWS = (1, 2)
TRAINING_DEFAULTS = {"sampler": "auto", "select_on": "auto", "views": 1}


def training_settings(method_cfg: dict) -> dict:
    """The method's resolved {"sampler", "select_on", "views"}; ``auto`` resolved by its loss.

    Raises:
        ValueError: an unknown value, or ``select_on: head`` for a loss without a classifier head (decided
            by the trainer, which knows the heads; here only the values are checked).
    """
    loss = method_cfg.get("loss")
    vanilla = loss in CLASSIFIER_LOSSES
    settings = {key: method_cfg.get(key, default) for key, default in TRAINING_DEFAULTS.items()}
    if settings["sampler"] == "auto":
        settings["sampler"] = "shuffle" if vanilla else "balanced"
    if settings["select_on"] == "auto":
        settings["select_on"] = "head" if vanilla else "knn"
    checks = {"sampler": SAMPLERS, "select_on": SELECTIONS, "views": VIEWS}
    for key, allowed in checks.items():
        if settings[key] not in allowed:
            raise ValueError(
                f"method {loss!r}: {key} = {settings[key]!r} must be one of {list(allowed)} or auto"
            )
    return settings


def describe_training(settings: dict, *, multilabel: bool, knn_k: int) -> str:
    """One phrase for a table note, e.g. "shuffled batches, lr and epoch chosen on val head accuracy"."""
    sampler = {
        "shuffle": "uniformly shuffled batches (every train clip once per epoch)",
        "balanced": "class-balanced P×m batches",
    }[settings["sampler"]]
    score = "mAP" if multilabel else "accuracy"
    selection = {"head": f"val head {score}", "knn": f"val kNN@{knn_k} {score} (w.)"}[settings["select_on"]]
    views = "; two augmented views per clip" if settings["views"] == 2 else ""
    return f"{sampler}, lr and epoch chosen on {selection}{views}"
