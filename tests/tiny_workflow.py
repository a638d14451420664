"""A tiny configuration of the whole workflow and helpers to run Snakemake on a private copy of the code.

The copy lets rerun tests edit code and config without touching the repository.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def tiny_config(backbone_cfg: dict) -> dict:
    return {
        "seed": 0,
        "datasets": {
            "instruments": {
                "adapter": "demo_instruments",
                "options": {
                    "programs": [0, 19, 24, 40, 56, 73],
                    "max_notes_per_zone": 2,
                    "clip_seconds": 0.5,
                    "note_seconds": 0.3,
                },
            },
            "mixtures": {
                "adapter": "demo_mixtures",
                "options": {
                    "n_train": 48,
                    "n_val": 16,
                    "n_test": 16,
                    "clip_seconds": 0.5,
                    "note_seconds": 0.3,
                },
            },
        },
        "backbones": {"tiny": backbone_cfg},
        "methods": {
            "frozen": {"loss": "none"},
            "ce": {"loss": "ce"},
            "bce": {"loss": "bce"},
            "supcon": {"loss": "supcon", "temperature": 0.1},
            "jaccard_supcon": {"loss": "jaccard_supcon", "temperature": 0.1},
        },
        "experiments": [
            {
                "datasets": ["instruments"],
                "backbones": ["tiny"],
                "methods": ["frozen", "ce", "supcon"],
                "seeds": [0],
            },
            {
                "datasets": ["mixtures"],
                "backbones": ["tiny"],
                "methods": ["frozen", "bce", "jaccard_supcon"],
                "seeds": [0],
            },
        ],
        "tune": {"epochs": 1, "classes_per_batch": 4, "clips_per_class": 2, "lr_candidates": [1.0e-3]},
        "embed": {"batch_size": 8},
        "probes": {
            "knn": {"k": [1, 3], "shots": [1, "all"]},
            "linear": {"weight_decay_grid": [0.0, 1.0e-3], "max_iter": 20},
            "geometry": {"max_clips": 200},
        },
        "report": {"sign_flips": 200, "headline_k": 3},  # the main table reads a swept k
    }


def copy_code(destination: Path) -> Path:
    """Copy the Snakefile and workflow/ (package included) to ``destination``; return the Snakefile copy."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "Snakefile", destination / "Snakefile")
    shutil.copytree(REPO / "workflow", destination / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        REPO / "envs", destination / "envs"
    )  # rules name their conda envs; Snakemake records them
    shutil.copytree(REPO / "profiles", destination / "profiles")
    return destination / "Snakefile"


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def snakemake(workdir: Path, *args: str, snakefile: Path | None = None, timeout: float = 900, **kwargs):
    snakefile = snakefile or (workdir / "code" / "Snakefile")
    return subprocess.run(
        [SNAKEMAKE, "--snakefile", str(snakefile), "--directory", str(workdir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def planned_jobs(workdir: Path, *args: str, snakefile: Path | None = None) -> dict[str, int]:
    """Rule -> job count of a dry run (parsed from Snakemake's "Job stats" table)."""
    result = snakemake(workdir, "-n", "--cores", "1", *args, snakefile=snakefile)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        if match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts
