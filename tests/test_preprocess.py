"""Preprocessing: decoding, mono mix-down, resampling, crop/pad, and the memory-mapped cache.

Resampled outputs are compared with torchaudio's own ``Resample`` (the same kernel, applied by conv1d) within
FLOAT32_TOLERANCE, never bit for bit: two computation shapes round differently on different CPUs and BLAS
builds. Bitwise equality is asserted only for the same computation run twice (the same cache rebuilt).
"""

import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio

from acft.data.cache import AudioCache
from acft.data.manifest import BadAudioError, build_manifest
from acft.data.preprocess import (
    KAISER_BEST,
    MATMUL_ROWS,
    Resampler,
    fit_length,
    preprocess,
    resampled_length,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from schema_defaults import preprocess_settings  # noqa: E402

# |ours - torchaudio| for samples in [-1, 1]: float32 rounding of sums of up to ~800 products (measured <= 3e-7)
FLOAT32_TOLERANCE = 2e-6


def torchaudio_resample(samples, source_rate, target_rate=16000):
    """The reference: torchaudio's Resample with the same settings, one clip at a time."""
    if source_rate == target_rate:
        return samples
    module = torchaudio.transforms.Resample(source_rate, target_rate, **KAISER_BEST)
    return module(torch.from_numpy(np.ascontiguousarray(samples))).numpy()


def write_manifest(tmp_path, clips, **write_kwargs):
    """clips: list of (clip_id, samples [n] or [n, channels], rate); 32-bit float WAVs unless told otherwise."""
    write_kwargs = {"subtype": "FLOAT"} | write_kwargs
    rows = []
    for clip_id, samples, rate in clips:
        path = tmp_path / f"{clip_id}.{'flac' if write_kwargs.get('format') == 'FLAC' else 'wav'}"
        sf.write(path, samples, rate, **write_kwargs)
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
    preprocess(manifest, tmp_path / "sr16000", sample_rate=16000, **preprocess_settings())
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
    preprocess(manifest, tmp_path / "sr16000", sample_rate=16000, **preprocess_settings())
    out = np.asarray(AudioCache(tmp_path / "sr16000").waveform(0))
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    freqs = np.fft.rfftfreq(len(out), 1 / 16000)
    # the 12 kHz tone must not alias to 4 kHz (at least 80 dB down)
    assert spectrum[np.abs(freqs - 4000) < 5].max() < 1e-4 * spectrum[np.abs(freqs - 440) < 5].max()


def test_stereo_is_mixed_to_mono_by_channel_mean(tmp_path):
    left, right = sine(300.0, 16000, 0.5), sine(500.0, 16000, 0.5, amplitude=0.25)
    manifest = write_manifest(tmp_path, [("stereo", np.stack([left, right], axis=1), 16000)])
    preprocess(manifest, tmp_path / "sr16000", sample_rate=16000, **preprocess_settings())
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
        manifest,
        tmp_path / "sr16000",
        sample_rate=rate,
        **preprocess_settings(length_s=1.0, crop="center", pad=True),
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

    index = preprocess(
        manifest, tmp_path / "sr16000", sample_rate=rate, **preprocess_settings(length_s=1.0, pad=False)
    )
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
        manifest,
        tmp_path / "one" / "sr16000",
        sample_rate=rate,
        **preprocess_settings(length_s=0.5, crop="random", seed=3),
    )
    second = preprocess(
        manifest,
        tmp_path / "two" / "sr16000",
        sample_rate=rate,
        **preprocess_settings(length_s=0.5, crop="random", seed=3),
    )
    pd.testing.assert_frame_equal(first, second)
    a = np.load(tmp_path / "one" / "sr16000" / "waveforms.npy")
    b = np.load(tmp_path / "two" / "sr16000" / "waveforms.npy")
    assert a.tobytes() == b.tobytes()  # the same computation twice
    # the two clips hold identical audio but different ids: their crops differ
    assert not np.array_equal(a[:8000], a[8000:])


def test_cache_index_keeps_manifest_columns_and_order(tmp_path):
    rate = 8000
    manifest = write_manifest(
        tmp_path, [(f"c{i}", sine(100 + i, rate, 0.1 * (i + 1)), rate) for i in range(4)]
    )
    index = preprocess(manifest, tmp_path / "sr16000", sample_rate=16000, **preprocess_settings())
    assert index["clip_id"].tolist() == ["c0", "c1", "c2", "c3"]
    assert {"labels", "split", "fold", "speaker", "offset", "length"} <= set(index.columns)
    assert (index["offset"].diff().dropna() == index["length"].iloc[:-1].to_numpy()).all()
    batch, lengths = AudioCache(tmp_path / "sr16000").batch([3, 0])
    assert batch.shape == (2, int(lengths.max())) and lengths.tolist() == [6400, 1600]
    assert not batch[1, 1600:].any()


