"""Decode, mix to mono, resample and crop/pad every manifest clip into the audio cache (see ``cache.py``).

Resampling uses torchaudio's Kaiser-windowed sinc resampler with the "kaiser_best" settings of resampy/librosa
(measured here: a 12 kHz tone folds into 44.1 -> 16 kHz output at -150 dB, against -55 dB with torchaudio's
default Hann window), one precomputed kernel per (source rate, target rate) pair. Clips are decoded,
resampled and appended to ``waveforms.npy`` batch by batch (its header, which holds the total length, is
written last): memory stays flat for datasets much larger than RAM.

Per-clip overhead dominates for short clips, so each file is opened once, plain WAV files are parsed and read
by ``wav.py`` (bit-identical to soundfile, which remains the fallback for every other file), and clips are
resampled in batches of about ``BATCH_SAMPLES`` input samples, one matrix product per source rate and batch.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torchaudio
from tqdm import tqdm

from ..io import atomic_path, write_json, write_parquet
from . import wav
from .cache import INDEX, WAVEFORMS
from .manifest import QUANTILES, read_manifest

log = logging.getLogger(__name__)

CROP_MODES = ("center", "random", "start")
# resampy's "kaiser_best" filter, as documented for torchaudio.transforms.Resample
KAISER_BEST = dict(
    lowpass_filter_width=64,
    rolloff=0.9475937167399596,
    resampling_method="sinc_interp_kaiser",
    beta=14.769656459379492,
)
BATCH_SAMPLES = 1 << 18  # input samples decoded and resampled together (1 MiB of float32)
IOV_MAX = os.sysconf("SC_IOV_MAX")  # buffers per writev
MATMUL_ROWS = 512  # unfolded rows per matrix product: the copied windows (~0.3 MB) stay in cache


class Batch(NamedTuple):
    """Clips of one source rate laid out for one resampling product (see ``Resampler.layout``)."""

    signal: np.ndarray  # all clips' zero-padded input
    slots: list[np.ndarray]  # each clip's samples, views of ``signal`` to fill
    rate: int
    lengths: list[int]
    starts: list[int]  # each clip's first window row
    rows: list[int]  # and its number of window rows


class Resampler:
    """Caches one torchaudio Resample kernel per source rate (building the sinc kernel is the slow part).

    The kernel is applied as torchaudio's ``Resample`` does (zero-pad, strided correlation, interleave the
    phases, crop), but as one matrix product over blocks of ``block`` consecutive output frames: torch's conv1d
    is slow for a single input channel, and for small reduced source rates (8 -> 16 kHz: stride 1, a 137-tap
    kernel) a plain unfold would copy every sample 137 times. Equal to ``Resample`` to float32 rounding.
    Batches of clips (``many``, or ``layout`` + ``apply``) share one product, bit-identical to clip by clip.
    """

    def __init__(self, target_rate: int):
        self.target_rate = target_rate
        self._kernels: dict[int, tuple[torch.Tensor, int, int, int, int]] = {}

    def _kernel(self, source_rate: int) -> tuple[torch.Tensor, int, int, int, int]:
        """(block kernel [taps, block * new], width, orig, new, block) with orig/new the gcd-reduced rates."""
        if source_rate not in self._kernels:
            module = torchaudio.transforms.Resample(source_rate, self.target_rate, **KAISER_BEST)
            kernel, width = module.kernel[:, 0, :], module.width  # [new, taps]
            orig, new = source_rate // module.gcd, self.target_rate // module.gcd
            block = max(1, -(-32 // orig))  # output frames per block: the unfold stride block * orig >= 32
            taps = kernel.shape[1]
            # Output frame j of a block reads the block's input from offset j * orig on.
            blocked = torch.zeros(taps + (block - 1) * orig, block, new)
            for j in range(block):
                blocked[j * orig : j * orig + taps, j, :] = kernel.T
            self._kernels[source_rate] = (blocked.reshape(-1, block * new), width, orig, new, block)
        return self._kernels[source_rate]

    def __call__(self, samples: np.ndarray, source_rate: int) -> np.ndarray:
        """[n] float32 at ``source_rate`` -> [ceil(n * target / source)] float32 at the target rate."""
        return self.many([samples], source_rate)[0]

    def many(self, clips: list[np.ndarray], source_rate: int) -> list[np.ndarray]:
        """Resample clips of one source rate with one matrix product, bit-identical to ``__call__`` per clip."""
        if not clips:
            return []
        batch = self.layout([len(x) for x in clips], source_rate)
        for x, slot in zip(clips, batch.slots, strict=True):
            slot[:] = x
        return self.apply(batch)

    def layout(self, lengths: list[int], source_rate: int) -> Batch:
        """A zeroed input signal for a batch of clips, with the slot of each clip's samples in it.

        Fill the slots, then ``apply``. Each clip's input is zero-padded as torchaudio pads it, rounded up to
        whole unfold strides, and laid out back to back: a clip's windows are then the same rows as on its
        own (same values, same products), and one matrix product serves the whole batch.
        """
        if source_rate == self.target_rate:
            signal = np.empty(sum(lengths), dtype=np.float32)
            return Batch(signal, np.split(signal, np.cumsum(lengths)[:-1]), source_rate, lengths, [], [])
        kernel, width, orig, _, block = self._kernel(source_rate)
        stride = block * orig
        rows = [-(-(n // orig + 1) // block) for n in lengths]  # conv1d output frames, in blocks
        spans = [-(-(r * stride + kernel.shape[0] - stride) // stride) for r in rows]  # padded, in strides
        ends = np.cumsum(spans).tolist()
        starts = [0] + ends[:-1]
        signal = np.zeros(ends[-1] * stride, dtype=np.float32)
        slots = [signal[s * stride + width :][:n] for s, n in zip(starts, lengths, strict=True)]
        return Batch(signal, slots, source_rate, lengths, starts, rows)

    def apply(self, batch: Batch) -> list[np.ndarray]:
        """The resampled clips (views of one output array) of a batch from ``layout``, its slots filled."""
        if batch.rate == self.target_rate:
            return batch.slots
        kernel, _, orig, _, block = self._kernel(batch.rate)
        windows = torch.from_numpy(batch.signal).unfold(0, kernel.shape[0], block * orig)
        out = self._correlate(windows, kernel)
        for start, r in zip(batch.starts, batch.rows, strict=True):
            if r == 1:  # as on its own: a one-row (matrix-vector) product, which rounds differently
                torch.mm(windows[start : start + 1], kernel, out=out[start : start + 1])
        out = out.numpy()
        return [
            out[start : start + r].reshape(-1)[: resampled_length(n, batch.rate, self.target_rate)]
            for start, r, n in zip(batch.starts, batch.rows, batch.lengths, strict=True)
        ]

    @staticmethod
    def _correlate(windows: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """windows @ kernel in slices of MATMUL_ROWS rows (the overlapping windows are copied per slice).

        No slice has a single row: BLAS computes a one-row product as a matrix-vector product, whose rounding
        differs, and a clip's output would then depend on where the batch is cut.
        """
        bounds = list(range(0, windows.shape[0], MATMUL_ROWS)) + [windows.shape[0]]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
            del bounds[-2]
        out = torch.empty(windows.shape[0], kernel.shape[1])
        for a, b in itertools.pairwise(bounds):
            torch.mm(windows[a:b], kernel, out=out[a:b])
        return out  # frame-major, phase-minor: torchaudio's interleaving of the phases


def resampled_length(n: int, source_rate: int, target_rate: int) -> int:
    """Length torchaudio's resampler returns (``ceil(n * target / source)``)."""
    return n if source_rate == target_rate else math.ceil(n * target_rate / source_rate)


