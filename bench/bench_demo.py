"""End-to-end time of the demo (README's first command, ``make demo`` after set-up) on 2 cores, from a clean state.

What is measured: the wall time of the demo recipe of the Makefile, ``.venv/bin/snakemake --cores 2 --configfile
config.yaml`` (98 jobs: render the two demo datasets, tune, extract, probe, tables and plots), each run starting
from nothing (no results/, logs/, benchmarks/ or .snakemake/). Goal: <= 10 min.

How: for every run the repository's files (tracked ones plus untracked, not ignored ones, so work in progress is
included; as they are in the working tree) are copied into a fresh temp directory that links the repository's
``.venv`` (set up once by ``make setup``; never modified here). The Snakemake command of ``make demo`` runs there,
not ``make demo`` itself, so a requirements file newer than the venv stamp can never trigger a pip install into
the shared venv. The copy is not timed; the repository's own results/ are never touched. Each run must finish
with exit code 0, all its jobs done and the tables and results.csv written. No network is needed (the demo renders
its datasets from the SoundFont pretty_midi ships and uses resemblyzer's packaged weights).

    .venv/bin/python bench/bench_demo.py            # 5 runs (~45 min on 2 cores)
    .venv/bin/python bench/bench_demo.py --runs 1   # one run
    .venv/bin/python bench/bench_demo.py --dry-run  # check the set-up: copy, plan (snakemake -n), no timing goal
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from common import REPO, describe, summary, timed, write_result

GOAL_S = 600.0
CORES = 2


def repo_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files of the working tree (what a checkout plus local work holds)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted({name for name in out.split("\0") if name and (REPO / name).is_file()})


def fresh_copy(destination: Path) -> Path:
    """A clean checkout-like copy of the repository sharing its .venv; returns the copy's root."""
    root = destination / "acft"
    for name in repo_files():
        if name.startswith(("results/", "logs/", "benchmarks/", ".snakemake/", "bench/results/")):
            continue
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


def demo_command(*extra: str) -> list[str]:
    """The demo recipe of the Makefile: $(VENV)/bin/snakemake --cores $(CORES) --configfile config.yaml."""
    return [".venv/bin/snakemake", "--cores", str(CORES), "--configfile", "config.yaml", *extra]


def run_demo(root: Path, dry_run: bool) -> tuple[float, int]:
    """(seconds, jobs) of one demo run (or its dry run) in ``root``."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    extra = ("-n",) if dry_run else ()
    seconds, result = timed(
        lambda: subprocess.run(demo_command(*extra), cwd=root, capture_output=True, text=True, env=env)
    )
    text = result.stdout + result.stderr
    if result.returncode != 0:
        raise SystemExit(f"the demo failed (exit {result.returncode}) in {root}:\n{text[-5000:]}")
    if dry_run:
        match = re.search(r"^total\s+(\d+)\s*$", text, re.MULTILINE)
        if not match:
            raise SystemExit(f"no job total in the dry run:\n{text[-3000:]}")
        return seconds, int(match.group(1))
    done = re.findall(r"^(\d+) of (\d+) steps \(100%\) done$", text, re.MULTILINE)
    if not done or done[-1][0] != done[-1][1]:
        raise SystemExit(f"the demo did not finish all its jobs:\n{text[-5000:]}")
    missing = [p for p in ("results/results.csv", "results/tables") if not (root / p).exists()]
    if missing:
        raise SystemExit(f"the demo finished without {missing}")
    return seconds, int(done[-1][1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs, each from a clean copy (default 5)")
    parser.add_argument("--dry-run", action="store_true", help="plan only (snakemake -n): checks the set-up")
    parser.add_argument("--keep", action="store_true", help="keep the temp copies (paths are printed)")
    args = parser.parse_args()
    if not (REPO / ".venv" / ".installed").exists():
        raise SystemExit("no .venv/.installed: run `make setup` first")

    times, jobs = [], 0
    for index in range(args.runs):
        temp = Path(tempfile.mkdtemp(prefix="acft-bench-demo-"))
        try:
            root = fresh_copy(temp)
            seconds, jobs = run_demo(root, args.dry_run)
            times.append(seconds)
            print(f"run {index + 1}/{args.runs}: {seconds:.1f} s, {jobs} jobs", flush=True)
        finally:
            if args.keep:
                print(f"kept {temp}")
            else:
                shutil.rmtree(temp, ignore_errors=True)

    what = "demo dry run (snakemake -n)" if args.dry_run else f"demo end to end on {CORES} cores"
    met = summary(times)["median"] <= GOAL_S
    goal = (
        "(no goal for a dry run)"
        if args.dry_run
        else f"-> goal <= {GOAL_S / 60:.0f} min {'met' if met else 'MISSED'}"
    )
    print(describe(f"{what}, {jobs} jobs, clean state", times) + f" {goal}")
    if args.dry_run:
        return  # a set-up check, not a measurement: no result file
    write_result(
        "demo",
        {
            "what": "make demo's snakemake command, 2 cores, from a clean copy of the repository",
            "command": " ".join(demo_command()),
            "jobs": jobs,
            "goal_s": GOAL_S,
            "demo": {**summary(times), "times": times, "goal_met": met},
        },
    )


if __name__ == "__main__":
    main()
