"""Preprocessing: decoding, mono mix-down, resampling, crop/pad, and the memory-mapped cache."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio

from acft.data.cache import AudioCache
from acft.data.preprocess import (
    KAISER_BEST,
    MATMUL_ROWS,
    Resampler,
    fit_length,
    preprocess,
    resampled_length,
    write_all,
)


def write_manifest(tmp_path, clips):
    """clips: list of (clip_id, samples [n] or [n, channels], rate)."""
    rows = []
    for clip_id, samples, rate in clips:
        path = tmp_path / f"{clip_id}.wav"
        sf.write(path, samples, rate, subtype="FLOAT")
        rows.append(
            {
                "clip_id": clip_id,
                "path": str(path),
                "labels": ["a"],
                "split": "train",
                "fold": None,
                "duration_s": len(samples) / rate,
                "sample_rate": rate,
                "speaker": "x",
            }
        )
    manifest = pd.DataFrame(rows)
    manifest["fold"] = manifest["fold"].astype("Int64")
    path = tmp_path / "manifest.parquet"
    manifest.to_parquet(path, index=False)
    return path


def sine(freq, rate, seconds, amplitude=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(samples, rate):
    window = np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(samples * window))
    return np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)]


@pytest.mark.parametrize("source_rate", [8000, 22050, 44100])
def test_resampled_sine_keeps_its_frequency_and_level(tmp_path, source_rate):
    manifest = write_manifest(tmp_path, [("tone", sine(440.0, source_rate, 1.0), source_rate)])
    preprocess(manifest, tmp_path / "sr16000", sample_rate=16000)
    cache = AudioCache(tmp_path / "sr16000")
    out = np.asarray(cache.waveform(0))
    assert cache.sample_rate == 16000
    assert len(out) == resampled_length(source_rate, source_rate, 16000) == 16000
    assert abs(dominant_frequency(out, 16000) - 440.0) <= 1.0  # 1 Hz FFT bins at 1 s
    # amplitude preserved away from the edges (the sinc filter passes 440 Hz unchanged)
    middle = out[2000:-2000]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_downsampling_removes_content_above_the_new_nyquist(tmp_path):
    rate = 44100
    signal = sine(440.0, rate, 1.0) + sine(12000.0, rate, 1.0)  # 12 kHz is above 8 kHz Nyquist of 16 kHz
    manifest = write_manifest(tmp_path, [("mix", signal, rate)])
    preprocess(manifest, tmp_path / "sr16000", sample_rate=16000)
    out = np.asarray(AudioCache(tmp_path / "sr16000").waveform(0))
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    freqs = np.fft.rfftfreq(len(out), 1 / 16000)
    # the 12 kHz tone must not alias to 4 kHz (at least 80 dB down)
    assert spectrum[np.abs(freqs - 4000) < 5].max() < 1e-4 * spectrum[np.abs(freqs - 440) < 5].max()


def test_stereo_is_mixed_to_mono_by_channel_mean(tmp_path):
    left, right = sine(300.0, 16000, 0.5), sine(500.0, 16000, 0.5, amplitude=0.25)
    manifest = write_manifest(tmp_path, [("stereo", np.stack([left, right], axis=1), 16000)])
    preprocess(manifest, tmp_path / "sr16000", sample_rate=16000)
    out = np.asarray(AudioCache(tmp_path / "sr16000").waveform(0))
    np.testing.assert_allclose(out, (left + right) / 2, atol=1e-6)


def test_crop_and_pad_lengths_in_the_cache(tmp_path):
    rate = 16000
    clips = [
        ("long", sine(200, rate, 2.0), rate),
        ("short", sine(200, rate, 0.25), rate),
        ("exact", sine(200, rate, 1.0), rate),
    ]
    manifest = write_manifest(tmp_path, clips)
    index = preprocess(
        manifest, tmp_path / "sr16000", sample_rate=rate, length_s=1.0, crop="center", pad=True
    )
    assert index["length"].tolist() == [16000, 16000, 16000]
    cache = AudioCache(tmp_path / "sr16000")
    long_in = sine(200, rate, 2.0)
    np.testing.assert_array_equal(cache.waveform(0), long_in[8000:24000])  # centre crop
    short = np.asarray(cache.waveform(1))
    np.testing.assert_array_equal(short[:4000], sine(200, rate, 0.25))
    assert not short[4000:].any()  # zero padding
    stats = json.loads((tmp_path / "sr16000" / "stats.json").read_text())
    assert (stats["clips"], stats["cropped"], stats["padded"]) == (3, 1, 1)

    index = preprocess(manifest, tmp_path / "sr16000", sample_rate=rate, length_s=1.0, pad=False)
    assert index["length"].tolist() == [16000, 4000, 16000]  # no padding: the short clip keeps its length


def test_fit_length_modes():
    samples = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(samples, 4, "start", True, None), [0, 1, 2, 3])
    np.testing.assert_array_equal(fit_length(samples, 4, "center", True, None), [3, 4, 5, 6])
    starts = {fit_length(samples, 4, "random", True, np.random.default_rng(s))[0] for s in range(50)}
    assert starts <= set(range(7)) and len(starts) > 3
    np.testing.assert_array_equal(fit_length(samples, None, "center", True, None), samples)
    np.testing.assert_array_equal(fit_length(samples[:2], 4, "center", True, None), [0, 1, 0, 0])


def test_random_crop_is_seeded_per_clip(tmp_path):
    rate = 16000
    noise = np.random.default_rng(0).standard_normal(rate * 2).astype(np.float32) * 0.1
    manifest = write_manifest(tmp_path, [("a", noise, rate), ("b", noise, rate)])
    first = preprocess(
        manifest, tmp_path / "one" / "sr16000", sample_rate=rate, length_s=0.5, crop="random", seed=3
    )
    second = preprocess(
        manifest, tmp_path / "two" / "sr16000", sample_rate=rate, length_s=0.5, crop="random", seed=3
    )
    pd.testing.assert_frame_equal(first, second)
    a = np.load(tmp_path / "one" / "sr16000" / "waveforms.npy")
    b = np.load(tmp_path / "two" / "sr16000" / "waveforms.npy")
    np.testing.assert_array_equal(a, b)
    # the two clips hold identical audio but different ids: their crops differ
    assert not np.array_equal(a[:8000], a[8000:])


def test_cache_index_keeps_manifest_columns_and_order(tmp_path):
    rate = 8000
    manifest = write_manifest(
        tmp_path, [(f"c{i}", sine(100 + i, rate, 0.1 * (i + 1)), rate) for i in range(4)]
    )
    index = preprocess(manifest, tmp_path / "sr16000", sample_rate=16000)
    assert index["clip_id"].tolist() == ["c0", "c1", "c2", "c3"]
    assert {"labels", "split", "fold", "speaker", "offset", "length"} <= set(index.columns)
    assert (index["offset"].diff().dropna() == index["length"].iloc[:-1].to_numpy()).all()
    batch, lengths = AudioCache(tmp_path / "sr16000").batch([3, 0])
    assert batch.shape == (2, int(lengths.max())) and lengths.tolist() == [6400, 1600]
    assert not batch[1, 1600:].any()


def test_cache_directory_must_carry_the_rate(tmp_path):
    manifest = write_manifest(tmp_path, [("a", sine(100, 8000, 0.1), 8000)])
    with pytest.raises(ValueError, match="sr16000"):
        preprocess(manifest, tmp_path / "cache", sample_rate=16000)


RATES = [44100, 22050, 48000, 8000, 16000]
# shorter than, about as long as, and much longer than the kernel (137 taps at 8 kHz, 815 at 44.1 kHz)
LENGTHS = [0, 1, 5, 50, 137, 300, 1000, 4411, 12345]


def random_clips(seed, lengths=LENGTHS):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, n).astype(np.float32) for n in rng.permutation(lengths)]


@pytest.mark.parametrize("source_rate", RATES)
def test_batched_resampling_is_bit_identical_to_one_clip_at_a_time(source_rate):
    clips = random_clips(source_rate)
    batched = Resampler(16000).many(clips, source_rate)
    alone = [Resampler(16000)(x, source_rate) for x in clips]
    reordered = Resampler(16000).many(clips[::-1], source_rate)[::-1]  # other neighbours and offsets
    for x, a, b, c in zip(clips, batched, alone, reordered, strict=True):
        assert len(a) == resampled_length(len(x), source_rate, 16000)
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
        np.testing.assert_array_equal(a.view(np.uint32), c.view(np.uint32))


def test_a_last_row_is_not_cut_off_into_a_product_of_its_own():
    # at 8 kHz, MATMUL_ROWS + 1 window rows of 32 samples; the last one holds output that is kept
    x = np.random.default_rng(3).uniform(-1, 1, MATMUL_ROWS * 32 + 1).astype(np.float32)
    neighbour = np.ones(100, dtype=np.float32)
    alone = Resampler(16000)(x, 8000)
    batched = Resampler(16000).many([neighbour, x, neighbour], 8000)[1]
    np.testing.assert_array_equal(alone.view(np.uint32), batched.view(np.uint32))


@pytest.mark.parametrize("source_rate", RATES)
def test_resampler_equals_torchaudio_to_float32_rounding(source_rate):
    reference = torchaudio.transforms.Resample(source_rate, 16000, **KAISER_BEST)
    clips = random_clips(1, [n for n in LENGTHS if n > 0])
    for x, y in zip(clips, Resampler(16000).many(clips, source_rate), strict=True):
        expected = reference(torch.from_numpy(x)).numpy()
        assert y.shape == expected.shape
        np.testing.assert_allclose(y, expected, rtol=0, atol=2e-6)


def test_mixed_rates_are_cached_in_manifest_order(tmp_path):
    rng = np.random.default_rng(2)
    clips = [
        (f"c{i}", rng.uniform(-1, 1, int(rng.integers(1, 3000))).astype(np.float32), rate)
        for i, rate in enumerate([8000, 44100, 16000, 8000, 22050, 44100, 48000, 16000])
    ]
    manifest = write_manifest(tmp_path, clips)  # FLOAT WAVs: decoding is lossless
    index = preprocess(manifest, tmp_path / "sr16000", sample_rate=16000)
    cache = AudioCache(tmp_path / "sr16000")
    assert index["clip_id"].tolist() == [c for c, _, _ in clips]
    for i, (_, samples, rate) in enumerate(clips):
        expected = Resampler(16000)(samples, rate)
        np.testing.assert_array_equal(cache.waveform(i), expected)
        if rate != 16000:
            reference = torchaudio.transforms.Resample(rate, 16000, **KAISER_BEST)
            np.testing.assert_allclose(
                cache.waveform(i), reference(torch.from_numpy(samples)).numpy(), rtol=0, atol=2e-6
            )


def test_fsdd_cache_equals_soundfile_and_torchaudio_per_clip(tmp_path, fsdd_dir):
    paths = sorted((fsdd_dir / "recordings").glob("*.wav"))[::10]  # 200 of the 2000 recordings
    rows = [
        {"clip_id": p.stem, "path": str(p), "labels": [p.stem[0]], "split": "train", "fold": None}
        | {"duration_s": 0.0, "sample_rate": 8000, "speaker": p.stem.split("_")[1]}
        for p in paths
    ]
    manifest = pd.DataFrame(rows).astype({"fold": "Int64"})
    manifest.to_parquet(tmp_path / "manifest.parquet", index=False)
    preprocess(tmp_path / "manifest.parquet", tmp_path / "sr16000", sample_rate=16000)
    cache = AudioCache(tmp_path / "sr16000")
    reference = torchaudio.transforms.Resample(8000, 16000, **KAISER_BEST)
    for i, path in enumerate(paths):
        samples, rate = sf.read(path, dtype="float32")
        assert rate == 8000
        np.testing.assert_array_equal(cache.waveform(i), Resampler(16000)(samples, rate))
        expected = reference(torch.from_numpy(samples)).numpy()
        np.testing.assert_allclose(cache.waveform(i), expected, rtol=0, atol=2e-6)


def test_partial_writes_are_resumed(tmp_path, monkeypatch):
    import acft.data.preprocess as module

    real_writev = os.writev
    monkeypatch.setattr(module.os, "writev", lambda fd, views: real_writev(fd, [views[0][:1000]]))
    arrays = [np.arange(n, dtype=np.float32) for n in (0, 700, 1, 2500, 0, 300)]
    with open(tmp_path / "out.bin", "wb", buffering=0) as f:
        write_all(f.fileno(), [b"head", *arrays])
    assert (tmp_path / "out.bin").read_bytes() == b"head" + np.concatenate(arrays).tobytes()
