"""Probe runners: embedding Parquet in, validated tidy rows out (synthetic files and real FSDD audio)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from acft.embeddings import read_embeddings
from acft.identity import Run
from acft.plan import ConfigError
from acft.probes.run import few_shot_positions, run_probe
from acft.results import RESULT_COLUMNS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from schema_defaults import probe_settings  # noqa: E402

torch.set_num_threads(1)
RUN = Run("toy", "bb", "frozen", fold=0, seed=0)


def write_embeddings(path, labels, columns, split=None, fold=None):
    """Parquet with the embedding-file schema: clip_id, split, fold, labels, fixed-size float32 lists."""
    n = len(labels)
    arrays = {
        "clip_id": pa.array([f"clip{i}" for i in range(n)], pa.string()),
        "split": pa.array(split if split is not None else [None] * n, pa.string()),
        "fold": pa.array(fold if fold is not None else [None] * n, pa.int32()),
        "labels": pa.array(labels, pa.list_(pa.string())),
    }
    for name, matrix in columns.items():
        flat = pa.array(np.asarray(matrix, np.float32).reshape(-1), pa.float32())
        arrays[name] = pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])
    pq.write_table(pa.table(arrays), path)
    return path


def blobs(n, n_classes, dim, rng, spread=0.4):
    centres = rng.normal(size=(n_classes, dim))
    classes = rng.integers(0, n_classes, n)
    return centres[classes] + spread * rng.normal(size=(n, dim)), classes


@pytest.fixture
def fixed_split_file(tmp_path):
    rng = np.random.default_rng(0)
    points, classes = blobs(120, 3, 6, rng)
    vocab = ["cat", "dog", "owl"]
    split = np.array(["train"] * 60 + ["val"] * 30 + ["test"] * 30)
    labels = [[vocab[c]] for c in classes]
    columns = {"embedding": points, "embedding_L0": rng.normal(size=(120, 4)), "embedding_L2": points[:, :3]}
    path = write_embeddings(tmp_path / "emb.parquet", labels, columns, split=list(split))
    (tmp_path / "labels.txt").write_text("\n".join(vocab) + "\n")
    return path, tmp_path / "labels.txt", split


def test_reader_returns_rows_matrices_and_layer_order(fixed_split_file):
    path, _, split = fixed_split_file
    rows, columns, _ = read_embeddings(path)
    assert list(columns) == ["embedding", "embedding_L0", "embedding_L2"]
    assert columns["embedding"].dtype == np.float32 and columns["embedding"].shape == (120, 6)
    assert (rows["split"].to_numpy() == split).all() and rows["fold"].isna().all()
    np.testing.assert_array_equal(columns["embedding_L2"], columns["embedding"][:, :3])


def test_run_knn_writes_valid_rows_per_layer_shot_and_k(fixed_split_file, tmp_path):
    path, vocab, _ = fixed_split_file
    settings = probe_settings("knn", k=[1, 5, 100], shots=[2, "all"])
    rows = run_probe("knn", path, vocab, tmp_path / "out" / "knn.parquet", run=RUN, settings=settings)
    assert list(rows.columns) == list(RESULT_COLUMNS)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "out" / "knn.parquet").astype(RESULT_COLUMNS), rows
    )
    assert set(rows.layer) == {"last", "0", "2"} and set(rows.shots) == {"2", "all"}
    assert set(rows.probe) == {"knn_majority", "knn_weighted"} and set(rows.k) == {1, 5, 100}
    assert set(rows[rows.shots == "all"].n_train) == {60} and set(rows[rows.shots == "2"].n_train) == {6}
    assert set(rows.n_test) == {30}
    clamped = rows[(rows.k == 100) & (rows.metric == "effective_k")]
    assert set(zip(clamped.shots, clamped.value, strict=True)) == {("all", 60.0), ("2", 6.0)}
    accuracy = rows[
        (rows.layer == "last") & (rows.shots == "all") & (rows.metric == "accuracy") & (rows.k == 1)
    ]
    assert (accuracy.value > 0.9).all()  # well separated blobs


def test_run_linear_and_geometry_rows(fixed_split_file, tmp_path):
    path, vocab, _ = fixed_split_file
    settings = probe_settings("linear", weight_decay_grid=[0.0, 0.01], max_iter=30, probe_seeds=[0, 1])
    rows = run_probe("linear", path, vocab, tmp_path / "linear.parquet", run=RUN, settings=settings)
    assert set(rows.probe_seed) == {0, 1} and set(rows.probe) == {"linear"}
    assert {"accuracy", "macro_f1", "chosen_weight_decay"} == set(rows.metric)
    assert rows[(rows.layer == "last") & (rows.metric == "accuracy")].value.min() > 0.9
    geometry_rows = run_probe(
        "geometry",
        path,
        vocab,
        tmp_path / "geometry.parquet",
        run=RUN,
        settings=probe_settings("geometry", max_clips=20),
    )
    assert set(geometry_rows.probe) == {"geometry"} and set(geometry_rows.n_test) == {20}
    assert "silhouette" in set(geometry_rows.metric)


def test_kfold_file_uses_the_round_test_fold_and_multilabel_labels(tmp_path):
    rng = np.random.default_rng(1)
    n = 90
    points = rng.normal(size=(n, 5))
    labels = [["a", "b"] if i % 3 == 0 else ["a"] if i % 3 == 1 else ["b"] for i in range(n)]
    folds = [i % 3 + 1 for i in range(n)]
    path = write_embeddings(tmp_path / "emb.parquet", labels, {"embedding": points}, fold=folds)
    (tmp_path / "labels.txt").write_text("a\nb\n")
    rows = run_probe(
        "knn",
        path,
        tmp_path / "labels.txt",
        tmp_path / "k.parquet",
        run=replace(RUN, fold=2),
        settings=probe_settings("knn", k=[3]),
    )
    assert set(rows.n_test) == {30} and set(rows.n_train) == {30}  # fold 2 test, fold 3 val, fold 1 train
    assert {"map", "macro_f1", "n_classes_without_test_positive"} <= set(rows.metric)
    assert (rows.fold == 2).all()


def test_bad_settings_and_labels_are_named(fixed_split_file, tmp_path):
    path, vocab, _ = fixed_split_file
    out = tmp_path / "x.parquet"
    # values and keys are the schema's to check, at workflow start
    with pytest.raises(ConfigError, match="probes.knn: Additional properties .*'temprature'"):
        probe_settings("knn", temprature=0.1)
    with pytest.raises(ConfigError, match=r"probes.knn.shots\[0\]"):
        probe_settings("knn", shots=[0])
    with pytest.raises(ValueError, match=r"probes.knn: settings lack \['chunk_size', 'search'"):
        run_probe("knn", path, vocab, out, run=RUN, settings={"k": [1], "temperature": 0.07})
    with pytest.raises(ValueError, match=r"probes.geometry: settings have unknown keys \['k'\]"):
        run_probe("geometry", path, vocab, out, run=RUN, settings=probe_settings("geometry") | {"k": [1]})
    (tmp_path / "short.txt").write_text("cat\ndog\n")
    with pytest.raises(ValueError, match="owl"):
        run_probe("knn", path, tmp_path / "short.txt", out, run=RUN, settings=probe_settings("knn"))
    assert not out.exists()


def test_few_shot_subsets_have_n_per_class_and_are_nested():
    rng = np.random.default_rng(2)
    classes = rng.integers(0, 4, 200)
    classes[:3] = 3
    classes[3:] = np.where(classes[3:] == 3, 0, classes[3:])  # class 3 has only 3 clips
    hot = np.eye(4, dtype=bool)[classes]
    five, ten = few_shot_positions(hot, 5, seed=0), few_shot_positions(hot, 10, seed=0)
    assert np.bincount(classes[five], minlength=4).tolist() == [5, 5, 5, 3]
    assert set(five) <= set(ten)
    assert not np.array_equal(five, few_shot_positions(hot, 5, seed=1))
    multi = rng.random((100, 3)) < 0.3
    picked = few_shot_positions(multi, 2, seed=0)
    assert (multi[picked].sum(axis=0) >= np.minimum(2, multi.sum(axis=0))).all()


def spectrum_features(path):
    """Mean and std of the log-magnitude spectrum over 32 ms frames: a crude speaker embedding."""
    audio, _ = sf.read(path, dtype="float32")
    frames = np.lib.stride_tricks.sliding_window_view(audio, 256)[::128] * np.hanning(256)
    log_spectrum = np.log(np.abs(np.fft.rfft(frames, axis=1)) + 1e-4)
    return np.r_[log_spectrum.mean(axis=0), log_spectrum.std(axis=0)]


def test_probes_identify_fsdd_speakers_from_real_audio(fsdd_dir, tmp_path):
    """Recordings 0-4 (official test), 5-7 val, 8-19 train, digits 0-4 of the 4 speakers."""
    files = sorted(p for p in (fsdd_dir / "recordings").glob("*.wav") if int(p.stem.split("_")[2]) < 20)
    files = [p for p in files if int(p.stem.split("_")[0]) < 5]
    speakers = [p.stem.split("_")[1] for p in files]
    index = [int(p.stem.split("_")[2]) for p in files]
    split = ["test" if i < 5 else "val" if i < 8 else "train" for i in index]
    features = np.stack([spectrum_features(p) for p in files])
    path = write_embeddings(
        tmp_path / "fsdd.parquet", [[s] for s in speakers], {"embedding": features}, split=split
    )
    (tmp_path / "labels.txt").write_text("\n".join(sorted(set(speakers))) + "\n")
    knn_rows = run_probe(
        "knn",
        path,
        tmp_path / "labels.txt",
        tmp_path / "k.parquet",
        run=RUN,
        settings=probe_settings("knn", k=[1, 5]),
    )
    linear_rows = run_probe(
        "linear",
        path,
        tmp_path / "labels.txt",
        tmp_path / "l.parquet",
        run=RUN,
        settings=probe_settings("linear", max_iter=50),
    )
    assert set(knn_rows.n_test) == {100} and set(knn_rows.n_train) == {240}
    for rows in (knn_rows, linear_rows):
        assert rows[rows.metric == "accuracy"].value.min() > 0.9  # chance is 0.25
