"""Embedding extraction: every clip of an audio cache -> one Parquet file of fixed-size float32 vectors.

One file per (dataset, backbone, tuning run); the frozen backbone's file is written once per dataset and shared
by every fold and seed (the folds only differ in which rows the probes train on). Columns: ``clip_id, split,
fold, labels`` and ``embedding`` (one selected layer) or ``embedding_L{i}`` (a layer sweep); the file format is
``acft.embeddings``'s. Provenance lives in its ``acft.*`` metadata; the embedding data itself is bit-identical
across CPU runs with the same inputs.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
from safetensors.torch import load_file

from .data.cache import AudioCache
from .device import embed_cache_clips, select_device
from .embeddings import embedding_columns, write_embeddings
from .identity import Run
from .models import build_encoder
from .provenance import file_sha256, package_versions


def extract_embeddings(
    cache_dir,
    backbone_cfg: dict,
    out_path,
    *,
    checkpoint: str | None = None,
    batch_size: int = 32,
    device: str = "auto",
    run: Run | None = None,
    params_hash: str = "",
) -> None:
    """Embed every clip of an audio cache and write one Parquet file atomically.

    Args:
        cache_dir: ``results/data/{dataset}/sr{rate}`` (an ``AudioCache``); its rate must be the backbone's.
        backbone_cfg: the backbone config for ``build_encoder`` (layer, pooling and windowing included).
        out_path: the Parquet file to write.
        checkpoint: tuned encoder weights (``model.safetensors``); None embeds the pretrained backbone.
        batch_size: clips per forward pass (batches are bucketed by length).
        device: "auto", "cpu", "cuda" or "cuda:N".
        run: the run the file belongs to (a frozen backbone's: fold 0, seed 0), stored in the metadata.
        params_hash: hash of the producing rule's params, stored in the metadata.
    """
    cache = AudioCache(cache_dir)
    encoder = build_encoder(backbone_cfg)
    if checkpoint is not None:
        encoder.load_state_dict(load_file(checkpoint))
    if cache.sample_rate != encoder.sample_rate:
        raise ValueError(
            f"audio cache {cache_dir} holds {cache.sample_rate} Hz audio, backbone "
            f"{encoder.family}:{encoder.source} expects {encoder.sample_rate} Hz"
        )
    run_device = select_device(device)
    encoder.to(run_device).eval()
    n_params = sum(p.numel() for p in encoder.parameters())
    print(
        f"[embed] {len(cache)} clips, {encoder.family}:{encoder.source} ({n_params:,} parameters, layers "
        f"{encoder.layer_names}, pooling {encoder.pooling}) on {run_device}; checkpoint {checkpoint or 'none'}"
    )

    columns = embedding_columns(encoder.layer_names)
    matrices = embed_cache_clips(
        encoder.embed_layers, cache, np.arange(len(cache)), batch_size=batch_size, device=run_device, amp=True,
        desc="embed",
    )  # fmt: skip
    for name, matrix in matrices.items():
        bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
        if len(bad):
            raise FloatingPointError(
                f"non-finite embeddings (layer {name}) for {len(bad)} clips, e.g. {cache.index['clip_id'].iloc[bad[0]]}"
            )

    metadata = {
        "backbone": encoder.describe(),
        "checkpoint_sha256": file_sha256(checkpoint) if checkpoint is not None else None,
        "layers": encoder.layer_names,
        "pooling": encoder.pooling,
        "params_hash": params_hash,
        "versions": package_versions(),
        "identity": asdict(run) if run is not None else {},
        "embedding_columns": list(columns.values()),
    }
    write_embeddings(
        out_path, cache.index, {column: matrices[name] for name, column in columns.items()}, metadata
    )
