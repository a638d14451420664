"""Smoke tests of bench/bench_scaling.py and bench/bench_tune_overhead.py at tiny sizes: every code path runs
in a subprocess (as a user runs them) and the JSON record has the fields bench/report.py renders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_bench(script: str, args: list[str], results: Path, timeout: int = 120) -> dict:
    env = os.environ | {
        "BENCH_RESULTS_DIR": str(results),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TQDM_DISABLE": "1",
    }
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(next(results.glob("*.json")).read_text())


def test_scaling_smoke(tmp_path, monkeypatch):
    record = run_bench(
        "bench_scaling.py",
        [
            "--sizes",
            "12",
            "24",
            "--max-s",
            "2",
            "--classes",
            "2",
            "--max-extract-hours",
            "0",
            "--work",
            str(tmp_path / "work"),
        ],
        tmp_path / "results",
    )
    assert record["benchmark"] == "scaling" and record["sizes"] == [12, 24]
    assert set(record["stages"]) == {
        "manifest",
        "preprocess",
        "extract_hf",
        "extract_resemblyzer",
        "knn",
        "linear",
    }
    for stage, summary in record["stages"].items():
        if stage == "extract_resemblyzer":  # above --max-extract-hours: skipped and said so, never silently
            assert all("skipped" in row for row in summary["rows"]) and summary["time_exponent"] is None
            continue
        assert summary["sizes_run"] == [12, 24]
        assert isinstance(summary["time_exponent"], float)
        for row in summary["rows"]:
            assert row["seconds"] > 0 and row["peak_rss_bytes"] > 0 and row["peak_anon_bytes"] > 0
        assert ("memory_bounded" in summary) == (stage in ("preprocess", "extract_hf"))
    assert record["stages"]["knn"]["met"] is None
    assert len(record["skipped"]) == 2 and "max-extract-hours" in record["skipped"][0]
    for size in record["footprint"]:
        cache = size["cache_bytes"]
        assert size["wav_bytes"] > 0 and size["audio_hours"] > 0
        assert cache["float16"] == cache["int16"] < cache["float32"]
    assert not (tmp_path / "work" / "n24" / "sr16000").exists()  # caches removed without --keep

    # The table renders from this record, and the per-dataset disk rows apply the measured bytes per hour.
    monkeypatch.syspath_prepend(
        str(REPO / "bench")
    )  # bench/ is scripts, not a package; undone after the test
    import report

    rows = report.rows_scaling(record) + report.rows_dataset_footprint(record)
    assert all(len(row) == 6 for row in rows)
    fsd50k = next(row for row in rows if "FSD50K" in row[0])
    assert fsd50k[1] == "float32 25.0 GB; float16 / int16 12.5 GB"  # 108.3 h x 3600 s x 16,000 x 4 (or 2) B


def test_tune_overhead_smoke(tmp_path):
    record = run_bench(
        "bench_tune_overhead.py",
        ["--clips", "48", "--epochs", "1", "--runs", "1", "--max-s", "1.5", "--classes", "4"],
        tmp_path / "results",
    )
    assert record["benchmark"] == "tune_overhead"
    assert record["ratio"] > 0 and record["ratio_epoch"] > 0 and isinstance(record["met"], bool)
    assert record["loss_max_abs_diff"] == 0.0  # the bare loop did the trainer's steps exactly
    shares = record["epoch_split_share"]
    assert set(shares) == {
        "data_loading",
        "forward_backward_step",
        "val_knn",
        "checkpointing",
        "logging",
        "other",
    }
    assert abs(sum(shares.values()) - 1) < 1e-9
    assert record["epoch_split_s"]["checkpointing"] > 0 and record["epoch_split_s"]["val_knn"] > 0
    assert {"model_build", "pretrained_val", "final_outputs"} <= set(record["one_off_s"])


def test_rerun_bench_config_passes_the_workflows_start_up_checks(tmp_path, monkeypatch):
    """bench_rerun.py writes its own config (11 datasets); the Snakefile's start-up checks must accept it, or the
    benchmark dies at its first dry run (it did once, when report.headline_k had to be one of probes.knn.k)."""
    from acft import plan

    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import bench_rerun

    config = bench_rerun.bench_config(tmp_path / "sounds", n_datasets=11, n_folds=2, seeds=[0])
    plan.validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml")
    plan.check_config(config)
    assert len(plan.expand_runs(config, fold_lister=lambda config, dataset: [0, 1])) > 0
