"""Embedding extraction to Parquet: schema, metadata, row order under length bucketing, checkpoints,
determinism and atomic writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import transformers
from safetensors.torch import save_file

from acft import embed as embed_module
from acft.device import embed_cache_clips, length_buckets, select_device
from acft.embed import extract_embeddings
from acft.embeddings import read_embeddings
from acft.identity import Run
from acft.models import build_encoder
from acft.provenance import file_sha256, package_versions

sys.path.insert(0, str(Path(__file__).parent))
from schema_defaults import backbone_config  # noqa: E402

from tiny_models import save_tiny_model  # noqa: E402

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

CLIP_SECONDS = [0.5, 0.2, 0.9, 0.35, 0.6, 0.25, 0.8, 0.3]
RUN = Run("toy", "tiny", "frozen", 0, 0)


def write_cache(root: Path, rate: int = 16000) -> Path:
    """A cache in the AudioCache layout: clips of mixed lengths, fixed-split and k-fold rows, multi-labels."""
    directory = root / "toy" / f"sr{rate}"
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(int(s * rate))).astype(np.float32) for s in CLIP_SECONDS]
    lengths = np.array([len(c) for c in clips])
    np.save(directory / "waveforms.npy", np.concatenate(clips))
    index = pd.DataFrame(
        {
            "clip_id": [f"clip{i}" for i in range(len(clips))],
            "offset": np.concatenate([[0], np.cumsum(lengths)[:-1]]),
            "length": lengths,
            "labels": [["a"], ["b"], ["a", "b"], ["c"], ["a"], ["b"], ["c", "a"], ["b"]],
            "split": ["train", "train", "val", "test", None, None, None, None],
            "fold": pd.array([None, None, None, None, 1, 2, 1, 2], dtype="Int64"),
            "speaker": list("xyzxyzxy"),
        }
    )
    index.to_parquet(directory / "index.parquet", index=False)
    return directory


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory) -> dict:
    return backbone_config(**save_tiny_model("wav2vec2_layer", tmp_path_factory.mktemp("tiny") / "w2v"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return write_cache(tmp_path_factory.mktemp("cache"))


def direct_embeddings(encoder, cache_dir: Path) -> dict[str, np.ndarray]:
    """Each clip alone through the encoder (no batching, no bucketing), in index order."""
    index = pd.read_parquet(cache_dir / "index.parquet")
    samples = np.load(cache_dir / "waveforms.npy")
    out = {name: [] for name in encoder.layer_names}
    with torch.inference_mode():
        for offset, length in zip(index["offset"], index["length"], strict=True):
            clip = torch.from_numpy(samples[offset : offset + length].copy())[None]
            for name, value in encoder.embed_layers(clip, torch.tensor([length])).items():
                out[name].append(value[0].numpy())
    return {name: np.stack(rows) for name, rows in out.items()}


def test_parquet_schema_rows_and_metadata_round_trip(tiny_cfg, cache_dir, tmp_path, capsys):
    out = tmp_path / "frozen.parquet"
    extract_embeddings(cache_dir, tiny_cfg, out, batch_size=3, run=RUN, params_hash="abc123")
    assert "parameters" in capsys.readouterr().out  # the one-line start summary

    schema = pq.read_schema(out)
    assert schema.names == ["clip_id", "split", "fold", "labels", "embedding"]
    assert schema.field("embedding").type == pa.list_(pa.float32(), 32)  # fixed_size_list<float32>[32]
    assert schema.field("labels").type == pa.list_(pa.string())
    assert schema.field("fold").type == pa.int64()
    raw = schema.metadata
    assert {k.decode() for k in raw} >= {
        f"acft.{key}"
        for key in (
            "backbone",
            "checkpoint_sha256",
            "layers",
            "pooling",
            "params_hash",
            "versions",
            "identity",
            "embedding_columns",
        )
    }
    assert json.loads(raw[b"acft.identity"]) == {
        "dataset": "toy",
        "backbone": "tiny",
        "method": "frozen",
        "fold": 0,
        "seed": 0,
    }

    rows, embeddings, meta = read_embeddings(out)
    index = pd.read_parquet(cache_dir / "index.parquet")
    assert rows["clip_id"].tolist() == index["clip_id"].tolist()
    assert rows["split"][:4].tolist() == ["train", "train", "val", "test"] and rows["split"][4:].isna().all()
    assert rows["fold"].tolist() == [pd.NA] * 4 + [1, 2, 1, 2]
    assert rows["labels"].tolist() == [list(labels) for labels in index["labels"]]
    assert meta["checkpoint_sha256"] is None and meta["params_hash"] == "abc123"
    assert (
        meta["layers"] == ["last"]
        and meta["pooling"] == "mean"
        and meta["embedding_columns"] == ["embedding"]
    )
    assert meta["backbone"]["family"] == "hf" and meta["backbone"]["source"] == tiny_cfg["source"]
    assert meta["versions"] == package_versions()

    (matrix,) = embeddings.values()
    assert matrix.dtype == np.float32 and matrix.shape == (8, 32)
    # Length bucketing reorders the work, never the rows: each row equals its clip embedded alone.
    expected = direct_embeddings(build_encoder(tiny_cfg), cache_dir)["last"]
    np.testing.assert_allclose(matrix, expected, atol=1e-5, rtol=1e-4)


def test_same_inputs_give_identical_embedding_data(tiny_cfg, cache_dir, tmp_path):
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    extract_embeddings(cache_dir, tiny_cfg, first, batch_size=3)
    extract_embeddings(cache_dir, tiny_cfg, second, batch_size=3)
    data_a, data_b = pq.read_table(first), pq.read_table(second)
    assert data_a.replace_schema_metadata(None).equals(data_b.replace_schema_metadata(None))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet"]  # no temp files left


def test_layer_sweep_writes_one_column_per_layer(tiny_cfg, cache_dir, tmp_path):
    cfg = {**tiny_cfg, "layer": [0, 2]}
    out = tmp_path / "sweep.parquet"
    extract_embeddings(cache_dir, cfg, out, batch_size=4)
    rows, embeddings, meta = read_embeddings(out)
    assert meta["embedding_columns"] == ["embedding_L0", "embedding_L2"] == list(embeddings)
    assert meta["layers"] == ["0", "2"]
    expected = direct_embeddings(build_encoder(cfg), cache_dir)
    np.testing.assert_allclose(embeddings["embedding_L0"], expected["0"], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(embeddings["embedding_L2"], expected["2"], atol=1e-5, rtol=1e-4)


def test_tuned_checkpoint_is_loaded_and_fingerprinted(tiny_cfg, cache_dir, tmp_path):
    tuned = build_encoder(tiny_cfg)
    with torch.no_grad():
        for param in tuned.parameters():
            param.add_(0.05 * torch.randn_like(param))
    checkpoint = tmp_path / "model.safetensors"
    save_file(tuned.state_dict(), checkpoint)
    out = tmp_path / "tuned.parquet"
    extract_embeddings(cache_dir, tiny_cfg, out, checkpoint=str(checkpoint), batch_size=8)
    _, embeddings, meta = read_embeddings(out)
    assert meta["checkpoint_sha256"] == file_sha256(checkpoint)
    np.testing.assert_allclose(
        embeddings["embedding"], direct_embeddings(tuned, cache_dir)["last"], atol=1e-5, rtol=1e-4
    )
    frozen = direct_embeddings(build_encoder(tiny_cfg), cache_dir)["last"]
    assert not np.allclose(embeddings["embedding"], frozen, atol=1e-3)


def test_sample_rate_mismatch_is_refused(tiny_cfg, tmp_path):
    cache_8k = write_cache(tmp_path, rate=8000)
    with pytest.raises(ValueError, match="8000 Hz audio.*expects 16000 Hz"):
        extract_embeddings(cache_8k, tiny_cfg, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_non_finite_embeddings_fail_without_leaving_a_file(tiny_cfg, cache_dir, tmp_path, monkeypatch):
    def broken_encoder(cfg):
        encoder = build_encoder(cfg)
        original = encoder.embed_layers
        encoder.embed_layers = lambda w, n: {k: v * float("nan") for k, v in original(w, n).items()}
        return encoder

    monkeypatch.setattr(embed_module, "build_encoder", broken_encoder)
    with pytest.raises(FloatingPointError, match="non-finite embeddings"):
        extract_embeddings(cache_dir, tiny_cfg, tmp_path / "out.parquet")
    assert list(tmp_path.iterdir()) == []


def test_length_buckets_sort_by_length_and_cover_every_clip():
    lengths = np.array([5, 1, 4, 1, 3, 9, 2])
    buckets = length_buckets(lengths, 3)
    assert [b.tolist() for b in buckets] == [[1, 3, 6], [4, 2, 0], [5]]
    with pytest.raises(ValueError, match="batch_size"):
        length_buckets(lengths, 0)


def test_embed_cache_clips_runs_longest_batch_first_and_returns_index_order():
    class LengthCache:  # clip i has LENGTHS[i] samples, each equal to i
        LENGTHS = np.array([3, 1, 5, 2, 4, 6, 7])

        def lengths(self):
            return self.LENGTHS

        def batch(self, indices):
            lengths = torch.from_numpy(self.LENGTHS[indices])
            waveforms = torch.zeros(len(indices), int(lengths.max()))
            for row, i in enumerate(indices):
                waveforms[row, : lengths[row]] = float(i)
            return waveforms, lengths

    seen = []

    def forward(waveforms, lengths):
        seen.append(int(lengths.max()))
        return {"clip": waveforms[:, :1].repeat(1, 2)}  # the clip's own index, twice

    indices = np.array([6, 0, 2, 4, 5])
    out = embed_cache_clips(
        forward, LengthCache(), indices, batch_size=2, device=torch.device("cpu"), amp=False, desc="t"
    )
    assert seen == [7, 6, 4]  # batches by length (3, 4) (5, 6) (7), run longest first
    np.testing.assert_array_equal(out["clip"], np.repeat(indices[:, None], 2, axis=1).astype(np.float32))


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")
