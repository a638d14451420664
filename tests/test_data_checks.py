"""What the data of a run can only show once it is read: each case is logged and counted where results are read.

An empty class folder (stats.json), a k above the train clips (probe log, effective_k rows, table notes), a test
class without a train clip (probe log, a counting row, table notes).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from schema_defaults import probe_settings

from acft.data.manifest import build_manifest
from acft.identity import Run
from acft.probes.run import run_probe
from acft.report.tables import render_tables

from fixtures_datasets import make_folder_dataset

torch.set_num_threads(1)
RUN = Run("toy", "bb", "frozen", fold=0, seed=0)


def test_empty_class_folders_are_logged_and_counted_in_stats(tmp_path, caplog):
    root = tmp_path / "mine"
    make_folder_dataset(root, {"cat": 10, "dog": 10})
    (root / "owl").mkdir()
    (root / "owl" / "notes.txt").write_text("recordings to come\n")  # a non-audio file only
    (root / "bat" / "take2").mkdir(parents=True)  # nested, but empty
    out = tmp_path / "results" / "data" / "mine"
    with caplog.at_level(logging.WARNING):
        build_manifest("mine", {"adapter": "folder", "options": {"root": str(root)}}, out)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["empty_class_folders"] == ["bat", "owl"]
    assert stats["class_counts"] == {"cat": 10, "dog": 10}
    assert "class folder(s) ['bat', 'owl']" in caplog.text and str(root) in caplog.text
    assert (out / "labels.txt").read_text().split() == ["cat", "dog"]


def test_stats_of_a_dataset_without_empty_folders_say_so(tmp_path):
    root = tmp_path / "mine"
    make_folder_dataset(root, {"cat": 10, "dog": 10})
    build_manifest("mine", {"adapter": "folder", "options": {"root": str(root)}}, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["empty_class_folders"] == []


def write_embeddings(path, labels: list[list[str]], split: list[str], dim: int = 4, seed: int = 0):
    """An embedding file (clip_id, split, fold, labels, embedding) of random unit-scale points."""
    points = np.random.default_rng(seed).normal(size=(len(labels), dim)).astype(np.float32)
    table = pa.table(
        {
            "clip_id": pa.array([f"clip{i}" for i in range(len(labels))], pa.string()),
            "split": pa.array(split, pa.string()),
            "fold": pa.array([None] * len(labels), pa.int32()),
            "labels": pa.array(labels, pa.list_(pa.string())),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(points.reshape(-1)), dim),
        }
    )
    pq.write_table(table, path)
    return path


@pytest.fixture
def owl_only_in_test(tmp_path):
    """6 train clips (cat, dog); val and test also hold owl, which no train clip has."""
    labels = [["cat"], ["dog"]] * 3 + [["cat"], ["dog"], ["owl"]] * 2 + [["cat"], ["dog"], ["owl"]] * 3
    split = ["train"] * 6 + ["val"] * 6 + ["test"] * 9
    path = write_embeddings(tmp_path / "emb.parquet", labels, split)
    (tmp_path / "labels.txt").write_text("cat\ndog\nowl\n")
    return path, tmp_path / "labels.txt"


def test_large_k_and_unseen_test_classes_are_logged_counted_and_noted(owl_only_in_test, tmp_path, caplog):
    path, vocab = owl_only_in_test
    knn_settings = probe_settings("knn", k=[1, 10], temperature=0.07)
    linear_settings = probe_settings("linear", weight_decay_grid=[0.0], max_iter=5, device="cpu")
    with caplog.at_level(logging.WARNING):
        knn_rows = run_probe("knn", path, vocab, tmp_path / "knn.parquet", run=RUN, settings=knn_settings)
        linear_rows = run_probe(
            "linear", path, vocab, tmp_path / "linear.parquet", run=RUN, settings=linear_settings
        )
    assert "probes.knn.k [10] exceed the 6 train clips" in caplog.text
    assert "test class(es) ['owl'] have no train clip" in caplog.text

    effective = knn_rows[(knn_rows.metric == "effective_k") & (knn_rows.k == 10)]
    assert set(effective.value) == {6.0}
    for rows, pairs in (
        (knn_rows, {(p, k) for p in ("knn_majority", "knn_weighted") for k in (1, 10)}),
        (linear_rows, {("linear", 0)}),
    ):
        unseen = rows[rows.metric == "test_classes_without_train"]
        assert set(zip(unseen.probe, unseen.k, strict=True)) == pairs and set(unseen.value) == {1.0}

    rows = pd.concat([knn_rows, linear_rows], ignore_index=True)
    render_tables(
        rows, tmp_path / "tables", settings={"knn": knn_settings, "linear": linear_settings}, headline_k=10
    )
    notes = (tmp_path / "tables" / "toy.md").read_text().split("Notes:")[1]
    assert (
        "a k above the train clips of a run is clamped to them (every train clip votes): k = 10 used 6."
        in notes
    )
    assert "1 run(s) have test classes without a train clip (at most 1)" in notes


def knn_rows(tmp_path, caplog, labels, split, vocab: str, k: int):
    """kNN probe rows of a written embedding file, the warnings it logs captured by ``caplog``."""
    path = write_embeddings(tmp_path / "emb.parquet", labels, split)
    (tmp_path / "labels.txt").write_text(vocab)
    with caplog.at_level(logging.WARNING):
        return run_probe(
            "knn",
            path,
            tmp_path / "labels.txt",
            tmp_path / "k.parquet",
            run=RUN,
            settings=probe_settings("knn", k=[k]),
        )


def test_no_counting_row_and_no_note_when_every_test_class_is_trained(tmp_path, caplog):
    labels = [["cat"], ["dog"]] * 6
    rows = knn_rows(tmp_path, caplog, labels, ["train"] * 6 + ["val"] * 2 + ["test"] * 4, "cat\ndog\n", k=5)
    assert caplog.text == ""
    assert "test_classes_without_train" not in set(rows.metric)
    render_tables(rows, tmp_path / "tables", settings={"knn": {"k": [5]}}, headline_k=5)
    text = (tmp_path / "tables" / "toy.md").read_text()
    assert "clamped" not in text and "without a train clip" not in text


def test_multilabel_test_class_without_train_clip_is_counted(tmp_path, caplog):
    labels = [["a", "b"], ["a"], ["b"]] * 2 + [["a", "c"], ["b"]] + [["c"], ["a", "b"], ["a"]]
    split = ["train"] * 6 + ["val"] * 2 + ["test"] * 3
    rows = knn_rows(tmp_path, caplog, labels, split, "a\nb\nc\n", k=3)
    assert "test class(es) ['c'] have no train clip" in caplog.text
    assert set(rows[rows.metric == "test_classes_without_train"].value) == {1.0}