def fit_length(
    samples: np.ndarray, target: int | None, crop: str, pad: bool, rng: np.random.Generator | None
) -> np.ndarray:
    """Crop a longer clip to ``target`` samples (center, seeded random, or start) and zero-pad a shorter one."""
    if target is None:
        return samples
    n = len(samples)
    if n > target:
        if crop == "center":
            start = (n - target) // 2
        elif crop == "random":
            start = int(rng.integers(0, n - target + 1))
        elif crop == "start":
            start = 0
        else:
            raise ValueError(f"preprocess.crop must be one of {CROP_MODES}, got {crop!r}")
        return samples[start : start + target]
    if n < target and pad:
        return np.pad(samples, (0, target - n))
    return samples


def clip_rng(seed: int, clip_id: str) -> np.random.Generator:
    """Per-clip generator: a random crop does not depend on clip order or on which other clips exist."""
    return np.random.default_rng([seed, zlib.crc32(clip_id.encode())])


class Source(NamedTuple):
    """An opened clip: frame count, rate, and either undecoded WAV bytes or soundfile's mono samples."""

    frames: int
    rate: int
    wav: wav.Clip | None
    samples: np.ndarray | None


def mix_down(samples: np.ndarray) -> np.ndarray:
    """[n] float32 mono of [n, channels] samples (channel mean)."""
    return samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)


