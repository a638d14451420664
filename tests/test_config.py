"""The config is validated at workflow start: a bad key or value stops the run with a message naming it."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from acft.plan import ConfigError, check_config, validate_config

from conftest import REPO

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
DEMO = yaml.safe_load((REPO / "config.yaml").read_text())
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
# a user's CSV dataset with the misspelt option of issue 12 (label_delimiter)
MISSPELT_CSV = {
    "adapter": "csv",
    "options": {"root": "/data/mine", "csv": "mine.csv", "label_delimeter": ";"},
}


def dry_run(tmp_path, config: dict | str) -> subprocess.CompletedProcess:
    """``snakemake -n`` on ``config`` (a dict, or the config file's text as it is)."""
    (tmp_path / "config.yaml").write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return subprocess.run(
        [
            SNAKEMAKE,
            "-n",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def edited(**changes):
    config = copy.deepcopy(DEMO)
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return config


@pytest.mark.parametrize(
    ("config", "names"),
    [
        (edited(epochs=8), ["epochs"]),  # unknown top-level key (belongs under tune:)
        (edited(tune__epochs="eight"), ["eight", "epochs"]),
        (edited(tune__lr_candidates=[]), ["lr_candidates"]),
        (edited(probes__knn__temprature=0.1), ["temprature"]),
        (edited(backbones__resemblyzer__pooling="max"), ["max", "pooling"]),
        (edited(preprocess__on_bad_audio="ignore"), ["ignore", "on_bad_audio"]),
        (edited(methods__supcon__loss="simclr"), ["simclr", "loss"]),
        (edited(probes__linear__weight_decay_grid=[-0.1]), ["probes.linear.weight_decay_grid[0]"]),
        (edited(report__headline_k=7), ["report.headline_k", "probes.knn.k"]),
        (edited(datasets__mine=MISSPELT_CSV), ["datasets.mine.options", "label_delimeter"]),
        (  # the demo renderer's options are checked at start too
            edited(datasets__pitch__options__notes_per_uni=12),
            ["datasets.pitch.options", "notes_per_uni", "notes_per_unit"],
        ),
    ],
)
def test_bad_key_or_value_stops_the_run_naming_it(tmp_path, config, names):
    result = dry_run(tmp_path, config)
    assert result.returncode != 0
    for name in names:
        assert name in result.stderr + result.stdout, (
            f"error does not name {name!r}:\n{result.stderr[-2000:]}"
        )


def test_undefined_method_in_an_experiment_is_named(tmp_path):
    config = copy.deepcopy(DEMO)
    config["experiments"][0]["methods"].append("simclr")
    result = dry_run(tmp_path, config)
    assert result.returncode != 0
    assert "experiments[0].methods: 'simclr'" in result.stderr + result.stdout


def test_a_schema_error_is_one_line_naming_the_key(tmp_path):
    result = dry_run(tmp_path, edited(tune__epochs="eight"))
    output = result.stderr + result.stdout
    assert result.returncode != 0
    assert "tune.epochs: 'eight' is not of type 'integer'" in output
    assert "Failed validating" not in output and "On instance" not in output  # no sub-schema dump


def start_up_error(config: dict) -> str:
    """The message of the start-up checks (schema, then the checks it cannot express) for ``config``."""
    with pytest.raises(ConfigError) as error:
        validate_config(config, SCHEMA_PATH)
        check_config(config)
    return str(error.value)


@pytest.mark.parametrize(
    ("config", "line"),
    [
        (
            edited(tune__lr_candidates=[1.0e-4, -1.0e-4]),
            "tune.lr_candidates[1]: -0.0001 is less than or equal to the minimum of 0",
        ),
        (
            edited(tune__lr_candidates=[0.0]),
            "tune.lr_candidates[0]: 0.0 is less than or equal to the minimum",
        ),
        (
            edited(probes__linear__weight_decay_grid=[0.0, -1.0e-3]),
            "probes.linear.weight_decay_grid[1]: -0.001 is less than the minimum of 0",
        ),
        (edited(probes__knn__shots=[0]), "probes.knn.shots[0]: 0 is less than the minimum of 1"),
        (
            edited(report__headline_k=7),
            "report.headline_k: 7 is not among probes.knn.k [1, 5, 10, 20, 50], so every kNN column",
        ),
        (
            edited(report__headline_k=3, probes__knn__k=[1, 5]),
            "report.headline_k: 3 is not among probes.knn.k [1, 5]",
        ),
        (
            edited(datasets__mine=MISSPELT_CSV),
            "datasets.mine.options: adapter 'csv': unknown option(s) ['label_delimeter'] "
            "('label_delimeter': did you mean 'label_delimiter'?)",
        ),
        (edited(datasets__mine={"adapter": "csvv"}), "datasets.mine.adapter: unknown dataset adapter 'csvv'"),
        (
            edited(methods__supcon__select_on="head"),
            "methods.supcon.select_on: head needs a classifier head, which loss 'supcon' has not",
        ),
    ],
)
def test_start_up_checks_name_the_key(config, line):
    assert line in start_up_error(config)


def test_every_schema_error_is_listed_one_line_each():
    config = edited(tune__epochs="eight", probes__linear__weight_decay_grid=[-1.0], surprise=1)
    message = start_up_error(config)
    assert message.splitlines()[1:] == [
        "  (top level): Additional properties are not allowed ('surprise' was unexpected)",
        "  probes.linear.weight_decay_grid[0]: -1.0 is less than the minimum of 0",
        "  tune.epochs: 'eight' is not of type 'integer'",
    ]


def test_validation_fills_in_the_defaults():
    config = copy.deepcopy(DEMO)
    validate_config(config, SCHEMA_PATH)
    assert config["report"]["headline_k"] == 5 and config["probes"]["knn"]["k"] == [1, 5, 10, 20, 50]
    check_config(config)  # the demo passes


def walk(schema, path="config"):
    """Every property schema in the config schema: (dotted path, its schema, whether its parent requires it)."""
    for key, sub in schema.get("properties", {}).items():
        yield f"{path}.{key}", sub, key in schema.get("required", [])
        yield from walk(sub, f"{path}.{key}")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from walk(extra, f"{path}.<name>")
    items = schema.get("items")
    if isinstance(items, dict):
        yield from walk(items, f"{path}[]")


def test_every_schema_key_is_described_and_has_a_default_unless_required():
    keys = list(walk(SCHEMA))
    assert len(keys) > 60
    for path, sub, required in keys:
        assert sub.get("description"), f"{path} has no description"
        assert ("default" in sub) != required, f"{path}: give a default, or mark it required (not both)"


def test_every_object_rejects_unknown_keys():
    def objects(schema, path="config"):
        if schema.get("type") == "object" and "properties" in schema:
            yield path, schema
        for key, sub in schema.get("properties", {}).items():
            yield from objects(sub, f"{path}.{key}")
        for key in ("additionalProperties", "items"):
            if isinstance(schema.get(key), dict):
                yield from objects(schema[key], f"{path}.{key}")

    for path, schema in objects(SCHEMA):
        assert schema.get("additionalProperties") is False, f"{path} accepts unknown keys"


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    text = (REPO / "config.yaml").read_text() + "oops: [unclosed\n"
    result = dry_run(tmp_path, text)
    assert result.returncode != 0
    line = text.count("\n") + 1  # the parser stops at the end of the stream, after the last line
    output = result.stdout + result.stderr  # Snakemake prints its errors to stdout
    assert f'in "config.yaml", line {line}' in output, output[-2000:]
