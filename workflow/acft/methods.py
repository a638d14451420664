"""How a tuned method is trained besides its loss: batch sampler, val selection metric and views (torch-free).

A method entry may set ``sampler``, ``select_on`` and ``views`` next to its loss (their defaults and allowed
values are the config schema's, filled at workflow start). ``auto`` gives vanilla fine-tuning for the classifier losses and the SupCon recipe for the rest:

- ce / bce: ``sampler: shuffle`` (uniformly shuffled batches, every train clip once per epoch) and
  ``select_on: head`` (lr and epoch chosen on the head's own val accuracy, or val mAP for bce);
- supcon, jaccard_supcon, mulsupcon, supcon_ce, ...: ``sampler: balanced`` (P labels x m clips per batch, so
  every anchor has positives) and ``select_on: knn`` (val similarity-weighted kNN accuracy or mAP).

Setting ``sampler: balanced, select_on: knn`` on a ce method reproduces the earlier CE baseline, so both can
be tabulated side by side. Also the parameter names of each loss (``LOSS_PARAMS``; defaults and ranges in the
schema). Kept free of torch so planning and the tables can read it.
"""

from __future__ import annotations

CLASSIFIER_LOSSES = ("ce", "bce")  # vanilla fine-tuning: their auto settings differ from the contrastive ones
# losses whose model has a classifier head, so select_on: head can score it (acft.tune.losses.LOSSES' heads; a
# test keeps the two in step)
HEAD_LOSSES = ("ce", "bce", "supcon_ce")
TRAINING_KEYS = ("sampler", "select_on", "views")  # a tuned method's training keys (not loss parameters)

# Hyper-parameters each loss takes (acft.tune.losses.LOSSES holds the losses themselves; a test keeps the two in
# step). Their defaults and valid ranges are the config schema's.
LOSS_PARAMS = {
    "none": (),
    "ce": (),
    "bce": (),
    "supcon": ("temperature",),
    "jaccard_supcon": ("temperature", "jaccard_threshold", "jaccard_power"),
    "jaccard_supcon_count": ("temperature", "jaccard_threshold"),
    "mulsupcon": ("temperature",),
    "supcon_ce": ("temperature", "ce_weight"),
}

# What `jaccard_threshold: null` (the schema's default) means per loss: jaccard_supcon weights every pair that
# shares a label; jaccard_supcon_count keeps pairs that share at least half of their labels.
LOSS_JACCARD_THRESHOLD = {"jaccard_supcon": 0.0, "jaccard_supcon_count": 0.5}


def loss_params(method_cfg: dict) -> dict:
    """The hyper-parameters the method's loss takes, read from its (schema-filled) entry; a null
    ``jaccard_threshold`` is the loss's own value (``LOSS_JACCARD_THRESHOLD``).

    Raises:
        ValueError: the entry lacks one of the loss's parameters.
    """
    loss = method_cfg["loss"]
    missing = [key for key in LOSS_PARAMS[loss] if key not in method_cfg]
    if missing:
        raise ValueError(f"method loss {loss!r}: the entry lacks {missing} (the config schema fills them)")
    params = {key: method_cfg[key] for key in LOSS_PARAMS[loss]}
    if params.get("jaccard_threshold", 0.0) is None:
        params["jaccard_threshold"] = LOSS_JACCARD_THRESHOLD[loss]
    return params


def training_settings(method_cfg: dict) -> dict:
    """The method's resolved {"sampler", "select_on", "views"} (values checked by the schema); ``auto`` resolved
    by its loss. Run at workflow start by ``acft.plan.check_config``, and by the trainer.

    Raises:
        ValueError: ``select_on: head`` for a loss without a classifier head.
    """
    vanilla = method_cfg["loss"] in CLASSIFIER_LOSSES
    settings = {key: method_cfg[key] for key in TRAINING_KEYS}
    if settings["sampler"] == "auto":
        settings["sampler"] = "shuffle" if vanilla else "balanced"
    if settings["select_on"] == "auto":
        settings["select_on"] = "head" if vanilla else "knn"
    if settings["select_on"] == "head" and method_cfg["loss"] not in HEAD_LOSSES:
        raise ValueError(
            f"select_on: head needs a classifier head, which loss {method_cfg['loss']!r} has not "
            f"(losses with one: {list(HEAD_LOSSES)}); use select_on: knn"
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
