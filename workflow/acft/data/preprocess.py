"""Decode, mix to mono, resample and crop/pad every manifest clip into the audio cache (see ``cache.py``).

Clips are decoded by soundfile and resampled one at a time with torchaudio's Kaiser-windowed sinc kernel at the
"kaiser_best" settings of resampy/librosa (measured here: a 12 kHz tone folds into 44.1 -> 16 kHz output at
-150 dB, against -55 dB with torchaudio's default Hann window). A clip's cached samples depend on that clip
alone, never on its neighbours or on where a batch is cut.

Every clip's frame count is its manifest duration times its rate, so the cache's total length is known before
the first file is decoded: ``waveforms.npy`` gets numpy's header for its final size, then each clip's samples
in turn (memory stays flat for datasets much larger than RAM). A file whose decoded frame count or rate differs
from its manifest entry stops the run naming the file.
"""

from __future__ import annotations

import logging
import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torchaudio
from tqdm import tqdm

from ..io import atomic_path, write_json, write_parquet
from .cache import INDEX, STORAGE, WAVEFORMS, encode_samples
from .manifest import QUANTILES, BadAudioError, read_manifest

log = logging.getLogger(__name__)

CROP_MODES = ("center", "random", "start")
# resampy's "kaiser_best" filter, as documented for torchaudio.transforms.Resample
KAISER_BEST = dict(
    lowpass_filter_width=64,
    rolloff=0.9475937167399596,
    resampling_method="sinc_interp_kaiser",
    beta=14.769656459379492,
)
MATMUL_ROWS = 512  # window rows per matrix product: the copied overlapping windows (~0.3 MB) stay in cache