def test_cache_directory_must_carry_the_rate(tmp_path):
    manifest = write_manifest(tmp_path, [("a", sine(100, 8000, 0.1), 8000)])
    with pytest.raises(ValueError, match="sr16000"):
        preprocess(manifest, tmp_path / "cache", sample_rate=16000, **preprocess_settings())


RATES = [44100, 22050, 48000, 8000, 16000]
# shorter than, about as long as, and much longer than the kernel (137 taps at 8 kHz, 815 at 44.1 kHz), and
# more than MATMUL_ROWS window rows at 8 kHz (32 samples a row), so a clip spans several matrix products
LENGTHS = [1, 5, 50, 137, 300, 1000, 4411, 12345, MATMUL_ROWS * 32 + 1]


def random_clips(seed, lengths=LENGTHS):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, n).astype(np.float32) for n in rng.permutation(lengths)]


@pytest.mark.parametrize("source_rate", RATES)
def test_resampler_equals_torchaudio_within_float32_rounding(source_rate):
    resample = Resampler(16000)
    for x in random_clips(1):
        y, expected = resample(x, source_rate), torchaudio_resample(x, source_rate)
        assert y.shape == expected.shape == (resampled_length(len(x), source_rate, 16000),)
        np.testing.assert_allclose(y, expected, rtol=0, atol=FLOAT32_TOLERANCE)
    assert resample(np.zeros(0, dtype=np.float32), source_rate).shape == (0,)


def mixed_rate_clips(seed=2):
    rng = np.random.default_rng(seed)
    return [
        (f"c{i}", rng.uniform(-1, 1, int(rng.integers(1, 3000))).astype(np.float32), rate)
        for i, rate in enumerate([8000, 44100, 16000, 8000, 22050, 44100, 48000, 16000])
    ]


def test_mixed_rates_are_cached_in_manifest_order_as_torchaudio_resamples_each_clip(tmp_path):
    clips = mixed_rate_clips()
    manifest = write_manifest(tmp_path, clips)  # FLOAT WAVs: decoding is lossless
    index = preprocess(manifest, tmp_path / "sr16000", sample_rate=16000, **preprocess_settings())
    cache = AudioCache(tmp_path / "sr16000")
    assert index["clip_id"].tolist() == [c for c, _, _ in clips]
    assert index["offset"].tolist() == np.concatenate([[0], np.cumsum(index["length"])[:-1]]).tolist()
    for i, (_, samples, rate) in enumerate(clips):
        expected = torchaudio_resample(samples, rate)
        assert cache.waveform(i).shape == expected.shape
        np.testing.assert_allclose(cache.waveform(i), expected, rtol=0, atol=FLOAT32_TOLERANCE)


def test_the_same_config_twice_gives_a_byte_identical_cache(tmp_path):
    manifest = write_manifest(tmp_path, mixed_rate_clips(seed=5))
    for run in ("one", "two"):
        preprocess(
            manifest,
            tmp_path / run / "sr16000",
            sample_rate=16000,
            **preprocess_settings(length_s=0.1, crop="random"),
        )
    for name in ("waveforms.npy", "index.parquet", "stats.json"):
        one, two = (tmp_path / run / "sr16000" / name for run in ("one", "two"))
        assert one.read_bytes() == two.read_bytes(), name


def test_fsdd_cache_equals_soundfile_and_torchaudio_per_clip(tmp_path, fsdd_dir):
    paths = sorted((fsdd_dir / "recordings").glob("*.wav"))[::10]  # 200 of the 2000 recordings
    rows = [
        {"clip_id": p.stem, "path": str(p), "labels": [p.stem[0]], "split": "train", "fold": None}
        | {"duration_s": sf.info(p).frames / 8000, "sample_rate": 8000, "speaker": p.stem.split("_")[1]}
        for p in paths
    ]
    manifest = pd.DataFrame(rows).astype({"fold": "Int64"})
    manifest.to_parquet(tmp_path / "manifest.parquet", index=False)
    preprocess(
        tmp_path / "manifest.parquet", tmp_path / "sr16000", sample_rate=16000, **preprocess_settings()
    )
    cache = AudioCache(tmp_path / "sr16000")
    for i, path in enumerate(paths):
        samples, rate = sf.read(path, dtype="float32")
        assert rate == 8000
        expected = torchaudio_resample(samples, rate)
        assert cache.waveform(i).shape == expected.shape
        np.testing.assert_allclose(cache.waveform(i), expected, rtol=0, atol=FLOAT32_TOLERANCE)


