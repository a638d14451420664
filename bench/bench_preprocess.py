"""Preprocessing throughput (clips/s): the project's preprocess stage vs ``librosa.load(path, sr=16000)`` per file.

Data: the first ``--clips`` FSDD recordings (sorted by file name; 8 kHz 16-bit mono WAV), all 2000 by default.
The manifest is built once, untimed (it is the stage before, and decodes every file itself).

Timed per side and run:

- ours: ``acft.data.preprocess.preprocess`` exactly as the workflow runs it (config default ``length_s: null``,
  so fitting the length is a no-op): the header pass that sizes the output, decoding each file with soundfile,
  mono mix-down, Kaiser-best sinc resampling to 16 kHz, writing the memory-mapped ``waveforms.npy`` and
  the ``index.parquet`` and ``stats.json`` beside it.
- librosa: ``librosa.load(path, sr=16000)`` for every file into a Python list (soundfile decode, mono, soxr_hq
  resampling); nothing is written. A user would still have to store the arrays somewhere.

Both run on one thread (torch pinned to 1, as the workflow's preprocess job; soxr is single-threaded), on the
same files, which the untimed warm-up run has put in the page cache for both. The runs alternate (ours,
librosa, ours, ...), so load from other processes on a shared machine hits both sides alike. Each of our runs
writes into a fresh cache directory, as in the workflow (Snakemake deletes a job's outputs before rerunning
it; replacing the previous 56 MB ``waveforms.npy`` instead costs ext4 a synchronous writeback of the new file
at the rename), and the page cache is written back (``os.sync``) untimed after it, so that background
writeback does not slow the librosa run that follows. The two resamplers differ
(windowed sinc vs soxr), so the outputs are compared by SNR and correlation, not for equality.

Run: ``.venv/bin/python bench/bench_preprocess.py [--runs 5] [--clips 2000]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import librosa
import numpy as np
import torch
from common import describe, fsdd_subset, summary, timed, write_result

from acft.data.cache import AudioCache
from acft.data.preprocess import preprocess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clips", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subset = fsdd_subset(work, args.clips)
        paths, n = subset["path"].tolist(), len(subset)

        def ours() -> float:
            shutil.rmtree(work / "sr16000", ignore_errors=True)  # untimed, as Snakemake does
            seconds, _ = timed(
                lambda: preprocess(work / "subset.parquet", work / "sr16000", sample_rate=16000)
            )
            os.sync()
            return seconds

        def baseline() -> tuple[float, list[np.ndarray]]:
            return timed(lambda: [librosa.load(p, sr=16000)[0] for p in paths])

        ours(), baseline()  # warm-up: page cache, kernels, imports
        ours_times, librosa_times = [], []
        for _ in range(args.runs):
            ours_times.append(ours())
            seconds, reference = baseline()
            librosa_times.append(seconds)
        rounds = [b / a for a, b in zip(ours_times, librosa_times, strict=True)]

        cache = AudioCache(work / "sr16000")
        snr, corr = [], []
        for i, expected in enumerate(reference):
            ours = np.asarray(cache.waveform(i), dtype=np.float64)
            m = min(len(ours), len(expected))  # equal here: both give 2 x the 8 kHz length
            ours, expected = ours[:m], expected[:m].astype(np.float64)
            snr.append(10 * np.log10((expected**2).sum() / ((ours - expected) ** 2).sum()))
            corr.append(np.corrcoef(ours, expected)[0, 1])

    ratio = summary(librosa_times)["median"] / summary(ours_times)["median"]
    agreement = {
        "snr_db_median": float(np.median(snr)),
        "snr_db_min": float(np.min(snr)),
        "correlation_min": float(np.min(corr)),
    }
    print(describe("ours   ", ours_times, "clips/s", per=n))
    print(describe("librosa", librosa_times, "clips/s", per=n))
    print(
        f"ratio of medians (ours / librosa): {ratio:.2f}x (per run: median {np.median(rounds):.2f}, "
        f"min {min(rounds):.2f}, max {max(rounds):.2f}); agreement {agreement}"
    )
    write_result(
        "preprocess",
        {
            "clips": n,
            "data": f"first {n} FSDD recordings (sorted), 8 kHz -> 16 kHz",
            "ours_s": summary(ours_times),
            "librosa_s": summary(librosa_times),
            "ours_clips_per_s": n / summary(ours_times)["median"],
            "librosa_clips_per_s": n / summary(librosa_times)["median"],
            "ratio": ratio,
            "ratio_per_run": summary(rounds),
            "agreement": agreement,
        },
    )


if __name__ == "__main__":
    main()
