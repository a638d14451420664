"""The config schema's defaults, for tests that call package functions directly.

The workflow fills every default once, at start (``acft.plan.validate_config``); package functions take the
filled sections as explicit arguments. These helpers fill a section the same way from a few overrides.
"""

from __future__ import annotations

import copy
from pathlib import Path

from acft.plan import method_config, validate_config

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA_FAMILIES = ("resemblyzer", "hf")


def filled(config: dict) -> dict:
    """A deep copy of ``config`` validated against the schema, every default filled in."""
    config = copy.deepcopy(config)
    validate_config(config, SCHEMA)
    return config


def tune_config(**overrides) -> dict:
    """The ``tune`` section; ``freeze`` (not a config key, a trainer argument for tools and tests) passes through."""
    freeze = overrides.pop("freeze", None)
    section = filled({"tune": overrides})["tune"]
    return section if freeze is None else {**section, "freeze": freeze}


def backbone_config(family: str = "tiny", **overrides) -> dict:
    """One ``backbones`` entry; a test-only family (e.g. "tiny") gets the schema's defaults of an hf entry."""
    entry = {"family": family if family in SCHEMA_FAMILIES else "hf", **overrides}
    return {**filled({"backbones": {"b": entry}})["backbones"]["b"], "family": family}


def method(loss: str, **overrides) -> dict:
    """A method entry as the tune rule passes it: the loss, its parameters and the training keys."""
    return method_config(filled({"methods": {"m": {"loss": loss, **overrides}}}), "m")


def preprocess_settings(**overrides) -> dict:
    """``acft.data.preprocess.preprocess``'s config arguments: the ``preprocess`` section (less on_bad_audio, which
    the rule applies) and the top-level ``seed``."""
    config = filled({"preprocess": {k: v for k, v in overrides.items() if k != "seed"}})
    settings = {key: config["preprocess"][key] for key in ("length_s", "crop", "pad", "dtype")}
    return {**settings, "seed": overrides.get("seed", config["seed"])}


def probe_settings(probe: str, **overrides) -> dict:
    """One ``probes`` section (knn, linear or geometry)."""
    return filled({"probes": {probe: overrides}})["probes"][probe]


def knn_probe_args(**overrides) -> dict:
    """``acft.probes.knn.knn_probe``'s config arguments from the ``probes.knn`` section; ``overrides`` by name."""
    section = probe_settings("knn")
    settings = {"ks": section["k"], **{key: section[key] for key in ("temperature", "chunk_size", "search")}}
    return {**settings, **overrides}


def linear_probe_args(**overrides) -> dict:
    """``acft.probes.linear.linear_probe``'s config arguments from ``probes.linear`` (seed: the first probe
    seed); ``overrides`` by name."""
    section = probe_settings("linear")
    settings = {key: section[key] for key in ("weight_decay_grid", "max_iter", "device")}
    return {**settings, "seed": section["probe_seeds"][0], **overrides}
