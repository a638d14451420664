"""The experiment grid and the lineage hashes that make stale rows detectable."""

import copy

import pytest

from acft.plan import ConfigError, Run, check_references, expand_runs, lineage
from acft.provenance import config_hash

CONFIG = {
    "seed": 0,
    "datasets": {
        "fixed": {"adapter": "x", "options": {}, "val_offset": 1},
        "kfold": {"adapter": "y", "options": {}, "val_offset": 1},
    },
    "backbones": {"bb": {"family": "resemblyzer"}},
    "methods": {
        "frozen": {"loss": "none"},
        "ce": {"loss": "ce"},
        "supcon": {"loss": "supcon", "temperature": 0.1},
    },
    "experiments": [
        {
            "datasets": ["fixed", "kfold"],
            "backbones": ["bb"],
            "methods": ["frozen", "ce", "supcon"],
            "seeds": [0, 1],
        }
    ],
    "preprocess": {"length_s": None},
    "tune": {"epochs": 2},
    "embed": {"batch_size": 4, "threads": 1},
    "probes": {"knn": {"k": [1]}, "linear": {"max_iter": 5}, "geometry": {"max_clips": 10}, "external": []},
}


def folds(config, dataset):
    return [0] if dataset == "fixed" else [1, 2, 3]


def test_grid_expands_folds_and_seeds_with_one_frozen_run_per_fold():
    runs = expand_runs(CONFIG, fold_lister=folds)
    fixed = [r for r in runs if r.dataset == "fixed"]
    assert sorted(fixed) == sorted(
        [Run("fixed", "bb", "frozen", 0, 0)]
        + [Run("fixed", "bb", m, 0, s) for m in ("ce", "supcon") for s in (0, 1)]
    )
    kfold = [r for r in runs if r.dataset == "kfold"]
    assert len(kfold) == 3 * (1 + 2 * 2)
    assert len(runs) == len(set(runs))


def test_fold_selection_and_unknown_folds():
    config = copy.deepcopy(CONFIG)
    config["experiments"][0]["folds"] = [2]
    config["experiments"][0]["datasets"] = ["kfold"]
    assert {r.fold for r in expand_runs(config, fold_lister=folds)} == {2}
    config["experiments"][0]["folds"] = [7]
    with pytest.raises(ConfigError, match="folds \\[7\\]"):
        expand_runs(config, fold_lister=folds)


def test_undefined_names_are_reported_with_their_key():
    config = copy.deepcopy(CONFIG)
    config["experiments"][0]["methods"] = ["frozen", "simclr"]
    with pytest.raises(ConfigError, match=r"experiments\[0\]\.methods: 'simclr'"):
        check_references(config)
    config = copy.deepcopy(CONFIG)
    config["backbones"]["ast"] = {"family": "hf", "source": None}
    with pytest.raises(ConfigError, match="backbones.ast.source"):
        check_references(config)


def test_lineage_separates_the_probes_and_follows_upstream_changes():
    run = Run("fixed", "bb", "supcon", 0, 1)
    base = {
        stage: config_hash(lineage(CONFIG, run, stage)) for stage in ("knn", "linear", "geometry", "head")
    }
    assert len(set(base.values())) == 4

    knn_edit = copy.deepcopy(CONFIG)
    knn_edit["probes"]["knn"]["k"] = [1, 5]
    after = {stage: config_hash(lineage(knn_edit, run, stage)) for stage in base}
    assert after["knn"] != base["knn"] and all(after[s] == base[s] for s in ("linear", "geometry", "head"))

    temperature = copy.deepcopy(CONFIG)
    temperature["methods"]["supcon"]["temperature"] = 0.5
    assert all(config_hash(lineage(temperature, run, s)) != base[s] for s in base)

    threads = copy.deepcopy(CONFIG)
    threads["embed"]["threads"] = 8  # where a job runs must not change what it computes
    assert all(config_hash(lineage(threads, run, s)) == base[s] for s in base)


def test_frozen_lineage_ignores_tuning_settings():
    run = Run("fixed", "bb", "frozen", 0, 0)
    edited = copy.deepcopy(CONFIG)
    edited["tune"]["epochs"] = 50
    assert config_hash(lineage(edited, run, "knn")) == config_hash(lineage(CONFIG, run, "knn"))


def test_loss_parameter_table_matches_the_losses_and_the_schema():
    import yaml

    from acft.methods import LOSS_JACCARD_THRESHOLD, LOSS_PARAMS, TRAINING_KEYS
    from acft.tune.losses import LOSSES

    from conftest import REPO

    assert set(LOSS_PARAMS) - {"none"} == set(LOSSES)
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    method_schema = schema["properties"]["methods"]["additionalProperties"]["properties"]
    assert set(method_schema["loss"]["enum"]) == set(LOSS_PARAMS)
    # every loss parameter and training key has its default (and range) in the schema, and only there
    names = {key for params in LOSS_PARAMS.values() for key in params}
    assert set(method_schema) == {"loss", *names, *TRAINING_KEYS}
    assert all("default" in method_schema[key] for key in (*names, *TRAINING_KEYS))
    # null jaccard_threshold: the loss's own value, for exactly the losses that take it
    assert method_schema["jaccard_threshold"]["default"] is None
    assert set(LOSS_JACCARD_THRESHOLD) == {
        n for n, params in LOSS_PARAMS.items() if "jaccard_threshold" in params
    }


def test_method_config_keeps_only_the_parameters_its_loss_takes():
    from acft.plan import method_config

    config = {
        "methods": {"s": {"loss": "supcon", "temperature": 0.2, "ce_weight": 0.5, "jaccard_power": 1.0}}
    }
    assert method_config(config, "s") == {"loss": "supcon", "temperature": 0.2}
