"""The SLURM profile on a real one-node SLURM cluster: every job goes through the scheduler, the data equal a local run.

slurm/setup.sh installs Debian's SLURM (plus munge and MariaDB for sacct) and starts the daemons; the module fixture
stops, by PID and whatever the outcome, the daemons its setup.sh call started. Since that changes the machine, the module
runs only when the environment sets ACFT_TEST_SLURM=1 (.ci/run does); without it, or without root or apt, it skips with
the reason. A two-rule Snakefile proves the machinery on its own; then a reduced tiny configuration of the workflow
runs locally and on SLURM with the repository's profiles.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from tiny_models import save_tiny_model
from tiny_workflow import REPO, copy_code, planned_jobs, snakemake, tiny_config, write_config

torch.set_num_threads(1)
OPT_IN = "ACFT_TEST_SLURM"
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        os.environ.get(OPT_IN) != "1",
        reason=f"installs SLURM, munge and MariaDB and starts five daemons as root: opt in with {OPT_IN}=1",
    ),
]

SLURM_DIR = REPO / "slurm"
# The plugin's defaults (first status check after 40 s, then every 10 s more) suit a busy cluster, not a test.
FAST_STATUS = ("--seconds-between-status-checks", "1", "--slurm-init-seconds-before-status-checks", "1")
# With a broken status query the plugin waits forever; the subprocess timeout kills Snakemake instead.
RUN_TIMEOUT_S = 900
# Wall-clock columns (tuning log) are the only values that may differ between two runs of the same data.
WALL_CLOCK_COLUMNS = {"seconds"}


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running one-node cluster; the daemons this fixture started are stopped afterwards."""
    if os.geteuid() != 0:
        pytest.skip("SLURM test needs root: slurm/setup.sh installs packages and starts system daemons")
    setup = subprocess.run([str(SLURM_DIR / "setup.sh")], capture_output=True, text=True, timeout=900)
    started = re.findall(r"^started:(.*)$", setup.stdout, flags=re.MULTILINE)
    started = started[-1].split() if started else []
    try:
        if setup.returncode == 77:
            pytest.skip(f"SLURM cannot be installed here: {setup.stderr.strip()}")
        assert setup.returncode == 0, f"slurm/setup.sh failed:\n{setup.stdout}\n{setup.stderr}"
        yield
    finally:
        if started:
            stop = subprocess.run(
                [str(SLURM_DIR / "stop.sh"), *started], capture_output=True, text=True, timeout=300
            )
            assert stop.returncode == 0, stop.stderr


@dataclass
class SlurmJob:
    job_id: str
    state: str
    alloc_tres: str
    comment: str
    steps: int  # job steps: one `srun` per Snakemake job the allocation ran


def slurm_jobs(run_output: str) -> list[SlurmJob]:
    """The SLURM jobs of one Snakemake run (by its run ID, the job name the plugin gives every job), from sacct."""
    run_id = re.search(r"SLURM run ID: (\S+)", run_output).group(1)
    query = f"sacct --name {run_id} --starttime now-2days --noheader --parsable2 --format JobID,State,AllocTRES,Comment"
    table = subprocess.run(query.split(), capture_output=True, text=True, check=True).stdout
    rows = [line.split("|") for line in table.splitlines() if line]
    jobs = {
        job_id: SlurmJob(job_id, state, tres, comment, 0)
        for job_id, state, tres, comment in rows
        if "." not in job_id
    }
    for job_id, *_ in rows:
        parent, _, step = job_id.partition(".")
        if step.isdigit():
            jobs[parent].steps += 1
    return list(jobs.values())


def run_both(tmp_path: Path, slurm_args: tuple[str, ...], local_args: tuple[str, ...]):
    """Run the code in tmp_path/{local,slurm}/code; return (local, slurm) results and the slurm dry-run plan."""
    planned = planned_jobs(tmp_path / "slurm", *slurm_args)
    local = snakemake(tmp_path / "local", *local_args, timeout=RUN_TIMEOUT_S)
    assert local.returncode == 0, local.stderr[-5000:]
    slurm = snakemake(tmp_path / "slurm", *slurm_args, *FAST_STATUS, timeout=RUN_TIMEOUT_S)
    assert slurm.returncode == 0, slurm.stderr[-5000:]
    return local, slurm, planned


def declared_local_rules(code: Path) -> set[str]:
    """Rules Snakemake runs itself rather than submitting: `all` (no action) and those marked `localrule: True`."""
    local = {"all"}
    for path in [code / "Snakefile", *sorted((code / "workflow" / "rules").glob("*.smk"))]:
        for name, body in re.findall(
            r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", path.read_text(), flags=re.MULTILINE
        ):
            if re.search(r"^\s+localrule:\s*True", body, flags=re.MULTILINE):
                local.add(name)
    return local


def assert_all_through_slurm(
    run_output: str, jobs: list[SlurmJob], planned: dict[str, int], code: Path
) -> None:
    """Every planned job of a non-local rule ran as one step of a completed SLURM job; the local rules' jobs (and
    nothing else) ran in Snakemake's own process."""
    assert jobs, "no SLURM job recorded for this run"
    assert {job.state for job in jobs} == {"COMPLETED"}, [(job.comment, job.state) for job in jobs]
    local_rules = declared_local_rules(code)
    ran_locally = Counter(re.findall(r"^\s*localrule (\w+):", run_output, flags=re.MULTILINE))
    assert ran_locally == Counter({rule: count for rule, count in planned.items() if rule in local_rules})
    submitted = sum(count for rule, count in planned.items() if rule not in local_rules)
    assert sum(job.steps for job in jobs) == submitted, (planned, jobs)


