"""The workflow end to end with Snakemake: one session-scoped run of a tiny configuration, many assertions.

The tiny configuration renders a few demo classes and mixtures, uses a tiny random-init wav2vec2 saved with
save_pretrained (so the transformers loading path runs offline), tunes for one epoch, and runs every probe.
"""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from acft.provenance import provenance_path, read_provenance

from tiny_workflow import REPO, SNAKEMAKE, snakemake

pytestmark = pytest.mark.e2e


def test_dry_run_of_the_demo_lists_preprocessing_of_both_tasks(tmp_path):
    result = snakemake(
        tmp_path,
        "-n",
        "--configfile",
        str(REPO / "config.yaml"),
        "--cores",
        "1",
        snakefile=REPO / "Snakefile",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    for dataset in ("pitch", "chords"):
        assert f"results/data/{dataset}/sr16000/waveforms.npy" in text


def test_lint_is_clean():
    result = subprocess.run([SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True, timeout=120)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-3000:]
    assert "Lints for" not in text, text[-3000:]


def test_snakemake_files_are_formatted():
    snakefmt = str(Path(sys.executable).with_name("snakefmt"))
    result = subprocess.run(
        [snakefmt, "--check", "Snakefile", "workflow/rules"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_final_output_exists(tiny_workflow):
    workdir, _ = tiny_workflow
    for dataset in ("instruments", "mixtures", "mine"):
        for ext in ("md", "tex", "csv"):
            assert (workdir / "results" / "tables" / f"{dataset}.{ext}").stat().st_size > 0
        for plot in ("metric_vs_k", "projection", "curves"):
            assert (workdir / "results" / "plots" / f"{dataset}_{plot}.png").stat().st_size > 1000


def test_results_cover_every_method_and_probe(tiny_workflow):
    workdir, config = tiny_workflow
    results = pd.read_csv(workdir / "results" / "results.csv")
    for experiment in config["experiments"]:
        for dataset in experiment["datasets"]:
            for method in experiment["methods"]:
                rows = results[(results.dataset == dataset) & (results.method == method)]
                probes = set(rows.probe)
                assert {"linear", "knn_majority", "knn_weighted", "geometry"} <= probes, (
                    dataset,
                    method,
                    probes,
                )
                seeds = {0} if method == "frozen" else set(experiment["seeds"])
                assert set(rows.tune_seed) == seeds
    own = results[
        (results.dataset == "mine") & (results.probe == "knn_majority") & (results.metric == "accuracy")
    ]
    assert set(own.method) == {"frozen", "supcon"} and (own.n_test > 0).all()
    head = results[results.probe == "head"]
    assert set(head.method) == {"ce", "bce"}
    shots = results[(results.dataset == "instruments") & (results.probe == "knn_majority")].shots
    assert set(shots.astype(str)) == {"1", "all"}


def test_embeddings_follow_the_parquet_contract(tiny_workflow):
    workdir, _ = tiny_workflow
    files = sorted((workdir / "results" / "embed").rglob("*.parquet"))
    # frozen once per dataset; instruments: ce, supcon; mixtures: bce, jaccard_supcon; mine: supcon
    assert len(files) == 3 + 2 + 2 + 1
    for path in files:
        table = pq.read_table(path)
        schema = table.schema
        assert schema.field("clip_id").type == pa.string()
        assert schema.field("labels").type == pa.list_(pa.string())
        embedding = schema.field("embedding").type
        assert pa.types.is_fixed_size_list(embedding) and embedding.value_type == pa.float32()
        metadata = {k.decode(): v.decode() for k, v in schema.metadata.items()}
        assert {"acft.backbone", "acft.params_hash", "acft.pooling", "acft.identity"} <= set(metadata)
        dataset = path.relative_to(workdir / "results" / "embed").parts[0]
        manifest = pd.read_parquet(workdir / "results" / "data" / dataset / "manifest.parquet")
        assert sorted(table.column("clip_id").to_pylist()) == sorted(manifest.clip_id)


def test_tuned_runs_keep_checkpoint_and_logs(tiny_workflow):
    workdir, _ = tiny_workflow
    run = workdir / "results" / "tune" / "instruments" / "tiny" / "supcon" / "fold0" / "seed0"
    meta = json.loads((run / "meta.json").read_text())
    assert meta["chosen_lr"] == 1.0e-3
    log = pd.read_csv(run / "log.csv")
    assert len(log) >= 1 and log["train_loss"].notna().all()
    assert not (run / "resume").exists()


def test_every_output_has_provenance(tiny_workflow):
    workdir, _ = tiny_workflow
    outputs = [
        workdir / "results" / "data" / "instruments" / "manifest.parquet",
        workdir / "results" / "data" / "instruments" / "labels.txt",
        workdir / "results" / "data" / "instruments" / "sr16000" / "index.parquet",
        workdir / "results" / "data" / "instruments" / "sr16000" / "waveforms.npy",
        workdir / "results" / "embed" / "instruments" / "tiny" / "frozen.parquet",
        workdir / "results" / "probe" / "knn" / "instruments" / "tiny" / "ce" / "fold0" / "seed0.parquet",
        workdir / "results" / "results.csv",
        workdir / "results" / "tables" / "instruments.md",
    ]
    for output in outputs:
        record = read_provenance(output)
        assert len(record["params_hash"]) == 16 and record["packages"]["torch"] == "2.11.0"
        assert record["git_commit"] is None or len(record["git_commit"]) >= 40
        assert record["wall_seconds"] >= 0
    # one record per output, in the provenance tree only: the folders a reader opens hold no records
    results, records = workdir / "results", workdir / "results" / "provenance"
    assert not [p for p in results.rglob("*provenance*") if records not in (p, *p.parents)]
    for record in records.rglob("*.json"):
        assert (results / record.relative_to(records).with_suffix("")).is_file(), record
    for shown in [*(results / "tables").iterdir(), *(results / "plots").iterdir()]:
        assert provenance_path(shown).is_file(), shown


def test_rerun_with_no_change_runs_nothing(tiny_workflow):
    workdir, _ = tiny_workflow
    result = snakemake(workdir, "-n", "--cores", "1")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_html_report_renders(tiny_workflow):
    workdir, _ = tiny_workflow
    result = snakemake(workdir, "--report", str(workdir / "report.html"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (workdir / "report.html").stat().st_size > 10_000
