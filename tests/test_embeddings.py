"""The embedding file contract (acft.embeddings): one writer, one reader, the same rows for every stage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from acft.embeddings import embedding_columns, layer_of, read_embeddings, write_embeddings
from acft.probes.run import load_probe_data
from acft.report.plots import read_embedding_file

ROWS = pd.DataFrame(
    {
        "clip_id": ["a", "b", "c", "d", "e", "f"],
        "split": ["train", "val", "test", None, None, None],
        "fold": pd.array([None, None, None, 1, 2, 3], dtype="Int64"),
        "labels": [["x"], ["y"], ["x", "y"], ["x"], ["y"], ["x"]],
    }
)


def test_round_trip_keeps_rows_matrices_and_metadata(tmp_path):
    matrix = np.arange(12, dtype=np.float32).reshape(6, 2)
    write_embeddings(tmp_path / "e.parquet", ROWS, {"embedding": matrix}, {"identity": {"fold": 0}})
    schema = pq.read_schema(tmp_path / "e.parquet")
    assert schema.field("fold").type == pa.int64()
    assert schema.field("embedding").type == pa.list_(pa.float32(), 2)
    rows, embeddings, metadata = read_embeddings(tmp_path / "e.parquet")
    pd.testing.assert_frame_equal(rows, ROWS)
    np.testing.assert_array_equal(embeddings["embedding"], matrix)
    assert metadata == {"identity": {"fold": 0}}
    assert list(tmp_path.iterdir()) == [tmp_path / "e.parquet"]  # written atomically, no temp file left


def test_every_reader_sees_fold_as_nullable_int64(tmp_path):
    """The probes and the projection plot read through the one reader: fold has one dtype everywhere."""
    rows = ROWS.assign(split=[None] * 6, fold=pd.array([1, 2, 3, 1, 2, 3], dtype="Int64"))
    path = tmp_path / "e.parquet"
    write_embeddings(path, rows, {"embedding": np.eye(6, 3, dtype=np.float32)}, {})
    (tmp_path / "labels.txt").write_text("x\ny\n")
    assert read_embeddings(path)[0]["fold"].dtype == "Int64"
    assert read_embedding_file(path)[0]["fold"].dtype == "Int64"
    data = load_probe_data(path, tmp_path / "labels.txt", fold=1, val_offset=1)
    assert data.roles.tolist() == ["test", "val", "train"] * 2


def test_a_file_made_elsewhere_reads_with_the_same_dtypes(tmp_path):
    """int32 fold, no split column, variable-length lists and no metadata: still the contract's rows."""
    table = pa.table(
        {
            "clip_id": ["a", "b", "c"],
            "fold": pa.array([1, 2, 3], pa.int32()),
            "labels": [["x"], ["y"], ["x"]],
            "embedding_L2": pa.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], pa.list_(pa.float64())),
            "embedding_L10": pa.array([[1.0], [2.0], [3.0]], pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, tmp_path / "e.parquet")
    rows, embeddings, metadata = read_embeddings(tmp_path / "e.parquet")
    assert rows["fold"].dtype == "Int64" and rows["split"].isna().all() and metadata == {}
    assert list(embeddings) == ["embedding_L2", "embedding_L10"]  # layer order, not name order
    assert embeddings["embedding_L2"].dtype == np.float32
    assert read_embedding_file(tmp_path / "e.parquet")[2] == "embedding_L10"  # the deepest layer


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"embedding": pa.array([[1.0], None], pa.list_(pa.float32()))}, "null embeddings"),
        ({"embedding": pa.array([[1.0], [1.0, 2.0]], pa.list_(pa.float32()))}, "mixes embedding lengths"),
        ({"embedding": pa.array([[1.0], [float("nan")]], pa.list_(pa.float32()))}, "non-finite"),
        ({"features": pa.array([[1.0], [2.0]], pa.list_(pa.float32()))}, "no 'embedding'"),
    ],
)
def test_bad_files_are_named(tmp_path, columns, message):
    pq.write_table(
        pa.table({"clip_id": ["a", "b"], "split": ["train", "test"], "labels": [["x"], ["y"]], **columns}),
        tmp_path / "bad.parquet",
    )
    with pytest.raises(ValueError, match=message):
        read_embeddings(tmp_path / "bad.parquet")


def test_column_names_and_layers():
    assert embedding_columns(["last"]) == {"last": "embedding"}
    assert embedding_columns(["0", "2"]) == {"0": "embedding_L0", "2": "embedding_L2"}
    assert layer_of("embedding") == "last" and layer_of("embedding_L3") == "3"
    with pytest.raises(ValueError, match="not an embedding column"):
        layer_of("features")
