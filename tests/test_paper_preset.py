"""The presets plan their whole job graphs: the paper preset against fixture datasets in the official layouts,
the instruments preset (the earlier demo task) on its own."""

import pytest
import yaml

from fixtures_datasets import (
    make_esc50,
    make_fsd50k,
    make_gtzan,
    make_nsynth,
    make_speech_commands,
    make_us8k,
    make_vocalsound,
)
from tiny_workflow import REPO, planned_jobs

pytestmark = pytest.mark.e2e
PRESET = REPO / "workflow" / "presets" / "paper.yaml"


@pytest.fixture(scope="module")
def paper_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("paper")
    preset = yaml.safe_load(PRESET.read_text())
    builders = {
        "esc50": make_esc50,
        "us8k": make_us8k,
        "speech_commands": make_speech_commands,
        "gtzan": make_gtzan,
        "nsynth": make_nsynth,
        "vocalsound": make_vocalsound,
        "fsd50k": make_fsd50k,
    }
    for name, build in builders.items():
        build(workdir / preset["datasets"][name]["options"]["root"])
    return workdir, preset


def test_paper_grid_dry_run_lists_the_whole_job_graph(paper_workdir):
    workdir, preset = paper_workdir
    jobs = planned_jobs(workdir, "--configfile", str(PRESET), snakefile=REPO / "Snakefile")
    folds = {
        "esc50": 5,
        "us8k": 10,
        "speech_commands": 1,
        "gtzan": 10,
        "nsynth": 1,
        "vocalsound": 1,
        "fsd50k": 1,
    }
    n_backbones = 4
    tune = evaluations = 0
    for experiment in preset["experiments"]:
        for dataset in experiment["datasets"]:
            tuned = [m for m in experiment["methods"] if m != "frozen"]
            tune += folds[dataset] * n_backbones * len(tuned) * len(experiment["seeds"])
            evaluations += folds[dataset] * n_backbones * (1 + len(tuned) * len(experiment["seeds"]))
    assert jobs["manifest"] == 7
    assert jobs["preprocess"] == 7  # every backbone here takes 16 kHz
    assert jobs["tune"] == tune == 732  # (28 single-label rounds x 2 + 1 x 5 methods) x 4 backbones x 3 seeds
    assert jobs["embed_frozen"] == 7 * n_backbones
    assert jobs["embed_tuned"] == tune
    assert jobs["probe"] == 3 * evaluations  # knn, linear and geometry of every evaluation
    assert jobs["tables"] == 7


def test_instruments_preset_dry_run_lists_its_job_graph(tmp_path):
    preset_path = REPO / "workflow" / "presets" / "instruments.yaml"
    preset = yaml.safe_load(preset_path.read_text())
    assert preset["datasets"]["instruments"]["adapter"] == "demo_instruments"
    jobs = planned_jobs(tmp_path, "--configfile", str(preset_path), snakefile=REPO / "Snakefile")
    (experiment,) = preset["experiments"]
    assert experiment["datasets"] == ["instruments"]
    tune = len([m for m in experiment["methods"] if m != "frozen"]) * len(experiment["seeds"])
    assert jobs["manifest"] == jobs["preprocess"] == jobs["embed_frozen"] == jobs["tables"] == 1
    assert jobs["tune"] == jobs["embed_tuned"] == tune == 6
    assert jobs["probe"] == 3 * (1 + tune)  # knn, linear and geometry of every evaluation