class Resampler:
    """torchaudio's Resample kernel, one per source rate, applied to a clip as one blocked matrix product.

    The filter is torchaudio's (``transforms.Resample(..., **KAISER_BEST).kernel``); only its application is
    ours. torchaudio correlates with conv1d, which for one input channel takes torch's im2col path (8 -> 16 kHz:
    a stride-1, 137-tap kernel copies every sample 137 times). Here the kernel is applied as torchaudio applies
    it (zero-pad, strided correlation, interleave the phases, crop), but to blocks of ``block`` consecutive
    output frames, so the unfold stride is at least 32 samples. Equal to ``Resample`` to float32 rounding.

    Kept because the library path is more than 1.3x slower here (AMD EPYC, one thread, 2026-12-04):
    bench/bench_preprocess.py (2000 FSDD clips, 8 -> 16 kHz, 7 alternating runs) times this stage at 0.70 s
    (median) and soundfile decode + ``torchaudio.transforms.Resample`` per clip alone, writing nothing, at
    1.10 s (1.57x; 1.42-1.63x per run). Resampling alone (best of 7): 0.11 s against torchaudio's 0.50 s for
    those clips; for 100 clips of 1 s, 0.12 against 0.22 s at 48 kHz, 0.034 against 0.041 s at 44.1 kHz, 0.028
    against 0.037 s at 22.05 kHz. Batching clips into one product (the previous code) saved another 1.5x on
    FSDD (decode + resample 0.24 against 0.36 s), but made a clip's rounding depend on its neighbours.
    """

    def __init__(self, target_rate: int):
        self.target_rate = target_rate
        self._kernels: dict[int, tuple[torch.Tensor, int, int, int]] = {}

    def _kernel(self, source_rate: int) -> tuple[torch.Tensor, int, int, int]:
        """(block kernel [taps, block * new], width, orig, block) with orig/new the gcd-reduced rates."""
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
            self._kernels[source_rate] = (blocked.reshape(-1, block * new), width, orig, block)
        return self._kernels[source_rate]

    def __call__(self, samples: np.ndarray, source_rate: int) -> np.ndarray:
        """[n] float32 at ``source_rate`` -> [ceil(n * target / source)] float32 at the target rate."""
        if source_rate == self.target_rate:
            return samples
        kernel, width, orig, block = self._kernel(source_rate)
        n, stride = len(samples), block * orig
        rows = -(-(n // orig + 1) // block)  # conv1d output frames of torchaudio's padded input, in blocks
        signal = np.zeros(rows * stride + kernel.shape[0] - stride, dtype=np.float32)
        signal[width : width + n] = samples  # torchaudio pads ``width`` zeros before the clip
        windows = torch.from_numpy(signal).unfold(0, kernel.shape[0], stride)  # [rows, taps] (overlapping)
        out = torch.empty(rows, kernel.shape[1])  # frame-major, phase-minor: torchaudio's interleaving
        for first in range(0, rows, MATMUL_ROWS):
            torch.mm(windows[first : first + MATMUL_ROWS], kernel, out=out[first : first + MATMUL_ROWS])
        return out.numpy().reshape(-1)[: resampled_length(n, source_rate, self.target_rate)]


def resampled_length(n: int, source_rate: int, target_rate: int) -> int:
    """Length torchaudio's resampler returns (``ceil(n * target / source)``)."""
    return n if source_rate == target_rate else math.ceil(n * target_rate / source_rate)


def fitted_length(n: int, target: int | None, pad: bool) -> int:
    """Length ``fit_length`` gives a clip of ``n`` samples."""
    if target is None or (n < target and not pad):
        return n
    return target


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


def manifest_frames(duration_s: float, sample_rate: int) -> int:
    """Frames of a clip from its manifest entry (the manifest stores frames / rate)."""
    return round(duration_s * sample_rate)


def read_mono(path: str, frames: int, sample_rate: int) -> np.ndarray:
    """[frames] float32 mono samples (channel mean) of ``path``, which must match its manifest entry.

    Raises:
        BadAudioError: soundfile decodes another frame count or rate than the manifest's.
    """
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    if (len(samples), rate) != (frames, sample_rate):
        raise BadAudioError(
            f"{path}: decoded {len(samples)} frames at {rate} Hz, but its manifest entry (duration_s, "
            f"sample_rate) says {frames} frames at {sample_rate} Hz; the file changed after the manifest "
            "was built (rerun the manifest step)"
        )
    return samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)


def preprocess(
    manifest_path: str | Path,
    out_dir: str | Path,
    *,
    sample_rate: int,
    length_s: float | None,
    crop: str,
    pad: bool,
    seed: int,
    dtype: str,
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
        dtype: how samples are stored: float32, float16 or int16 (``cache.STORAGE``); int16 clips samples
            beyond full scale, counted in stats.json (``int16_clipped_samples``) and logged.
        (length_s, crop, pad and dtype are the config's ``preprocess`` keys, seed its ``seed``: the schema's defaults.)

    Returns:
        The cache index (clip_id, offset, length and the manifest's other columns).

    Raises:
        BadAudioError: a file decodes to another frame count or rate than its manifest entry says.
    """
    out_dir = Path(out_dir)
    if out_dir.name != f"sr{sample_rate}":
        raise ValueError(f"cache directory {out_dir} must be named sr{sample_rate}")
    manifest = read_manifest(manifest_path)
    target = None if length_s is None else int(round(length_s * sample_rate))
    frames, rates, resampled, lengths = _planned_lengths(manifest, sample_rate, target, pad)
    clips = zip(manifest["clip_id"], manifest["path"], frames, rates, lengths, strict=True)
    clipped = _write_waveforms(out_dir / WAVEFORMS, clips, int(lengths.sum()), len(manifest), sample_rate,
                               lambda samples, rate, rng: fit_length(samples, target, crop, pad, rng),
                               seed if crop == "random" else None, dtype)  # fmt: skip
    if clipped:
        log.warning("%d samples beyond full scale were clipped to store them as int16", clipped)
    cropped = int(sum(n > length for n, length in zip(resampled, lengths, strict=True)))
    padded = int(sum(n < length for n, length in zip(resampled, lengths, strict=True)))

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
            "cropped": cropped,
            "padded": padded,
            "dtype": dtype,
            **({"int16_clipped_samples": clipped} if dtype == "int16" else {}),
            "bytes": int(lengths.sum()) * np.dtype(STORAGE[dtype][0]).itemsize,
            "duration_s_quantiles": {str(q): round(float(np.quantile(seconds, q)), 4) for q in QUANTILES},
            "total_duration_s": round(float(seconds.sum()), 3),
        },
    )
    log.info("cached %d clips at %d Hz (%d cropped, %d padded)", len(index), sample_rate, cropped, padded)
    return index


def _planned_lengths(manifest: pd.DataFrame, sample_rate: int, target: int | None, pad: bool):
    """Per clip, from the manifest alone: source frames, source rate, resampled length and cached length."""
    rates = manifest["sample_rate"].astype(int).tolist()
    frames = [manifest_frames(d, r) for d, r in zip(manifest["duration_s"], rates, strict=True)]
    resampled = [resampled_length(n, rate, sample_rate) for n, rate in zip(frames, rates, strict=True)]
    lengths = np.array([fitted_length(n, target, pad) for n in resampled], dtype=np.int64)
    return frames, rates, resampled, lengths


def _write_waveforms(
    path: Path, clips, total: int, n_clips: int, sample_rate: int, fit, seed: int | None, dtype: str
) -> int:
    """Decode, resample and fit every clip, appending it to one ``.npy`` of ``total`` samples of ``dtype``;
    returns the count of samples clipped to fit the dtype.

    Args:
        clips: (clip_id, path, frames, source rate, cached length) per clip, in index order.
        fit: (resampled samples, rate, rng) -> the cached samples. seed: random crops' seed (None: no rng).
    """
    resample = Resampler(sample_rate)
    # Written front to back, not through a memory map: on a full disk a write raises ENOSPC (and atomic_path
    # removes the temp file), where a store into a memory-mapped sparse file kills the job with SIGBUS.
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(STORAGE[dtype][0])), "fortran_order": False}
    clipped = 0
    with atomic_path(path, suffix=".npy.tmp") as tmp, open(tmp, "wb") as file:
        np.lib.format.write_array_header_1_0(file, header | {"shape": (total,)})
        for clip_id, source, n, rate, length in tqdm(
            clips, total=n_clips, desc=f"sr{sample_rate}", disable=None
        ):
            rng = None if seed is None else clip_rng(seed, clip_id)
            samples = fit(resample(read_mono(source, n, rate), rate), rate, rng)
            if len(samples) != length:  # every later offset in the index would be off
                raise RuntimeError(f"{source}: {len(samples)} samples where the index expects {length}")
            stored, n_clipped = encode_samples(samples, dtype)
            clipped += n_clipped
            file.write(np.ascontiguousarray(stored))
    return clipped
