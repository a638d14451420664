"""The experiment grid: which (dataset, backbone, method, fold, seed) runs the config asks for.

Kept out of the Snakefile so it is unit-tested without Snakemake. A method whose loss is ``none`` is the frozen
backbone: it is extracted once per dataset and backbone and evaluated in every fold with tune seed 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match

from .identity import Run
from .methods import LOSS_PARAMS, TRAINING_KEYS, training_settings
from .probes import PROBES


class ConfigError(ValueError):
    """A config value that passed the schema but does not fit the rest of the config."""


def is_frozen(config: dict, method: str) -> bool:
    return config["methods"][method]["loss"] == "none"


def method_config(config: dict, method: str) -> dict:
    """The method's loss and only the hyper-parameters that loss takes (the schema fills in every default, but
    a supcon run must not depend on, or rerun for, an unused ce_weight), plus a tuned method's training keys
    (sampler, select_on, views: see acft.methods)."""
    entry = config["methods"][method]
    keys = [*LOSS_PARAMS[entry["loss"]], *(TRAINING_KEYS if entry["loss"] != "none" else ())]
    return {"loss": entry["loss"], **{k: entry[k] for k in keys if k in entry}}


def dataset_folds(config: dict, dataset: str) -> list[int]:
    """[0] for a fixed-split dataset, [1..k] for one with k official folds (asked of its adapter)."""
    from .data.adapters import get_adapter

    entry = config["datasets"][dataset]
    k = get_adapter(entry["adapter"]).n_folds(entry.get("options", {}))
    return [0] if k == 0 else list(range(1, k + 1))


def check_references(config: dict) -> None:
    """Every name an experiment uses must be defined; errors name the config key."""
    sections = {"datasets": "datasets", "backbones": "backbones", "methods": "methods"}
    for i, experiment in enumerate(config["experiments"]):
        for key, section in sections.items():
            for name in experiment[key]:
                if name not in config[section]:
                    raise ConfigError(
                        f"experiments[{i}].{key}: '{name}' is not defined under '{section}:' "
                        f"(defined: {sorted(config[section])})"
                    )
    for name, backbone in config["backbones"].items():
        if backbone["family"] == "hf" and not backbone.get("source"):
            raise ConfigError(f"backbones.{name}.source: an hf backbone needs a hub id or local directory")
    for i, external in enumerate(config["probes"]["external"]):
        if external["dataset"] not in config["datasets"]:
            raise ConfigError(
                f"probes.external[{i}].dataset: '{external['dataset']}' is not a defined dataset"
            )


def _filling_defaults(validator_class):
    """The validator class, extended to fill in each property's schema default before checking it (the recipe
    of the jsonschema FAQ, which snakemake.utils.validate follows)."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(key, subschema["default"])
        yield from check_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": properties_with_defaults})


def key_path(parts: Iterable) -> str:
    """``probes.knn.k[0]`` for the path ('probes', 'knn', 'k', 0); "(top level)" for the empty path."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts).lstrip(".")
    return text or "(top level)"


def _one_line(error: ValidationError) -> str:
    # an error under oneOf/anyOf carries the alternatives' errors: report the one that fits best
    error = best_match([error])
    return f"{key_path(error.absolute_path)}: {error.message}"


def validate_config(config: dict, schema_path: str | Path) -> None:
    """Check ``config`` against the JSON schema and fill in every default, in place.

    Unlike snakemake.utils.validate, which prints the whole sub-schema after the error, each error is one
    line naming its key path, e.g. ``probes.linear.weight_decay_grid[0]: -0.001 is less than the minimum
    of 0``; every error is listed, not only the first.

    Raises:
        ConfigError: with one line per violation.
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = _filling_defaults(Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        lines = "\n".join(f"  {_one_line(error)}" for error in errors)
        raise ConfigError(f"the config does not fit {Path(schema_path).name}:\n{lines}")


def check_config(config: dict) -> None:
    """Start-up checks the schema cannot express (run after ``validate_config``); errors name the config key.

    Every name an experiment uses is defined (``check_references``); every dataset names a known adapter and
    only options that adapter takes (a misspelt option would otherwise fail inside the manifest job); every
    tuned method's training keys fit its loss (``acft.methods.training_settings``); the main table's
    ``report.headline_k`` is one of the swept ``probes.knn.k``.
    """
    from .data.adapters import check_options, get_adapter

    check_references(config)
    for name, entry in config["datasets"].items():
        try:
            get_adapter(entry["adapter"])
        except ValueError as error:
            raise ConfigError(f"datasets.{name}.adapter: {error}") from None
        try:
            check_options(entry["adapter"], entry.get("options") or {})
        except ValueError as error:
            raise ConfigError(f"datasets.{name}.options: {error}") from None
    for name, entry in config["methods"].items():
        if entry["loss"] != "none":
            try:
                training_settings(entry)
            except ValueError as error:
                raise ConfigError(f"methods.{name}.{error}") from None
    swept, headline = config["probes"]["knn"]["k"], config["report"]["headline_k"]
    if headline not in swept:
        raise ConfigError(
            f"report.headline_k: {headline} is not among probes.knn.k {swept}, so every kNN column of the "
            "main table would be n/a; add it to probes.knn.k or pick one of them"
        )


def expand_runs(config: dict, fold_lister=dataset_folds) -> list[Run]:
    """All runs of the grid, deduplicated and sorted; frozen methods get seed 0 only."""
    runs = set()
    for experiment in config["experiments"]:
        for dataset in experiment["datasets"]:
            folds = fold_lister(config, dataset)
            wanted = experiment.get("folds")
            if wanted is not None:
                unknown = sorted(set(wanted) - set(folds))
                if unknown:
                    raise ConfigError(
                        f"experiments folds {unknown} do not exist for dataset '{dataset}' (folds {folds})"
                    )
                folds = [f for f in folds if f in wanted]
            for backbone in experiment["backbones"]:
                for method in experiment["methods"]:
                    seeds = [0] if is_frozen(config, method) else experiment.get("seeds", [0])
                    for fold in folds:
                        for seed in seeds:
                            runs.add(Run(dataset, backbone, method, fold, seed))
    return sorted(runs)


def lineage(config: dict, run: Run, stage: str) -> dict:
    """The config sub-trees that determine an output of ``stage`` for ``run`` (its inputs' lineage included).

    Its hash is stamped into result rows; aggregation compares it with the current config so stale rows
    (e.g. after ``--rerun-triggers mtime``) cannot reach a table unnoticed.
    """
    dataset = config["datasets"][run.dataset]
    tree = {
        "dataset": dataset,
        "seed": config["seed"],
        "preprocess": config["preprocess"],
        "backbone": config["backbones"][run.backbone],
        "method": method_config(config, run.method),
    }
    if not is_frozen(config, run.method):
        tree.update(
            tune=config["tune"], val_offset=dataset.get("val_offset", 1), fold=run.fold, tune_seed=run.seed
        )
    if stage == "head":
        return tree
    tree["embed"] = {k: v for k, v in config["embed"].items() if k != "threads"}
    if stage in PROBES:
        tree["probe"] = config["probes"][stage]
        tree["val_offset"] = dataset.get("val_offset", 1)
    elif stage != "embed":
        raise ValueError(f"unknown stage {stage!r}")
    return tree
