"""The preprocessed audio cache that tuning and extraction read.

Layout of ``results/data/{dataset}/sr{sr}/``:

- ``waveforms.npy``: one 1-D float32 array, every clip's mono samples concatenated in index order
  (read with ``mmap_mode="r"``, so a job touches only the clips it needs);
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


class AudioCache:
    """Random access to the cached, resampled clips of one dataset at one sample rate."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not (self.directory / INDEX).exists():
            raise FileNotFoundError(f"no audio cache at {self.directory} (expected {INDEX} and {WAVEFORMS})")
        self.index = pd.read_parquet(self.directory / INDEX)
        self.samples = np.load(self.directory / WAVEFORMS, mmap_mode="r")
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
        """[n] float32 samples of clip ``i`` (a read-only view)."""
        offset, length = int(self._offsets[i]), int(self._lengths[i])
        return self.samples[offset : offset + length]

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
