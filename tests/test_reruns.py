"""Incremental reruns: each edit reruns exactly the jobs that depend on it (checked with dry runs on a copy of
a finished tiny workflow, and for code against the modules each job was traced loading), stale rows cannot
reach a table, and an interrupted run recovers."""

import copy
import csv
import io
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from acft.code_inputs import code_files

from tiny_workflow import SNAKEMAKE, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.e2e

REPORT_JOBS = {"aggregate", "tables", "plot_metric_vs_k", "check_fresh", "all"}


@pytest.fixture
def finished(tiny_workflow, tmp_path):
    """A private copy of the finished tiny workflow (mtimes and Snakemake metadata preserved)."""
    source, config = tiny_workflow
    workdir = tmp_path / "copy"
    shutil.copytree(source, workdir, symlinks=True)
    return workdir, copy.deepcopy(config)


def n_runs(config, dataset=None, method=None):
    count = 0
    for experiment in config["experiments"]:
        for ds in experiment["datasets"]:
            for m in experiment["methods"]:
                if (dataset is None or ds == dataset) and (method is None or m == method):
                    count += 1 if config["methods"][m]["loss"] == "none" else len(experiment["seeds"])
    return count


def planned_probes(workdir) -> set[str]:
    """The {probe} wildcards (knn, linear, geometry) of the probe jobs a dry run plans."""
    result = snakemake(workdir, "-n", "--cores", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    return set(re.findall(r"^\s*wildcards:.*\bprobe=(\w+)", result.stdout + result.stderr, re.MULTILINE))


def test_no_change_runs_nothing(finished):
    workdir, _ = finished
    assert planned_jobs(workdir) == {}


def test_knn_setting_reruns_only_knn_probes_and_tables(finished):
    workdir, config = finished
    config["probes"]["knn"]["temperature"] = 0.05
    write_config(workdir, config)
    jobs = planned_jobs(workdir)
    assert jobs.pop("probe") == n_runs(config)
    assert set(jobs) <= REPORT_JOBS | {"tables"}, jobs
    assert planned_probes(workdir) == {"knn"}


def test_new_method_runs_only_its_own_jobs(finished):
    workdir, config = finished
    config["methods"]["supcon_t05"] = {"loss": "supcon", "temperature": 0.05}
    config["experiments"][0]["methods"].append("supcon_t05")
    write_config(workdir, config)
    jobs = planned_jobs(workdir)
    seeds = len(config["experiments"][0]["seeds"])
    for rule, count in (("tune", seeds), ("embed_tuned", seeds), ("probe", 3 * seeds)):
        assert jobs.pop(rule) == count, rule
    assert set(jobs) <= REPORT_JOBS | {"plot_projection", "plot_curves"}, jobs


def test_temperature_reruns_tuning_and_everything_downstream(finished):
    workdir, config = finished
    config["methods"]["supcon"]["temperature"] = 0.2
    write_config(workdir, config)
    jobs = planned_jobs(workdir)
    supcon_runs = n_runs(config, method="supcon")
    for rule, count in (("tune", supcon_runs), ("embed_tuned", supcon_runs), ("probe", 3 * supcon_runs)):
        assert jobs.pop(rule) == count, rule
    assert "preprocess" not in jobs and "manifest" not in jobs and "embed_frozen" not in jobs
    assert set(jobs) <= REPORT_JOBS | {"plot_projection", "plot_curves"}, jobs


SCRIPTS = {  # rule -> its script (workflow/rules/*.smk)
    **dict.fromkeys(["plot_metric_vs_k", "plot_projection", "plot_curves"], "plots.py"),
    **dict.fromkeys(["embed_frozen", "embed_tuned"], "embed.py"),
    **{
        rule: f"{rule}.py"
        for rule in ("manifest", "preprocess", "tune", "probe", "aggregate", "tables", "check_fresh")
    },
}


def package_file(path: str) -> str | None:
    """``.../workflow/acft/probes/knn.py`` -> ``probes/knn.py``; None outside the package."""
    parts = Path(path).parts
    for i in range(len(parts) - 1):
        if parts[i : i + 2] == ("workflow", "acft"):
            return "/".join(parts[i + 2 :])
    return None


def declared_code(workdir) -> dict[str, set[str]]:
    """Rule -> the package files among its jobs' inputs (Snakemake's own record of the finished run)."""
    result = snakemake(workdir, "--cores", "1", "--detailed-summary")
    assert result.returncode == 0, result.stderr[-3000:]
    declared: dict[str, set[str]] = {}
    for row in csv.DictReader(io.StringIO(result.stdout), delimiter="\t"):
        files = {package_file(f) for f in re.split(r"[,\s]+", row["input-file(s)"]) if f}
        declared.setdefault(row["rule"], set()).update(files - {None})
    return declared


def traced_code(workdir) -> dict[str, set[str]]:
    """Rule -> the package files its jobs loaded, written by tests/import_trace/sitecustomize.py."""
    traced: dict[str, set[str]] = {}
    for trace in (workdir / "import_trace").glob("*.tsv"):
        for line in trace.read_text().splitlines():
            rule, path = line.split("\t")
            traced.setdefault(rule, set()).add(package_file(path))
    return traced


def downstream(workdir, rules: set[str]) -> set[str]:
    """Rules that consume, directly or not, the outputs of ``rules`` (from Snakemake's rule graph)."""
    dot = snakemake(workdir, "--cores", "1", "--rulegraph").stdout
    names = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', dot, re.MULTILINE))
    edges = [(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.MULTILINE)]
    found, frontier = set(), set(rules)
    while frontier:
        frontier = {b for a, b in edges if a in frontier} - found
        found |= frontier
    return found


def test_each_rule_declares_exactly_the_package_modules_its_script_imports(tiny_workflow):
    """For every module under workflow/acft, the rules whose code inputs hold it are the rules whose scripts
    import it, directly or not: so an edit to it reruns exactly those. Checked against what each job was traced
    loading when the tiny workflow ran: everything its module-level imports run (Python's own import system,
    independent of our reading of the source), and nothing that no import statement reaches."""
    workdir, _ = tiny_workflow
    declared, traced = declared_code(workdir), traced_code(workdir)
    assert set(traced) == set(declared) - {"all"}
    package = workdir / "code" / "workflow"
    for rule, loaded in traced.items():
        script = package / "scripts" / SCRIPTS[rule]
        imported = {package_file(str(f)) for f in code_files(script, package)}
        certain = {package_file(str(f)) for f in code_files(script, package, deferred=False)}
        assert declared[rule] == imported, (rule, declared[rule] ^ imported)
        assert certain <= loaded <= imported, (rule, certain - loaded, loaded - imported)
    assert {"labels.py", "results.py", "probes/linear.py", "probes/geometry.py"} <= declared["probe"]
    assert {"data/cache.py", "data/splits.py", "labels.py"} <= declared["tune"]  # missed by the lists by hand


@pytest.mark.parametrize("module", ["data/cache.py", "probes/linear.py"])
def test_a_code_edit_reruns_the_rules_that_run_it_and_what_depends_on_them(finished, module):
    workdir, config = finished
    running = {rule for rule, modules in declared_code(workdir).items() if module in modules}
    path = workdir / "code" / "workflow" / "acft" / module
    # a real edit: Snakemake 9 ignores a newer mtime when the file's checksum is the recorded one
    path.write_text(path.read_text() + "\n# an edit\n")
    jobs = planned_jobs(workdir)
    assert set(jobs) == running | downstream(workdir, running), jobs
    every_job = planned_jobs(workdir, "--forceall")
    for rule in running:
        assert jobs[rule] == every_job[rule], rule


def test_stale_rows_stop_the_tables(finished):
    workdir, config = finished
    config["probes"]["knn"]["temperature"] = 0.05
    write_config(workdir, config)
    # mtime-only triggers skip the knn jobs: their rows still carry the old config hash
    result = snakemake(workdir, "--cores", "1", "--rerun-triggers", "mtime")
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "stale" in text.lower() and "results/probe/knn/instruments/tiny/frozen/fold0/seed0.parquet" in text


def test_killed_run_recovers_without_corrupt_outputs(finished):
    workdir, config = finished
    config["methods"]["supcon"]["temperature"] = 0.3  # forces tuning, extraction and probes to run again
    write_config(workdir, config)
    process = subprocess.Popen(
        [
            SNAKEMAKE,
            "--snakefile",
            str(workdir / "code" / "Snakefile"),
            "--directory",
            str(workdir),
            "--cores",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    tune_dir = workdir / "results" / "tune" / "instruments" / "tiny" / "supcon" / "fold0"
    while time.time() < deadline and process.poll() is None:
        if any(tune_dir.rglob("*.tmp")) or any((workdir / "logs" / "tune").rglob("*.log")):
            break
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGKILL)  # snakemake and every job it started
    process.wait()
    assert snakemake(workdir, "--unlock").returncode == 0  # a killed snakemake leaves its lock behind
    result = snakemake(workdir, "--cores", "2", "--rerun-incomplete")
    assert result.returncode == 0, result.stderr[-3000:]
    assert planned_jobs(workdir) == {}
    for parquet in (workdir / "results").rglob("*.parquet"):
        pd.read_parquet(parquet)  # every output reads back
    leftovers = [p for p in (workdir / "results").rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers
