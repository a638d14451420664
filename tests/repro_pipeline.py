"""One small frozen pipeline on real speech, run in a fresh process so the kernel settings of its environment
apply (see test_reproducibility.py): manifest -> preprocess -> resemblyzer extraction -> kNN and linear probes.

Usage: python repro_pipeline.py FSDD_DIR OUT_DIR; writes OUT_DIR/result.npz and keeps the cache and Parquet.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import yaml
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from schema_defaults import preprocess_settings, probe_settings  # noqa: E402

from acft.data.preprocess import preprocess  # noqa: E402
from acft.embed import extract_embeddings  # noqa: E402
from acft.embeddings import read_embeddings  # noqa: E402
from acft.probes.knn import knn_probe  # noqa: E402
from acft.probes.knn_search import nearest_neighbours  # noqa: E402
from acft.probes.linear import linear_probe  # noqa: E402

SPEAKER_SPLIT = {"george": "train", "jackson": "train", "lucas": "val", "nicolas": "test"}


def manifest(fsdd: Path) -> pd.DataFrame:
    """Recordings 0-5 of every digit and speaker: 240 clips, speaker-disjoint splits."""
    rows = []
    for speaker, split in SPEAKER_SPLIT.items():
        for digit in range(10):
            for index in range(6):
                path = fsdd / "recordings" / f"{digit}_{speaker}_{index}.wav"
                info = sf.info(path)
                rows.append(
                    {
                        "clip_id": path.stem,
                        "path": str(path),
                        "labels": [str(digit)],
                        "split": split,
                        "fold": None,
                        "duration_s": info.frames / info.samplerate,
                        "sample_rate": info.samplerate,
                    }
                )
    frame = pd.DataFrame(rows)
    frame["fold"] = frame["fold"].astype("Int64")
    return frame


def backbone_config() -> dict:
    """config.yaml's resemblyzer backbone with every schema default filled in, as the workflow runs it."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return config["backbones"]["resemblyzer"]


def main(fsdd: Path, out: Path) -> None:
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    manifest(fsdd).to_parquet(out / "manifest.parquet", index=False)
    cache = out / "sr16000"
    preprocess(out / "manifest.parquet", cache, sample_rate=16000, **preprocess_settings())
    extract_embeddings(cache, backbone_config(), out / "frozen.parquet", device="cpu")
    rows, embeddings, _ = read_embeddings(out / "frozen.parquet")
    emb = next(iter(embeddings.values()))
    labels = np.array([int(x[0]) for x in rows["labels"]])
    split = {name: (rows["split"] == name).to_numpy() for name in ("train", "val", "test")}
    knn_cfg, linear_cfg = probe_settings("knn", k=[1, 5]), probe_settings("linear", device="cpu")
    neighbours = nearest_neighbours(emb[split["train"]], emb[split["test"]], [5], search="exact")
    knn = knn_probe(
        emb[split["train"]],
        labels[split["train"]],
        emb[split["test"]],
        labels[split["test"]],
        multilabel=False,
        ks=knn_cfg["k"],
        temperature=knn_cfg["temperature"],
        chunk_size=knn_cfg["chunk_size"],
        search=knn_cfg["search"],
    )
    linear = linear_probe(
        emb[split["train"]],
        labels[split["train"]],
        emb[split["val"]],
        labels[split["val"]],
        emb[split["test"]],
        labels[split["test"]],
        multilabel=False,
        n_classes=10,
        weight_decay_grid=linear_cfg["weight_decay_grid"],
        max_iter=linear_cfg["max_iter"],
        seed=linear_cfg["probe_seeds"][0],
        device=linear_cfg["device"],
    )
    metric = lambda records, probe, k=None: next(  # noqa: E731
        r["value"]
        for r in records
        if r["probe"] == probe and r["metric"] == "accuracy" and r.get("k", k) == k
    )
    np.savez(
        out / "result.npz",
        waveforms=np.load(cache / "waveforms.npy"),
        embeddings=emb,
        neighbours=neighbours.index[5].numpy(),
        knn5_weighted=metric(knn, "knn_weighted", 5),
        knn1=metric(knn, "knn_majority", 1),
        linear=metric(linear, "linear"),
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
