"""The embedding file: the contract between extraction and everything that reads embeddings.

One Parquet file per (dataset, backbone, tuning run), written by ``acft.embed`` and read by the probes and the
projection plot; a file made elsewhere works if it follows the schema:

- ``clip_id`` string (unique); ``split`` string (train / val / test; null in k-fold datasets); ``fold`` int
  (1..k; null in fixed-split datasets); ``labels`` list<string> (labels from the dataset's ``labels.txt``).
  A missing ``split`` or ``fold`` column counts as all null, but one of them must be there.
- One or more embedding columns of equal-length float lists (``fixed_size_list<float32>[D]`` is what
  ``write_embeddings`` writes): ``embedding`` (one selected layer) or ``embedding_L{i}`` (layer i of a sweep).
- Provenance in the key-value metadata under ``acft.*`` keys with JSON values.

``read_embeddings`` returns ``fold`` as pandas' nullable ``Int64`` (``pd.NA`` for null) to every reader.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .io import atomic_path

METADATA_PREFIX = "acft."
EMBEDDING_COLUMN = re.compile(r"embedding(_L(\d+))?")


def embedding_columns(layer_names: list[str]) -> dict[str, str]:
    """Layer name -> column: "embedding" for a single layer, "embedding_L{i}" per layer of a sweep."""
    if len(layer_names) == 1:
        return {layer_names[0]: "embedding"}
    return {name: f"embedding_L{name}" for name in layer_names}


def layer_of(column: str) -> str:
    """Result-row layer of an embedding column: ``embedding`` -> "last", ``embedding_L3`` -> "3"."""
    match = EMBEDDING_COLUMN.fullmatch(column)
    if match is None:
        raise ValueError(f"'{column}' is not an embedding column name")
    return match.group(2) or "last"


def write_embeddings(path, rows: pd.DataFrame, matrices: dict[str, np.ndarray], metadata: dict) -> None:
    """Write one embedding file atomically.

    Args:
        path: the Parquet file.
        rows: one row per clip with ``clip_id``, ``split``, ``fold`` and ``labels`` (missing values: NA/None).
        matrices: {embedding column: float32 [N, D]}, rows in the order of ``rows``.
        metadata: provenance, stored as ``acft.<key>`` = JSON of the value.
    """
    fold = [None if pd.isna(value) else int(value) for value in rows["fold"]]
    split = [None if pd.isna(value) else str(value) for value in rows["split"]]
    columns = {
        "clip_id": pa.array(rows["clip_id"].astype(str).tolist(), type=pa.string()),
        "split": pa.array(split, type=pa.string()),
        "fold": pa.array(fold, type=pa.int64()),
        "labels": pa.array([list(labels) for labels in rows["labels"]], type=pa.list_(pa.string())),
    }
    for column, matrix in matrices.items():
        if not EMBEDDING_COLUMN.fullmatch(column):
            raise ValueError(f"{column!r} is not an embedding column name (embedding or embedding_L<i>)")
        # [N, D] float32 -> fixed_size_list<float32>[D] without copying row by row
        flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1), type=pa.float32())
        columns[column] = pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])
    table = pa.table(columns).replace_schema_metadata(
        {f"{METADATA_PREFIX}{key}": json.dumps(value, sort_keys=True) for key, value in metadata.items()}
    )
    with atomic_path(path, suffix=".parquet.tmp") as tmp:
        pq.write_table(table, tmp)


def read_embeddings(path: str | Path) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict]:
    """Read an embedding file (schema in the module docstring), checking what every reader relies on.

    Returns:
        rows: DataFrame[clip_id, split (None = null), fold (Int64, NA = null), labels (list[str])] in file order;
        embeddings: {embedding column: float32 [N, D]}, ``embedding`` first, then a sweep in layer order;
        metadata: the ``acft.*`` metadata with the prefix stripped and JSON values decoded.

    Raises:
        ValueError: naming the file and what is wrong (missing columns, null labels, duplicate clip ids,
            null, ragged or non-finite embeddings).
    """
    table = pq.read_table(path)
    names = set(table.column_names)
    missing = sorted({"clip_id", "labels"} - names)
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    if not names & {"split", "fold"}:
        raise ValueError(f"{path}: needs a 'split' or a 'fold' column to assign train / val / test roles")
    n = table.num_rows
    labels = table.column("labels").to_pylist()
    if any(clip_labels is None for clip_labels in labels):
        raise ValueError(f"{path}: {sum(x is None for x in labels)} clips have null labels")
    rows = pd.DataFrame(
        {
            "clip_id": table.column("clip_id").to_pylist(),
            "split": table.column("split").to_pylist() if "split" in names else [None] * n,
            "fold": pd.array(
                table.column("fold").to_pylist() if "fold" in names else [None] * n, dtype="Int64"
            ),
            "labels": labels,
        }
    )
    duplicated = rows["clip_id"][rows["clip_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"{path}: duplicate clip_id values, e.g. {duplicated[:5]}")
    columns = sorted(
        (c for c in names if EMBEDDING_COLUMN.fullmatch(c)),
        key=lambda c: (c != "embedding", int(EMBEDDING_COLUMN.fullmatch(c).group(2) or 0)),
    )
    if not columns:
        raise ValueError(f"{path}: no 'embedding' or 'embedding_L<i>' column (columns: {sorted(names)})")
    metadata = {
        key.decode().removeprefix(METADATA_PREFIX): json.loads(value)
        for key, value in (table.schema.metadata or {}).items()
        if key.decode().startswith(METADATA_PREFIX)
    }
    return rows, {c: _matrix(table, c, path) for c in columns}, metadata


def _matrix(table: pa.Table, column: str, path) -> np.ndarray:
    """An equal-length list column -> float32 [N, D]; nulls, ragged rows or non-finite values raise."""
    values = table.column(column).combine_chunks()
    if values.null_count:
        raise ValueError(f"{path}: column '{column}' has {values.null_count} null embeddings")
    if not (pa.types.is_fixed_size_list(values.type) or pa.types.is_list(values.type)):
        raise ValueError(f"{path}: column '{column}' has type {values.type}; expected a list of floats")
    lengths = (
        np.unique(values.value_lengths().to_numpy(zero_copy_only=False)) if len(values) else np.array([0])
    )
    if len(lengths) != 1:
        raise ValueError(f"{path}: column '{column}' mixes embedding lengths {lengths.tolist()}")
    flat = values.flatten().to_numpy(zero_copy_only=False)
    matrix = np.asarray(flat, dtype=np.float32).reshape(len(values), int(lengths[0]))
    if not np.isfinite(matrix).all():
        bad = int((~np.isfinite(matrix)).any(axis=1).sum())
        raise ValueError(f"{path}: column '{column}' has non-finite values in {bad} clips")
    return matrix