# Containers, sample formats and channel counts: the cache holds soundfile's decoding, mixed by channel mean.
FORMATS = [
    dict(format="WAV", subtype=subtype)
    for subtype in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")
] + [
    dict(format="WAVEX", subtype="PCM_24"),
    dict(format="WAVEX", subtype="FLOAT"),
    dict(format="WAV", subtype="ULAW"),
    dict(format="WAV", subtype="PCM_16", endian="BIG"),  # RIFX
    dict(format="RF64", subtype="PCM_16"),
    dict(format="AIFF", subtype="PCM_16"),
    dict(format="FLAC", subtype="PCM_16"),
    dict(format="FLAC", subtype="PCM_24"),
]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("write_kwargs", FORMATS, ids=lambda k: "-".join(k.values()))
def test_every_format_and_bit_depth_is_cached_as_soundfile_decodes_it(tmp_path, write_kwargs, channels):
    rng = np.random.default_rng(channels)
    signal = rng.uniform(-1, 1, (1001, channels))
    signal[:3] = np.array([-1.0, 0.0, 0.5])[
        :, None
    ]  # the extremes and silence, which quantisers treat specially
    manifest = write_manifest(tmp_path, [("x", signal, 16000)], **write_kwargs)
    preprocess(manifest, tmp_path / "sr16000", sample_rate=16000, **preprocess_settings())
    decoded, rate = sf.read(pd.read_parquet(manifest)["path"][0], dtype="float32", always_2d=True)
    assert rate == 16000 and len(decoded) == 1001
    np.testing.assert_array_equal(
        AudioCache(tmp_path / "sr16000").waveform(0), decoded.mean(axis=1, dtype=np.float32)
    )


def test_wav_with_malformed_size_fields_is_cached_whole(tmp_path, fsdd_dir):
    """An FSDD clip whose RIFF size field says 8 and data size field says 0: soundfile reads every frame."""
    root = tmp_path / "sounds"
    (root / "zero").mkdir(parents=True)
    (root / "one").mkdir()
    data = bytearray((fsdd_dir / "recordings" / "0_george_6.wav").read_bytes())
    data_chunk = data.index(b"data", 12)
    data[4:8] = struct.pack("<I", 8)
    data[data_chunk + 4 : data_chunk + 8] = struct.pack("<I", 0)
    (root / "zero" / "malformed.wav").write_bytes(bytes(data))
    (root / "one" / "good.wav").write_bytes((fsdd_dir / "recordings" / "1_george_6.wav").read_bytes())
    samples, rate = sf.read(root / "zero" / "malformed.wav", dtype="float32")
    assert (len(samples), rate) == (5148, 8000)  # the whole 0.64 s clip

    out = tmp_path / "results" / "data" / "mine"
    build_manifest("mine", {"adapter": "folder", "options": {"root": str(root)}}, out)
    index = preprocess(out / "manifest.parquet", out / "sr16000", sample_rate=16000, **preprocess_settings())
    row = index.index[index["clip_id"] == "zero/malformed.wav"][0]
    assert index.loc[row, "length"] == resampled_length(5148, 8000, 16000) == 10296
    cached = AudioCache(out / "sr16000").waveform(row)
    np.testing.assert_allclose(cached, torchaudio_resample(samples, 8000), rtol=0, atol=FLOAT32_TOLERANCE)


@pytest.mark.parametrize("change", ["shorter", "other rate"])
def test_a_clip_that_no_longer_matches_its_manifest_stops_the_run_naming_it(tmp_path, change):
    manifest = write_manifest(
        tmp_path, [("a", sine(100, 8000, 0.5), 8000), ("b", sine(100, 8000, 0.5), 8000)]
    )
    if change == "shorter":
        sf.write(tmp_path / "b.wav", sine(100, 8000, 0.25), 8000, subtype="FLOAT")
    else:
        sf.write(tmp_path / "b.wav", sine(100, 16000, 0.5), 16000, subtype="FLOAT")
    with pytest.raises(BadAudioError, match=r"b\.wav: decoded .* manifest entry"):
        preprocess(manifest, tmp_path / "sr16000", sample_rate=16000, **preprocess_settings())
    assert not (tmp_path / "sr16000").exists() or not any((tmp_path / "sr16000").iterdir())  # nothing left