def open_source(path: str) -> Source:
    """Read the file once: plain WAVs by ``wav.py`` (decoded later, into the batch), others by soundfile."""
    try:
        clip = wav.load(path)
    except OSError:  # missing or unreadable: soundfile raises the error it always raised
        clip = None
    if clip is not None:
        return Source(clip.header.frames, clip.header.samplerate, clip, None)
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    return Source(len(samples), int(rate), None, mix_down(samples))


def fill(source: Source, out: np.ndarray) -> None:
    """Write the clip's mono float32 samples into ``out``."""
    if source.wav is None:
        out[:] = source.samples
    elif source.wav.header.channels == 1:
        wav.decode(source.wav, out)  # straight into the batch: no intermediate array
    else:
        out[:] = mix_down(wav.decode(source.wav))


def resample_batch(resample: Resampler, sources: list[Source]) -> list[np.ndarray]:
    """Decode and resample a batch of clips (one matrix product per source rate); outputs in order."""
    by_rate: dict[int, list[int]] = {}
    for i, source in enumerate(sources):
        by_rate.setdefault(source.rate, []).append(i)
    out: list[np.ndarray] = [None] * len(sources)
    for rate, indices in by_rate.items():
        batch = resample.layout([sources[i].frames for i in indices], rate)
        for i, slot in zip(indices, batch.slots, strict=True):
            fill(sources[i], slot)
        for i, samples in zip(indices, resample.apply(batch), strict=True):
            out[i] = samples
    return out


def batches(clips: list[tuple[str, str]], limit: int) -> Iterator[list[tuple[str, Source]]]:
    """(clip_id, opened source) of consecutive (clip_id, path) clips, about ``limit`` frames a batch."""
    batch, total = [], 0
    for clip_id, path in clips:
        source = open_source(path)
        batch.append((clip_id, source))
        total += source.frames
        if total >= limit:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


def write_clips(
    fd: int,
    clips: list[tuple[str, str]],
    resample: Resampler,
    fit: Callable[[np.ndarray, str], np.ndarray],
) -> tuple[list[int], int, int]:
    """Decode, resample and fit (clip_id, path) clips, appending their samples to file ``fd`` in order.

    Clips are processed in batches of about BATCH_SAMPLES input samples, each written with one gathering
    ``writev``: many small writes (or page faults into a fresh memory map) cost more.

    Returns:
        The fitted length of every clip, and how many clips ``fit`` cropped and padded.
    """
    lengths, cropped, padded = [], 0, 0
    with tqdm(total=len(clips), desc=f"sr{resample.target_rate}", disable=None) as progress:
        for batch in batches(clips, BATCH_SAMPLES):
            resampled = resample_batch(resample, [source for _, source in batch])
            fitted = [fit(x, clip_id) for (clip_id, _), x in zip(batch, resampled, strict=True)]
            cropped += sum(len(y) < len(x) for x, y in zip(resampled, fitted, strict=True))
            padded += sum(len(y) > len(x) for x, y in zip(resampled, fitted, strict=True))
            write_all(fd, [np.ascontiguousarray(y, dtype=np.float32) for y in fitted])
            lengths += [len(y) for y in fitted]
            progress.update(len(batch))
    return lengths, cropped, padded


