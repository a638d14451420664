"""The preprocessed audio cache that tuning and extraction read.

Layout of ``results/data/{dataset}/sr{sr}/``:

- ``waveforms.npy``: one 1-D array, every clip's mono samples concatenated in index order (read with
  ``mmap_mode="r"``, so a job touches only the clips it needs). Stored as the config's ``preprocess.dtype``:
  float32, or float16 / int16 (half the disk; read back as float32, see ``STORAGE``);
- ``index.parquet``: one row per clip, in the same order: ``clip_id, offset, length`` plus the manifest's
  ``labels, split, fold`` and source columns;
- ``stats.json``: clip count, duration quantiles, class counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

WAVEFORMS = "waveforms.npy"
INDEX = "index.parquet"
# preprocess.dtype -> (stored dtype, full scale): a stored sample s reads back as float32(s) / full scale.
# int16 is 16-bit PCM (x * 32768, rounded, clipped to [-32768, 32767]); float16 keeps 11 significant bits.
STORAGE = {"float32": (np.float32, 1.0), "float16": (np.float16, 1.0), "int16": (np.int16, 32768.0)}


def encode_samples(samples: np.ndarray, dtype: str) -> tuple[np.ndarray, int]:
    """float32 samples -> the stored array of ``dtype``, and how many samples were clipped to fit (int16 only:
    float32 and float16 hold any audio level)."""
    stored, scale = STORAGE[dtype]
    if stored is np.int16:
        scaled = np.round(samples * scale)
        clipped = int(np.count_nonzero((scaled < -32768) | (scaled > 32767)))
        return np.clip(scaled, -32768, 32767).astype(np.int16), clipped
    return np.asarray(samples, dtype=stored), 0


class AudioCache:
    """Random access to the cached, resampled clips of one dataset at one sample rate."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not (self.directory / INDEX).exists():
            raise FileNotFoundError(f"no audio cache at {self.directory} (expected {INDEX} and {WAVEFORMS})")
        self.index = pd.read_parquet(self.directory / INDEX)
        self.samples = np.load(self.directory / WAVEFORMS, mmap_mode="r")
        scales = {np.dtype(stored): scale for stored, scale in STORAGE.values()}
        if self.samples.dtype not in scales:
            raise ValueError(
                f"{self.directory / WAVEFORMS}: samples of dtype {self.samples.dtype} (expected one of {list(STORAGE)})"
            )
        self._scale = scales[self.samples.dtype]
        # plain arrays: a pandas lookup per clip costs more than copying the clip
        self._offsets = self.index["offset"].to_numpy(dtype=np.int64)
        self._lengths = self.index["length"].to_numpy(dtype=np.int64)
        name = self.directory.name
        if not name.startswith("sr"):
            raise ValueError(f"cache directory {self.directory} must be named sr<rate>")
        self.sample_rate = int(name[2:])

    def __len__(self) -> int:
        return len(self.index)

    def waveform(self, i: int) -> np.ndarray:
        """[n] float32 samples of clip ``i`` (a read-only view of a float32 cache, else a decoded copy)."""
        offset, length = int(self._offsets[i]), int(self._lengths[i])
        stored = self.samples[offset : offset + length]
        if stored.dtype == np.float32:
            return stored
        decoded = stored.astype(np.float32)
        return decoded if self._scale == 1.0 else decoded / np.float32(self._scale)

    def lengths(self) -> np.ndarray:
        return self.index["length"].to_numpy()

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: F821
        """Zero-padded batch of clips.

        Returns:
            waveforms: [B, N_max] float32, lengths: [B] int64.
        """
        import torch

        clips = [self.waveform(int(i)) for i in indices]
        lengths = torch.tensor([len(c) for c in clips], dtype=torch.long)
        out = torch.zeros(len(clips), int(lengths.max()) if len(clips) else 0)
        for row, clip in enumerate(clips):
            out[row, : len(clip)] = torch.from_numpy(np.array(clip, dtype=np.float32))
        return out, lengths
