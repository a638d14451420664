"""What ``preprocess.dtype`` costs: disk per cache and the change in frozen embeddings (float16 / int16 vs float32).

Data: the first ``--clips`` FSDD recordings (sorted by file name; 8 kHz 16-bit spoken digits), all 2000 by
default, preprocessed by the project's own stage to 16 kHz once per dtype. Each cache is embedded by the
project's extraction with the demo's backbone (resemblyzer, real weights from its wheel, ``pooling: mean``;
its input contract raises quiet clips to -30 dBFS, so quantisation noise is amplified with them, the hard case).

Measured per dtype against the float32 cache: the cache's bytes, each clip's embedding cosine and relative
L2 change ``|e - e32| / |e32|`` (max and 99th percentile), and the agreement of leave-one-out cosine kNN@5
predictions (majority vote, digit labels) over all clips. Not a timing benchmark: one run.

Run: ``.venv/bin/python bench/bench_cache_dtype.py [--clips 2000]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import REPO, fsdd_subset, write_result

from acft.data.cache import AudioCache
from acft.data.preprocess import preprocess
from acft.embed import extract_embeddings
from acft.embeddings import read_embeddings

sys.path.insert(0, str(REPO / "tests"))
from schema_defaults import backbone_config, preprocess_settings  # noqa: E402

DTYPES = ("float32", "float16", "int16")


def embed(work: Path, dtype: str) -> tuple[np.ndarray, list[str], int]:
    """Embeddings of the ``dtype`` cache, the clips' first labels and the cache's sample bytes."""
    cache_dir = work / dtype / "sr16000"
    preprocess(work / "subset.parquet", cache_dir, sample_rate=16000, **preprocess_settings(dtype=dtype))
    cache = AudioCache(cache_dir)
    out = work / f"{dtype}.parquet"
    with contextlib.redirect_stdout(io.StringIO()):
        extract_embeddings(cache_dir, backbone_config(family="resemblyzer"), out, batch_size=32, device="cpu")
    rows, columns, _ = read_embeddings(out)
    return columns["embedding"], [labels[0] for labels in rows["labels"]], cache.samples.nbytes


def loo_knn(emb: np.ndarray, labels: np.ndarray, k: int = 5) -> np.ndarray:
    """Leave-one-out majority vote of the k most cosine-similar other clips (ties: the smallest label)."""
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(emb), labels.max() + 1))
    np.add.at(votes, (np.arange(len(emb))[:, None], labels[nearest]), 1)
    return votes.argmax(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fsdd_subset(work, args.clips)
        results = {dtype: embed(work, dtype) for dtype in DTYPES}
    reference, names, full_bytes = results["float32"]
    vocab = sorted(set(names))
    labels = np.array([vocab.index(name) for name in names])
    predicted = loo_knn(reference, labels)
    rows = {"float32": {"bytes": full_bytes, "loo_knn5_accuracy": float(np.mean(predicted == labels))}}
    for dtype in DTYPES[1:]:
        emb, _, nbytes = results[dtype]
        cosine = np.sum(emb * reference, axis=1) / (
            np.linalg.norm(emb, axis=1) * np.linalg.norm(reference, axis=1)
        )
        relative = np.linalg.norm(emb - reference, axis=1) / np.linalg.norm(reference, axis=1)
        theirs = loo_knn(emb, labels)
        rows[dtype] = {
            "bytes": nbytes,
            "bytes_vs_float32": nbytes / full_bytes,
            "min_cosine": float(cosine.min()),
            "max_relative_l2": float(relative.max()),
            "p99_relative_l2": float(np.quantile(relative, 0.99)),
            "loo_knn5_accuracy": float(np.mean(theirs == labels)),
            "loo_knn5_prediction_agreement": float(np.mean(theirs == predicted)),
        }
    for dtype, row in rows.items():
        print(dtype, {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})
    write_result(
        "cache_dtype", {"clips": len(labels), "backbone": "resemblyzer (pooling mean)", "dtypes": rows}
    )


if __name__ == "__main__":
    main()
