"""Shared helpers of the benchmark scripts: the machine, repeated timing, and one JSON record per script.

Every script measures the project's code and the baseline in the same process on the same data, prints a
one-line summary per side and the ratio of the medians, and writes ``bench/results/<name>.json`` (the table in
``bench/README.md`` is copied from those files).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
# BENCH_RESULTS_DIR redirects write_result (e.g. tests/test_bench_smoke.py writes into a temp dir)
RESULTS_DIR = Path(os.environ.get("BENCH_RESULTS_DIR") or BENCH_DIR / "results")
FSDD = REPO.parent / "shared" / "data" / "fsdd"

sys.path.insert(0, str(REPO / "workflow"))  # the acft package, as the workflow's scripts import it


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# /proc/cpuinfo flag -> the name the bench tables use: what decides which float32 / bfloat16 kernels run
ISA_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX-512-BF16", "avx512f": "AVX-512", "avx2": "AVX2"}


def isa_flags() -> list[str]:
    """The CPU's vector ISA extensions among ``ISA_FLAGS``, widest first."""
    path = Path("/proc/cpuinfo")
    flags = set()
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return [name for flag, name in ISA_FLAGS.items() if flag in flags]


def machine() -> dict:
    """What the numbers were measured on."""
    import torch

    return {
        "cpu": cpu_model(),
        "isa": isa_flags(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "amx_bf16": "AMX-BF16" in isa_flags(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "git_commit": _git_commit(),
    }


def _git_commit() -> str:
    """Short HEAD commit, with "-dirty" when tracked code under workflow/ or bench/ differs from it.

    The results and the table the benchmarks themselves rewrite do not count: otherwise every script after the
    first of ``run_all.sh`` would call a clean checkout dirty.
    """
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "workflow",
                "bench",
                ":(exclude)bench/results",
                ":(exclude)bench/README.md",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    except OSError:
        return "unknown"
    return (head.stdout.strip() or "unknown") + ("-dirty" if dirty.stdout.strip() else "")


def fsdd_subset(work: Path, clips: int):
    """The first ``clips`` FSDD recordings (sorted by path) as a manifest, written to work/subset.parquet."""
    from acft.data.manifest import build_manifest

    manifest = build_manifest("fsdd", {"adapter": "fsdd", "options": {"root": str(FSDD)}}, work)
    subset = manifest.sort_values("path").head(clips)
    subset.to_parquet(work / "subset.parquet", index=False)
    return subset


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def repeat(fn: Callable[[], object], runs: int, warmup: int = 1) -> tuple[list[float], object]:
    """Wall-clock seconds of ``runs`` calls after ``warmup`` untimed ones; also the last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(runs):
        seconds, result = timed(fn)
        times.append(seconds)
    return times, result


def summary(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": len(times)}


def describe(label: str, times: list[float], unit: str = "s", per: float | None = None) -> str:
    """'label: median 1.23 s (min 1.20, max 1.30; 5 runs)', or a rate when ``per`` items are done per run."""
    s = summary(times)
    if per is not None:
        rates = [per / t for t in times]
        return (
            f"{label}: median {statistics.median(rates):,.1f} {unit} "
            f"(min {min(rates):,.1f}, max {max(rates):,.1f}; {s['runs']} runs)"
        )
    return f"{label}: median {s['median']:.3f} s (min {s['min']:.3f}, max {s['max']:.3f}; {s['runs']} runs)"


def write_result(name: str, record: dict) -> Path:
    """Write bench/results/<name>.json with the machine attached; returns the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    record = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), **record}
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return path
