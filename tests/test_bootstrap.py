"""A job imports the acft package of the checkout whose workflow runs, never a competing install's.

The venv running these tests holds an editable install of this repository (a ``.pth`` line naming its
``workflow/``), so a private copy of the workflow is exactly the case of a second checkout sharing a venv with
another one; a decoy ``acft`` on PYTHONPATH and one added through a ``.pth`` file compete as well.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_workflow import REPO, SNAKEMAKE

DECOY = "raise ImportError('the decoy acft was imported')\n"


def checkout_copy(destination: Path) -> Path:
    """A second checkout: workflow/ (package and scripts) copied, with a script that reports its acft."""
    shutil.copytree(REPO / "workflow", destination / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    (destination / "workflow" / "scripts" / "where.py").write_text(
        "import _bootstrap  # noqa: F401\n"
        "import acft\n"
        "from pathlib import Path\n"
        "Path(snakemake.output[0]).write_text(acft.__file__)\n"
    )
    return destination


def decoy_package(directory: Path) -> Path:
    (directory / "acft").mkdir(parents=True)
    (directory / "acft" / "__init__.py").write_text(DECOY)
    return directory


def environment(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env | extra


def test_a_snakemake_job_runs_its_own_checkouts_package(tmp_path, checkout):
    # the package path goes on sys.path at parse time, as common.smk does; Snakemake's script preamble then
    # appends the parent's sys.path to the job's, behind site-packages
    (checkout / "Snakefile").write_text(
        "import sys\n"
        'sys.path.insert(0, workflow.basedir + "/workflow")\n\n'
        'rule where:\n    output:\n        "where.txt",\n    script:\n        "workflow/scripts/where.py"\n'
    )
    decoys = decoy_package(tmp_path / "decoy")
    result = subprocess.run(
        [SNAKEMAKE, "--snakefile", str(checkout / "Snakefile"), "--directory", str(tmp_path / "run")]
        + ["--cores", "1", "where.txt"],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment(PYTHONPATH=str(decoys)),  # ahead of site-packages and its editable install of REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
    used = Path((tmp_path / "run" / "where.txt").read_text())
    assert used == checkout / "workflow" / "acft" / "__init__.py"


@pytest.fixture
def checkout(tmp_path) -> Path:
    return checkout_copy(tmp_path / "checkout")


def run_bootstrap(
    checkout: Path, code: str, *, at_start: str = "", **env: str
) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter of the venv, after ``at_start`` (standing in for more .pth files of
    site-packages) and what Snakemake's preamble does: the workflow's sys.path entries (the checkout's package
    folder among them) and the scripts directory appended to sys.path."""
    package_parent, scripts = checkout / "workflow", checkout / "workflow" / "scripts"
    preamble = f"import sys; sys.path.extend([{str(package_parent)!r}, {str(scripts)!r}])\n"
    return subprocess.run(
        [sys.executable, "-c", at_start + preamble + code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=checkout,
        env=environment(**env),
    )


@pytest.mark.parametrize("competitor", ["venv editable install", "PYTHONPATH", "pth"])
def test_bootstrap_puts_the_checkout_first(tmp_path, checkout, competitor):
    # the venv's editable install of REPO competes in every case; a decoy package joins it in two
    decoys = decoy_package(tmp_path / "decoy")
    at_start, env = "", {}
    if competitor == "pth":
        site_dir = tmp_path / "site"
        site_dir.mkdir()
        (site_dir / "__editable__.acft-0.1.0.pth").write_text(f"{decoys}\n")
        at_start = f"import site; site.addsitedir({str(site_dir)!r})\n"
    elif competitor == "PYTHONPATH":
        env = {"PYTHONPATH": str(decoys)}
    result = run_bootstrap(
        checkout, "import _bootstrap, acft; print(acft.__file__)", at_start=at_start, **env
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == checkout / "workflow" / "acft" / "__init__.py"


def test_bootstrap_refuses_an_acft_already_imported_from_elsewhere(checkout):
    result = run_bootstrap(checkout, "import acft\nimport _bootstrap\n")  # acft: the venv's install of REPO
    assert result.returncode != 0
    assert f"acft was already imported from {REPO / 'workflow' / 'acft'}" in result.stderr
    assert f"this checkout's {checkout / 'workflow'}" in result.stderr