def write_all(fd: int, buffers: list) -> None:
    """Write the buffers' bytes in order, gathered (``writev``: no packing copy), resuming partial writes."""
    views = [memoryview(b).cast("B") for b in buffers]
    first = 0
    while first < len(views):
        written = os.writev(fd, views[first : first + IOV_MAX])
        while first < len(views) and written >= len(views[first]):
            written -= len(views[first])
            first += 1
        if written:
            views[first] = views[first][written:]


def npy_header(n: int) -> bytes:
    """The header np.save writes for [n] float32 (numpy pads it to a size independent of ``n``)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
    return buffer.getvalue()


def preprocess(
    manifest_path: str | Path,
    out_dir: str | Path,
    *,
    sample_rate: int,
    length_s: float | None = None,
    crop: str = "center",
    pad: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """Write ``waveforms.npy``, ``index.parquet`` and ``stats.json`` into ``out_dir`` (named ``sr{rate}``).

    Args:
        manifest_path: the dataset's canonical manifest.
        out_dir: cache directory; its name must be ``sr{sample_rate}``.
        sample_rate: target rate in Hz.
        length_s: target clip length in seconds (None keeps full length).
        crop: how a longer clip is cut: "center", "random" (seeded per clip) or "start".
        pad: zero-pad clips shorter than ``length_s``.
        seed: seed of random crops.

    Returns:
        The cache index (clip_id, offset, length and the manifest's other columns).
    """
    out_dir = Path(out_dir)
    if out_dir.name != f"sr{sample_rate}":
        raise ValueError(f"cache directory {out_dir} must be named sr{sample_rate}")
    if crop not in CROP_MODES:
        raise ValueError(f"preprocess.crop must be one of {CROP_MODES}, got {crop!r}")
    manifest = read_manifest(manifest_path)
    target = None if length_s is None else int(round(length_s * sample_rate))

    def fit(samples: np.ndarray, clip_id: str) -> np.ndarray:
        return fit_length(samples, target, crop, pad, clip_rng(seed, clip_id) if crop == "random" else None)

    clips = list(zip(manifest["clip_id"].tolist(), manifest["path"].tolist(), strict=True))
    with atomic_path(out_dir / WAVEFORMS, suffix=".npy.tmp") as tmp, open(tmp, "wb", buffering=0) as file:
        write_all(file.fileno(), [npy_header(0)])  # placeholder: the total length is known at the end
        lengths, cropped, padded = write_clips(file.fileno(), clips, Resampler(sample_rate), fit)
        header = npy_header(sum(lengths))
        if len(header) != len(npy_header(0)):
            raise RuntimeError("numpy's .npy header size depends on the array length")
        file.seek(0)
        write_all(file.fileno(), [header])
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)

    index = manifest.drop(columns=["path", "duration_s", "sample_rate"]).assign(
        offset=offsets, length=lengths
    )
    index = index[
        ["clip_id", "offset", "length"]
        + [c for c in index.columns if c not in ("clip_id", "offset", "length")]
    ]
    write_parquet(index, out_dir / INDEX)
    seconds = lengths / sample_rate
    write_json(
        out_dir / "stats.json",
        {
            "clips": int(len(index)),
            "sample_rate": sample_rate,
            "length_s": length_s,
            "cropped": int(cropped),
            "padded": int(padded),
            "duration_s_quantiles": {str(q): round(float(np.quantile(seconds, q)), 4) for q in QUANTILES},
            "total_duration_s": round(float(seconds.sum()), 3),
        },
    )
    log.info("cached %d clips at %d Hz (%d cropped, %d padded)", len(index), sample_rate, cropped, padded)
    return index
