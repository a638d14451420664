# Config loading and validation, plus small helpers that map wildcards to config sub-trees and paths.
# The grid logic lives in the package (acft.plan) so it is tested without Snakemake.
import os
import sys
from dataclasses import asdict
from pathlib import Path

from snakemake.exceptions import WorkflowError

PACKAGE_DIR = Path(workflow.basedir) / "workflow"
# This checkout's package, even without `pip install -e .`, and in front of site-packages, where an editable
# install of another checkout could shadow it (jobs do the same in workflow/scripts/_bootstrap.py).
sys.path.insert(0, str(PACKAGE_DIR))

import acft  # noqa: E402

if Path(acft.__file__).resolve().parent != (PACKAGE_DIR / "acft").resolve():
    raise WorkflowError(
        f"acft was imported from {Path(acft.__file__).parent}, not from this checkout's {PACKAGE_DIR / 'acft'}"
    )

import acft.plan as plan  # noqa: E402
from acft.code_inputs import code_files  # noqa: E402
from acft.identity import Run  # noqa: E402
from acft.plan import is_frozen, lineage, method_config  # noqa: E402
from acft.probes import PROBES as PROBE_REGISTRY  # noqa: E402
from acft.provenance import config_hash  # noqa: E402

# One line per error, naming the key (snakemake.utils.validate would print the whole sub-schema after it).
plan.validate_config(config, PACKAGE_DIR / "schemas" / "config.schema.yaml")
plan.check_config(config)
RUNS = plan.expand_runs(config)

# Paths of the per-run outputs, written once (logs/ and benchmarks/ mirror them).
RUN = "{dataset}/{backbone}/{method}/fold{fold}/seed{seed}"
FROZEN_RUN = "{dataset}/{backbone}/{method}"  # a frozen backbone's embeddings serve every fold and seed
CACHE_DIR = "results/data/{dataset}/sr{sr}"
VOCAB = "results/data/{dataset}/labels.txt"
TUNE_DIR = f"results/tune/{RUN}"
EMBED = f"results/embed/{RUN}.parquet"
FROZEN_EMBED = f"results/embed/{FROZEN_RUN}.parquet"
PROBE_ROWS = f"results/probe/{{probe}}/{RUN}.parquet"
# knn, linear, geometry: the values of the {probe} wildcard, each a key of config ``probes``
PROBES = list(PROBE_REGISTRY)


wildcard_constraints:
    dataset="|".join(config["datasets"]) or "__none__",
    backbone="|".join(config["backbones"]) or "__none__",
    method="|".join(config["methods"]) or "__none__",
    fold=r"\d+",
    seed=r"\d+",
    sr=r"\d+",
    probe="|".join(PROBES),


def script_code(script):
    """Code inputs of a rule: the package files its script runs, found from its imports (acft.code_inputs).

    Snakemake's code trigger sees only the script: with these, an edit to any module the job runs reruns it,
    and an edit to any other module does not. Relative to the working directory, so a moved or copied
    workflow does not look like a changed input set.
    """
    return [
        os.path.relpath(f)
        for f in code_files(PACKAGE_DIR / "scripts" / script, PACKAGE_DIR)
    ]


def tuned_methods():
    return [m for m in config["methods"] if not is_frozen(config, m)]


def frozen_methods():
    return [m for m in config["methods"] if is_frozen(config, m)]


def backbone_sr(backbone):
    return config["backbones"][backbone]["sample_rate"]


def cache_file(name):
    """Input function: a file of the audio cache at the backbone's sample rate."""
    path = os.path.join(CACHE_DIR, name)
    return lambda w: path.format(dataset=w.dataset, sr=backbone_sr(w.backbone))


def embedding_file(run):
    """Frozen backbones are extracted once per dataset and reused by every fold and seed."""
    return (FROZEN_EMBED if is_frozen(config, run.method) else EMBED).format(
        **asdict(run)
    )


def lineage_hash(stage=None):
    """Params function: hash of the config sub-trees behind a run's output of ``stage`` (default: the probe)."""
    return lambda w: config_hash(
        lineage(config, Run.from_wildcards(w), stage or w.probe)
    )


def tune_dir(run):
    return TUNE_DIR.format(**asdict(run))


def row_files():
    """Every tidy-row file of the grid, mapped to the lineage hash its rows must carry."""
    files = {}
    for run in RUNS:
        for probe in PROBES:
            files[PROBE_ROWS.format(probe=probe, **asdict(run))] = config_hash(
                lineage(config, run, probe)
            )
        if not is_frozen(config, run.method):
            files[f"{tune_dir(run)}/head.parquet"] = config_hash(
                lineage(config, run, "head")
            )
    return files


# computed once at parse time: rule all, aggregate and check_fresh all need them
ROW_FILES = row_files()
FRESH_MARKER = f"results/checks/fresh-{config_hash(ROW_FILES)}.ok"


def run_datasets():
    return sorted({run.dataset for run in RUNS})


def get_final_output():
    outputs = [
        "results/results.csv",
        FRESH_MARKER,
    ]
    for dataset in run_datasets():
        outputs += expand(
            "results/tables/{dataset}.{ext}", dataset=dataset, ext=("md", "tex", "csv")
        )
        outputs += [
            f"results/plots/{dataset}_metric_vs_k.png",
            f"results/plots/{dataset}_projection.png",
        ]
        if any(
            run.dataset == dataset and not is_frozen(config, run.method) for run in RUNS
        ):
            outputs.append(f"results/plots/{dataset}_curves.png")
    return outputs


def projection_embeddings(dataset):
    """One embedding file per backbone/method for the 2-D projection plot: the first fold, tune seed 0 (or lowest)."""
    chosen = {}
    for run in RUNS:
        if run.dataset == dataset:
            key = f"{run.backbone}/{run.method}"
            chosen.setdefault(key, run)
    return {key: embedding_file(run) for key, run in chosen.items()}


def tuned_runs(dataset):
    return [r for r in RUNS if r.dataset == dataset and not is_frozen(config, r.method)]


def probe_embedding(wildcards):
    return embedding_file(Run.from_wildcards(wildcards))