def test_a_missing_file_stops_the_run_naming_it(tmp_path):
    manifest = write_manifest(tmp_path, [("gone", sine(100, 8000, 0.1), 8000)])
    (tmp_path / "gone.wav").unlink()
    with pytest.raises(sf.LibsndfileError, match="gone.wav"):
        preprocess(manifest, tmp_path / "sr16000", sample_rate=16000, **preprocess_settings())


def test_a_killed_runs_temp_file_is_removed_on_rerun(tmp_path):
    """SIGKILL skips atomic_path's cleanup; the next run of the job removes what the killed one left."""
    manifest = write_manifest(tmp_path, [("a", sine(100, 8000, 0.1), 8000)])
    cache = tmp_path / "sr16000"
    cache.mkdir()
    stale = cache / ".waveforms.npy.k1ll3d_x.npy.tmp"
    stale.write_bytes(b"\0" * 4096)
    unrelated = cache / ".notes.npy.k1ll3d_x.npy.tmp"  # another output's temp: not this job's to remove
    unrelated.write_bytes(b"x")
    preprocess(manifest, cache, sample_rate=16000, **preprocess_settings())
    assert not stale.exists() and unrelated.exists()
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [unrelated.name, "waveforms.npy", "index.parquet", "stats.json"]
    )


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_a_full_disk_is_an_error_and_leaves_no_temp_file(tmp_path, monkeypatch):
    import acft.data.preprocess as module

    manifest = write_manifest(tmp_path, [("a", sine(100, 8000, 1.0), 8000)])
    real_open = open

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        return real_open("/dev/full" if "w" in mode else path, mode, *args, **kwargs)  # writes: ENOSPC

    monkeypatch.setattr(module, "open", open_on_a_full_disk, raising=False)
    with pytest.raises(OSError, match="No space left"):
        preprocess(manifest, tmp_path / "sr16000", sample_rate=16000, **preprocess_settings())
    assert not any((tmp_path / "sr16000").iterdir())


@pytest.mark.parametrize("dtype", ["float16", "int16"])
def test_half_size_caches_read_back_within_their_quantisation_step(tmp_path, dtype):
    """float16 / int16 caches take half the bytes and read back as float32 within half a quantisation step of
    the float32 cache: 2^-11 of the value (float16: 11 significant bits, round to nearest; 2^-25 absolute in
    its subnormal range) or 0.5 / 32768 (int16). A sample beyond full scale is clipped (int16), and counted."""
    rate = 16000
    quiet = sine(300.0, rate, 0.5, amplitude=1e-3)
    loud = sine(200.0, rate, 0.5, amplitude=1.2)  # 16-bit PCM cannot hold its peaks
    manifest = write_manifest(tmp_path, [("quiet", quiet, rate), ("loud", loud, rate)])
    preprocess(manifest, tmp_path / "f32" / "sr16000", sample_rate=rate, **preprocess_settings())
    preprocess(manifest, tmp_path / dtype / "sr16000", sample_rate=rate, **preprocess_settings(dtype=dtype))
    exact, half = AudioCache(tmp_path / "f32" / "sr16000"), AudioCache(tmp_path / dtype / "sr16000")
    full, small = (c.directory / "waveforms.npy" for c in (exact, half))
    assert half.samples.dtype == np.dtype(dtype)
    assert full.stat().st_size - 128 == 2 * (small.stat().st_size - 128)  # .npy header: 128 bytes
    stats = json.loads((half.directory / "stats.json").read_text())
    assert stats["dtype"] == dtype and stats["bytes"] == small.stat().st_size - 128
    for i in range(len(exact)):
        x, y = np.asarray(exact.waveform(i)), half.waveform(i)
        assert y.dtype == np.float32 and len(x) == len(y)
        if dtype == "float16":
            bound = np.maximum(np.abs(x) * 2.0**-11, 2.0**-25)
        else:
            bound = np.full_like(x, 0.5 / 32768)
            x = np.clip(x, -1.0, 32767 / 32768)
        assert np.all(np.abs(y - x) <= bound * (1 + 1e-6))
    if dtype == "int16":
        pcm = np.round(np.asarray(exact.waveform(1), dtype=np.float64) * 32768)
        beyond = np.count_nonzero((pcm > 32767) | (pcm < -32768))
        assert beyond > 0 and stats["int16_clipped_samples"] == beyond