TRIVIAL_SNAKEFILE = r"""
rule all:
    input: "total.txt"

rule square:
    output: "square/{i}.txt"
    resources: mem_mb=200, runtime=5, jobstep_slots=1
    shell: 'echo "{wildcards.i} $(( {wildcards.i} * {wildcards.i} )) ${{SLURM_JOB_ID:-local}}" > {output}'

rule sum_squares:
    input: expand("square/{i}.txt", i=range(4))
    output: "total.txt"
    resources: mem_mb=300, runtime=5, gpu=1
    shell: 'awk "{{s += \$2}} END {{print s}}" {input} > {output}; echo "${{SLURM_JOB_ID:-local}}" >> {output}'
"""


def test_two_rule_workflow_runs_every_job_through_slurm(slurm_cluster, tmp_path):
    for name in ("local", "slurm"):
        (tmp_path / name / "code").mkdir(parents=True)
        (tmp_path / name / "code" / "Snakefile").write_text(TRIVIAL_SNAKEFILE)
    # The repository's profile, with the four squares grouped two per SLURM job.
    slurm_args = (
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--groups",
        "square=squares",
        "--group-components",
        "squares=2",
    )
    local, slurm, planned = run_both(tmp_path, slurm_args, ("--cores", "2"))
    assert planned == {"all": 1, "square": 4, "sum_squares": 1}

    jobs = slurm_jobs(slurm.stdout + slurm.stderr)
    assert_all_through_slurm(slurm.stdout + slurm.stderr, jobs, planned, tmp_path / "slurm" / "code")
    by_id = {job.job_id: job for job in jobs}
    assert sorted(job.steps for job in jobs) == [1, 2, 2]

    slurm_dir, local_dir = tmp_path / "slurm", tmp_path / "local"
    for i in range(4):
        value, square, job_id = (slurm_dir / "square" / f"{i}.txt").read_text().split()
        assert (value, square) == (str(i), str(i * i))
        assert (local_dir / "square" / f"{i}.txt").read_text().split() == [value, square, "local"]
        # A group runs its members one after another, so it asks for one member's cores and memory, not the sum.
        assert "gres/gpu" not in by_id[job_id].alloc_tres
        assert "cpu=1," in by_id[job_id].alloc_tres and "mem=200M" in by_id[job_id].alloc_tres
    total, total_job = (slurm_dir / "total.txt").read_text().split()
    assert total == (local_dir / "total.txt").read_text().split()[0] == str(sum(i * i for i in range(4)))
    assert "gres/gpu=1" in by_id[total_job].alloc_tres


def reduced_config(backbone_cfg: dict) -> dict:
    """The tiny test configuration cut to one dataset, the frozen backbone and SupCon, one seed: each sequential
    SLURM job costs seconds of scheduling, so the grid is kept to what every stage needs."""
    config = tiny_config(backbone_cfg)
    config["experiments"] = [
        {"datasets": ["instruments"], "backbones": ["tiny"], "methods": ["frozen", "supcon"], "seeds": [0]}
    ]
    return config


def data_files(results: Path) -> list[Path]:
    return sorted(
        p.relative_to(results) for p in results.rglob("*") if p.suffix in {".parquet", ".csv", ".npy"}
    )


def read_rows(path: Path, workdir: Path) -> pa.Table:
    """A Parquet or CSV file's rows, with wall-clock columns dropped and the run's directory in paths masked."""
    table = pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)
    table = table.drop_columns([name for name in table.column_names if name in WALL_CLOCK_COLUMNS])
    for index, field in enumerate(table.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            masked = pc.replace_substring(table.column(index), str(workdir), "<workdir>")
            table = table.set_column(index, field, masked)
    return table


def assert_same_data(local: Path, slurm: Path) -> None:
    """Equal rows in every Parquet and CSV file and equal NumPy arrays under results/ of two run directories."""
    files = data_files(local / "results")
    assert files == data_files(slurm / "results")
    for relative in files:
        paths = [root / "results" / relative for root in (local, slurm)]
        if relative.suffix == ".npy":
            np.testing.assert_array_equal(np.load(paths[0]), np.load(paths[1]), err_msg=str(relative))
        else:
            rows = [read_rows(path, root) for path, root in zip(paths, (local, slurm), strict=True)]
            assert rows[0].equals(rows[1]), f"{relative} differs between the local and the SLURM run"


def test_tiny_workflow_on_slurm_equals_a_local_run(slurm_cluster, tmp_path):
    config = reduced_config(save_tiny_model("wav2vec2_group", tmp_path / "tiny_wav2vec2"))
    for name in ("local", "slurm"):
        copy_code(tmp_path / name / "code")
        write_config(tmp_path / name, config)
    slurm_args = ("--profile", str(tmp_path / "slurm" / "code" / "profiles" / "slurm"))
    local_args = ("--profile", str(tmp_path / "local" / "code" / "profiles" / "local"))
    _, slurm, planned = run_both(tmp_path, slurm_args, local_args)

    jobs = slurm_jobs(slurm.stdout + slurm.stderr)
    assert_all_through_slurm(slurm.stdout + slurm.stderr, jobs, planned, tmp_path / "slurm" / "code")
    # GPU requests reach the scheduler for the GPU stage only.
    for job in jobs:
        is_gpu_stage = job.comment.startswith(("rule_gpu_run", "rule_embed_frozen"))
        assert ("gres/gpu=1" in job.alloc_tres) == is_gpu_stage, job
    assert_same_data(tmp_path / "local", tmp_path / "slurm")
