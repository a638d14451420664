"""Embedding extraction throughput (clips/s): ``acft.embed.extract_embeddings`` vs a naive per-clip loop.

Data: the first ``--clips`` FSDD recordings (sorted by file name; 8 kHz spoken digits), preprocessed once,
untimed, by the project's own preprocess stage to 16 kHz. Both sides read exactly those 16 kHz samples: ours
from the audio cache, the naive loop from one float WAV per clip holding the same samples.

Timed per side and run: loading the model and embedding every clip; ours also writes its Parquet file and
reads it back (the embeddings checked below).

- ``hf``: a tiny random-init wav2vec2 (layer-norm front end, attention mask; tests/tiny_models.py, saved to a
  temp dir, no network). Naive = what a transformers user writes: per file ``sf.read``, the feature extractor
  and one model call on that clip alone, mean over its frames. Ours = length-bucketed batches of 32 with the
  attention mask, masked mean. Same computation, so the embeddings must agree to float32 rounding.
- ``resemblyzer``: naive = the same computation one clip at a time with resemblyzer's own code: per file
  ``sf.read``, ``normalize_volume(-30 dBFS, increase_only)`` (``preprocess_wav``'s level step, which ours
  applies too), ``wav_to_mel_spectrogram`` (the feature extractor) and one ``VoiceEncoder`` call on the whole
  clip. Ours = ``pooling: last`` with the 1.6 s window, resemblyzer's own read-out. For clips of at most 1.6 s
  (one window) the embeddings must agree to float32 rounding; longer clips are windowed by ours and run whole
  by the loop (reported separately, not compared). A second naive row times resemblyzer's README loop,
  ``preprocess_wav(path)`` + ``VoiceEncoder.embed_utterance``, for context only: it is not the same
  embedding (``preprocess_wav`` also cuts silences with webrtcvad, ``embed_utterance``
  zero-pads a short clip to a full 160-frame partial and reads the LSTM after the padding) and it needs
  ``webrtcvad`` (``webrtcvad-wheels``, installed by ``make setup``).

Both sides run with one torch thread, the workflow's ``embed.threads`` default (and steadier on a shared machine).

Run: ``.venv/bin/python bench/bench_extract.py [--runs 5] [--clips 500]``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from common import REPO, describe, fsdd_subset, repeat, summary, write_result
from tqdm import tqdm

from acft.data.cache import AudioCache
from acft.data.preprocess import preprocess
from acft.embed import extract_embeddings
from acft.embeddings import read_embeddings

sys.path.insert(0, str(REPO / "tests"))
from schema_defaults import backbone_config, preprocess_settings  # noqa: E402

from tiny_models import save_tiny_model  # noqa: E402


def fsdd_at_16k(work: Path, clips: int) -> list[Path]:
    """First ``clips`` FSDD files -> manifest -> 16 kHz cache in work/sr16000; also one float WAV per clip."""
    fsdd_subset(work, clips)
    preprocess(work / "subset.parquet", work / "sr16000", sample_rate=16000, **preprocess_settings())
    cache, paths = AudioCache(work / "sr16000"), []
    (work / "wav16k").mkdir()
    for i, clip_id in enumerate(cache.index["clip_id"]):
        paths.append(work / "wav16k" / f"{clip_id}.wav")
        sf.write(paths[-1], np.asarray(cache.waveform(i)), 16000, subtype="FLOAT")
    return paths


def ours(work: Path, backbone: dict) -> np.ndarray:
    out = work / f"{backbone['family']}.parquet"
    with contextlib.redirect_stdout(io.StringIO()):
        extract_embeddings(work / "sr16000", backbone, out, batch_size=32, device="cpu")
    return read_embeddings(out)[1]["embedding"]


def naive_hf(source: str, paths: list[Path]) -> np.ndarray:
    from transformers import AutoFeatureExtractor, AutoModel

    extractor = AutoFeatureExtractor.from_pretrained(source)
    model = AutoModel.from_pretrained(source).eval()
    rows = []
    with torch.inference_mode():
        for path in tqdm(paths, desc="naive hf", leave=False, disable=None):
            wav, rate = sf.read(path, dtype="float32")
            inputs = extractor(wav, sampling_rate=rate, return_tensors="pt")
            rows.append(model(**inputs).last_hidden_state.mean(dim=1)[0].numpy())
    return np.stack(rows)


def readme_resemblyzer(paths: list[Path]) -> np.ndarray:
    from resemblyzer import VoiceEncoder, preprocess_wav

    encoder = VoiceEncoder("cpu", verbose=False)
    return np.stack(
        [
            encoder.embed_utterance(preprocess_wav(path))
            for path in tqdm(paths, desc="resemblyzer README loop", leave=False, disable=None)
        ]
    )


def naive_resemblyzer_same(paths: list[Path]) -> np.ndarray:
    """resemblyzer's levelling, mel + network on each whole clip, one file at a time (the same embedding as
    ours)."""
    from resemblyzer import VoiceEncoder, wav_to_mel_spectrogram
    from resemblyzer.audio import normalize_volume

    encoder = VoiceEncoder("cpu", verbose=False)
    rows = []
    with torch.inference_mode():
        for path in tqdm(paths, desc="naive resemblyzer", leave=False, disable=None):
            wav, _ = sf.read(path, dtype="float32")
            wav = normalize_volume(wav, -30, increase_only=True)  # preprocess_wav's level step, as ours does
            rows.append(encoder(torch.from_numpy(wav_to_mel_spectrogram(wav))[None])[0].numpy())
    return np.stack(rows)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clips", type=int, default=500)
    args = parser.parse_args()
    has_webrtcvad = importlib.util.find_spec("webrtcvad") is not None
    torch.set_num_threads(1)
    record = {
        "clips": args.clips,
        "data": f"first {args.clips} FSDD recordings (sorted), 16 kHz",
        "sides": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = fsdd_at_16k(work, args.clips)
        n = len(paths)
        lengths = [sf.info(path).frames for path in paths]
        tiny = save_tiny_model("wav2vec2_layer", work / "tiny_wav2vec2")
        cases = {
            "hf": (backbone_config(**tiny, pooling="mean"), lambda: naive_hf(tiny["source"], paths)),
            "resemblyzer": (
                backbone_config("resemblyzer", pooling="last"),
                lambda: naive_resemblyzer_same(paths),
            ),
        }
        for name, (backbone, naive) in cases.items():
            ours_times, ours_out = repeat(lambda backbone=backbone: ours(work, backbone), args.runs)
            naive_times, naive_out = repeat(naive, args.runs)
            ratio = summary(naive_times)["median"] / summary(ours_times)["median"]
            # clips both sides embed in one piece: all for hf, those of at most one 1.6 s window for resemblyzer
            one_piece = np.ones(n, bool) if name == "hf" else np.asarray(lengths) <= 25600
            cos = cosine(ours_out[one_piece], naive_out[one_piece])
            agreement = {
                "clips_compared": int(one_piece.sum()),
                "cosine_min": float(cos.min()),
                "max_abs_diff": float(np.abs(ours_out[one_piece] - naive_out[one_piece]).max()),
            }
            print(describe(f"{name} ours ", ours_times, "clips/s", per=n))
            print(describe(f"{name} naive", naive_times, "clips/s", per=n))
            if name == "resemblyzer":
                if has_webrtcvad:
                    readme_times, _ = repeat(lambda: readme_resemblyzer(paths), args.runs)
                    print(
                        describe(
                            "resemblyzer README loop (not the same embedding)", readme_times, "clips/s", per=n
                        )
                    )
                    agreement["readme_loop_clips_per_s"] = n / summary(readme_times)["median"]
                else:
                    print("resemblyzer README loop: skipped (needs webrtcvad: pip install webrtcvad-wheels)")
            print(f"{name} ratio of medians (ours / naive): {ratio:.2f}x; agreement {agreement}")
            record["sides"][name] = {
                "ours_s": summary(ours_times),
                "naive_s": summary(naive_times),
                "ours_clips_per_s": n / summary(ours_times)["median"],
                "naive_clips_per_s": n / summary(naive_times)["median"],
                "ratio": ratio,
                "agreement": agreement,
            }
    write_result("extract", record)


if __name__ == "__main__":
    main()
