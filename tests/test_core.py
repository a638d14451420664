"""Shared contracts: the fold convention, label encodings, tidy rows, provenance and atomic writes."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from acft import provenance
from acft.data.splits import fold_ids, roles_for_fold
from acft.io import atomic_path
from acft.labels import build_vocab, encode_multi_hot, encode_single, is_multilabel
from acft.results import RESULT_COLUMNS, make_rows


def kfold_manifest(k=5, per_fold=3):
    folds = np.repeat(np.arange(1, k + 1), per_fold)
    return pd.DataFrame({"split": [None] * len(folds), "fold": pd.array(folds, dtype="Int64")})


def test_kfold_rounds_hold_out_test_and_next_fold_for_val():
    manifest = kfold_manifest()
    assert fold_ids(manifest) == [1, 2, 3, 4, 5]
    for fold in range(1, 6):
        roles = roles_for_fold(manifest, fold)
        folds = manifest["fold"].to_numpy()
        assert set(folds[roles == "test"]) == {fold}
        assert set(folds[roles == "val"]) == {fold % 5 + 1}
        assert set(folds[roles == "train"]) == set(range(1, 6)) - {fold, fold % 5 + 1}
    # every clip is tested exactly once over the rounds
    tested = sum((roles_for_fold(manifest, f) == "test").astype(int) for f in range(1, 6))
    assert (tested == 1).all()
    assert set(manifest["fold"][roles_for_fold(manifest, 2, val_offset=2) == "val"]) == {4}


def test_fixed_split_round_and_errors():
    manifest = pd.DataFrame({"split": ["train", "val", "test"], "fold": pd.array([None] * 3, dtype="Int64")})
    assert fold_ids(manifest) == [0]
    assert roles_for_fold(manifest, 0).tolist() == ["train", "val", "test"]
    with pytest.raises(ValueError, match="outside"):
        roles_for_fold(kfold_manifest(), 6)
    with pytest.raises(ValueError, match="fixed-split"):
        roles_for_fold(kfold_manifest(), 0)
    with pytest.raises(ValueError, match="equal the test fold"):
        roles_for_fold(kfold_manifest(), 1, val_offset=5)


def test_label_encodings():
    lists = [["dog"], ["cat"], ["dog"]]
    vocab = build_vocab(lists)
    assert vocab == ["cat", "dog"] and not is_multilabel(lists)
    assert encode_single(lists, vocab).tolist() == [1, 0, 1]
    multi = [["a", "c"], [], ["b"]]
    assert is_multilabel(multi)
    np.testing.assert_array_equal(encode_multi_hot(multi, ["a", "b", "c"]), [[1, 0, 1], [0, 0, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match="exactly one"):
        encode_single(multi, ["a", "b", "c"])


def test_tidy_rows_are_validated():
    rows = make_rows(
        [{"probe": "knn_majority", "k": 5, "metric": "accuracy", "value": 0.5}],
        dataset="d",
        backbone="b",
        method="m",
        fold=0,
        tune_seed=1,
        config_hash="abc",
    )
    assert list(rows.columns) == list(RESULT_COLUMNS)
    assert rows.loc[0, "shots"] == "all" and rows.loc[0, "probe_seed"] == 0
    with pytest.raises(ValueError, match="unknown probe"):
        make_rows(
            [{"probe": "svm", "metric": "accuracy", "value": 0.5}],
            dataset="d",
            backbone="b",
            method="m",
            fold=0,
            tune_seed=0,
            config_hash="",
        )
    with pytest.raises(ValueError, match="missing values"):
        make_rows(
            [{"probe": "linear", "metric": "accuracy", "value": 0.5}],
            dataset="d",
            backbone="b",
            method="m",
            fold=0,
            tune_seed=0,
        )


def test_config_hash_is_order_independent_and_sensitive_to_values():
    assert provenance.config_hash({"a": 1, "b": [1, 2]}) == provenance.config_hash({"b": [1, 2], "a": 1})
    assert provenance.config_hash({"a": 1}) != provenance.config_hash({"a": 2})


def test_provenance_paths_mirror_results():
    assert provenance.provenance_path("results/tables/x.md") == Path("results/provenance/tables/x.md.json")
    assert provenance.provenance_path("/w/results/results.csv") == Path(
        "/w/results/provenance/results.csv.json"
    )
    with pytest.raises(ValueError, match="not under a 'results' folder"):
        provenance.provenance_path("/w/table.csv")


def test_provenance_written_only_on_success(tmp_path):
    results = tmp_path / "results"
    out = results / "tables" / "table.csv"
    out.parent.mkdir(parents=True)
    (out.parent / "table.csv.provenance.json").write_text("{}")  # where an older version put the record
    with provenance.track(out, {"k": [1, 5]}, rule="demo") as facts:
        out.write_text("x\n")
        facts["rows"] = 1
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "table.csv"
    ]  # the tables folder holds tables only
    record = json.loads((results / "provenance" / "tables" / "table.csv.json").read_text())
    assert record == provenance.read_provenance(out)
    assert record["params_hash"] == provenance.config_hash({"k": [1, 5]})
    assert record["rows"] == 1 and record["rule"] == "demo"
    assert {"torch", "pandas", "python"} <= set(record["packages"])
    assert record["wall_seconds"] >= 0 and record["start"] <= record["end"]
    failed = results / "failed.csv"
    with pytest.raises(RuntimeError):
        with provenance.track(failed, {}, rule="demo"):
            raise RuntimeError("boom")
    assert not provenance.provenance_path(failed).exists()


def test_atomic_path_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_atomic_path_removes_what_a_killed_write_of_its_output_left(tmp_path):
    target = tmp_path / "waveforms.npy"
    stale = [tmp_path / ".waveforms.npy.a1b2c3d4.npy.tmp", tmp_path / ".waveforms.npy.zz_9yy_8.npy.tmp"]
    kept = [
        tmp_path / ".waveforms.npy.a1b2c3d4.tmp",  # another suffix: another writer's
        tmp_path / ".index.parquet.a1b2c3d4.npy.tmp",  # another output's
        tmp_path / ".waveforms.npy.x.a1b2c3d4.npy.tmp",  # the temp of output "waveforms.npy.x"
        tmp_path / "waveforms.npy.a1b2c3d4.npy.tmp",  # not hidden: no temp name of ours
    ]
    for path in stale + kept:
        path.write_text("left")
    with atomic_path(target, suffix=".npy.tmp") as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(tmp_path.iterdir()) == sorted([target, *kept])


def test_provenance_of_a_failed_job_is_never_left_for_a_missing_output(tmp_path):
    out, other = tmp_path / "results" / "model.safetensors", tmp_path / "results" / "curve.png"
    records = tmp_path / "results" / "provenance"
    # a record from an earlier run whose output Snakemake has since deleted
    records.mkdir(parents=True)
    (records / "model.safetensors.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with provenance.track([out, other], {}, rule="tune"):
            out.write_text("weights")
            raise RuntimeError("killed after the first output")
    assert not list(records.iterdir())
    # the block ends without writing every output: no record for any of them
    with pytest.raises(FileNotFoundError, match="curve.png"):
        with provenance.track([out, other], {}, rule="tune"):
            out.write_text("weights")
    assert not list(records.iterdir())


def test_provenance_records_are_all_written_or_none(tmp_path, monkeypatch):
    outputs = [tmp_path / "results" / "a.csv", tmp_path / "results" / "b.csv"]
    outputs[0].parent.mkdir()
    real_write_json, calls = provenance.write_json, []

    def failing_second_write(path, obj):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        real_write_json(path, obj)

    monkeypatch.setattr(provenance, "write_json", failing_second_write)
    with pytest.raises(OSError, match="disk full"):
        with provenance.track(outputs, {}, rule="tables"):
            for path in outputs:
                path.write_text("x\n")
    records = tmp_path / "results" / "provenance"
    assert len(calls) == 2 and not list(records.glob("*.json"))
    assert not list(records.glob(".*"))  # no temp file either
