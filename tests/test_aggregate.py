"""Aggregation of per-job row files: concatenation, validation, ordering and the stale-config check."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import torch

from acft.report.aggregate import KEY_COLUMNS, StaleResultsError, aggregate
from acft.results import RESULT_COLUMNS, make_rows

torch.set_num_threads(1)


def write_rows(path, method, config_hash="h-current", fold=0, values=(0.5, 0.6), probe="linear"):
    records = [
        {"probe": probe, "metric": metric, "value": v}
        for metric, v in zip(["accuracy", "macro_f1"], values, strict=False)
    ]
    make_rows(
        records, dataset="toy", backbone="bb", method=method, fold=fold, tune_seed=0, config_hash=config_hash
    ).to_parquet(path)
    return str(path)


@pytest.fixture
def row_files(tmp_path):
    files = {
        "supcon": write_rows(tmp_path / "supcon.parquet", "supcon", values=(0.8, 0.7)),
        "frozen": write_rows(tmp_path / "frozen.parquet", "frozen", values=(0.6, 0.5)),
        "ce": write_rows(tmp_path / "ce.parquet", "ce", fold=0, values=(0.7, 0.65)),
    }
    empty = tmp_path / "head.parquet"
    pd.DataFrame({c: pd.Series(dtype=t) for c, t in RESULT_COLUMNS.items()}).to_parquet(empty)
    files["empty"] = str(empty)
    return files


def test_concatenates_sorts_and_writes_both_tables(row_files, tmp_path):
    out_parquet, out_csv = tmp_path / "out/results.parquet", tmp_path / "out/results.csv"
    results = aggregate(list(row_files.values()), out_parquet, out_csv)
    assert len(results) == 6 and list(results.columns) == list(RESULT_COLUMNS)
    assert results["method"].tolist() == ["ce", "ce", "frozen", "frozen", "supcon", "supcon"]
    assert results.equals(results.sort_values(KEY_COLUMNS).reset_index(drop=True))
    pd.testing.assert_frame_equal(pd.read_parquet(out_parquet), results)
    from_csv = pd.read_csv(out_csv, dtype={"layer": str, "shots": str})
    assert from_csv["value"].tolist() == results["value"].tolist()
    assert sorted(os.listdir(tmp_path / "out")) == ["results.csv", "results.parquet"]  # no temp files left


def test_order_does_not_depend_on_input_order(row_files, tmp_path):
    files = list(row_files.values())
    first = aggregate(files, tmp_path / "a.parquet", tmp_path / "a.csv")
    second = aggregate(files[::-1], tmp_path / "b.parquet", tmp_path / "b.csv")
    pd.testing.assert_frame_equal(first, second)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_stale_files_are_listed_exactly(row_files, tmp_path):
    stale_supcon = write_rows(tmp_path / "supcon.parquet", "supcon", config_hash="h-old")
    stale_ce = write_rows(tmp_path / "ce.parquet", "ce", config_hash="h-older")
    expected = {path: "h-current" for path in row_files.values()}
    with pytest.raises(StaleResultsError) as error:
        aggregate(
            list(row_files.values()), tmp_path / "r.parquet", tmp_path / "r.csv", lineage_hashes=expected
        )
    assert sorted(error.value.stale) == sorted([stale_supcon, stale_ce])
    assert "h-old" in str(error.value) and "h-older" in str(error.value) and "allow_stale" in str(error.value)
    assert str(row_files["frozen"]) not in str(error.value) and row_files["empty"] not in str(error.value)
    assert not (tmp_path / "r.parquet").exists()


def test_allow_stale_warns_and_keeps_every_row(row_files, tmp_path):
    write_rows(tmp_path / "ce.parquet", "ce", config_hash="h-old")
    expected = {path: "h-current" for path in row_files.values()}
    with pytest.warns(UserWarning, match="ce.parquet"):
        results = aggregate(
            list(row_files.values()),
            tmp_path / "r.parquet",
            tmp_path / "r.csv",
            lineage_hashes=expected,
            allow_stale=True,
        )
    assert len(results) == 6 and set(results["config_hash"]) == {"h-current", "h-old"}


def test_paths_are_matched_normalised_and_unknown_files_rejected(row_files, tmp_path):
    expected = {path.replace(str(tmp_path), str(tmp_path) + "/."): "h-current" for path in row_files.values()}
    results = aggregate(
        list(row_files.values()), tmp_path / "r.parquet", tmp_path / "r.csv", lineage_hashes=expected
    )
    assert len(results) == 6
    del expected[next(iter(expected))]
    with pytest.raises(ValueError, match="no expected lineage hash"):
        aggregate(
            list(row_files.values()), tmp_path / "r.parquet", tmp_path / "r.csv", lineage_hashes=expected
        )


def test_bad_inputs_name_the_file(row_files, tmp_path):
    bad = tmp_path / "bad.parquet"
    frame = pd.read_parquet(row_files["ce"])
    frame.assign(probe="svm").to_parquet(bad)
    with pytest.raises(ValueError, match="bad.parquet.*unknown probe"):
        aggregate([row_files["ce"], str(bad)], tmp_path / "r.parquet", tmp_path / "r.csv")
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        aggregate([str(tmp_path / "missing.parquet")], tmp_path / "r.parquet", tmp_path / "r.csv")


def test_a_result_reported_twice_is_an_error(row_files, tmp_path):
    copy = write_rows(tmp_path / "copy.parquet", "ce", values=(0.1, 0.2))
    with pytest.raises(ValueError, match="same result more than once"):
        aggregate([row_files["ce"], copy], tmp_path / "r.parquet", tmp_path / "r.csv")


def test_only_empty_files_give_an_empty_table(row_files, tmp_path):
    zero_bytes = tmp_path / "zero.parquet"
    zero_bytes.touch()
    results = aggregate([row_files["empty"], str(zero_bytes)], tmp_path / "r.parquet", tmp_path / "r.csv")
    assert results.empty and list(results.columns) == list(RESULT_COLUMNS)
    assert pd.read_parquet(tmp_path / "r.parquet").empty
