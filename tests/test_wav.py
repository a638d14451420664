"""The fast WAV reader: bit-identical to soundfile where it reads a file, and None (soundfile fallback) elsewhere."""

import struct

import numpy as np
import pytest
import soundfile as sf

from acft.data import wav


def assert_same_as_soundfile(path):
    ours = wav.read(path)
    assert ours is not None, f"{path} should take the fast path"
    samples, rate = ours
    expected, expected_rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == expected_rate
    assert samples.dtype == np.float32 and samples.shape == expected.shape
    np.testing.assert_array_equal(samples.view(np.uint32), expected.view(np.uint32))  # bit for bit


def noise(frames=1001, channels=1, seed=0):
    """Noise over the full scale, with the extremes and silence (which quantisers treat specially)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (frames, channels))
    x[:4] = np.array([-1.0, 1.0, 0.0, -0.5])[:, None]
    return x


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("container", ["WAV", "WAVEX"])
def test_every_plain_format_is_bit_identical_to_soundfile(tmp_path, subtype, channels, container):
    if subtype == "PCM_U8" and container == "WAVEX":
        pytest.skip("libsndfile writes no 8-bit WAVEX")
    path = tmp_path / "x.wav"
    sf.write(path, noise(channels=channels), 22050, subtype=subtype, format=container)
    assert_same_as_soundfile(path)


def test_all_fsdd_recordings_are_bit_identical_to_soundfile(fsdd_dir):
    paths = sorted((fsdd_dir / "recordings").glob("*.wav"))
    assert len(paths) >= 2000
    for path in paths:
        assert_same_as_soundfile(path)


def insert_chunk(path, chunk: bytes, before: bytes):
    """Insert a raw chunk before the first chunk named ``before`` and fix the RIFF size."""
    data = path.read_bytes()
    at = data.index(before, 12)
    data = data[:at] + chunk + data[at:]
    path.write_bytes(data[:4] + struct.pack("<I", len(data) - 8) + data[8:])


def test_chunks_before_and_after_the_data_are_skipped(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, noise(frames=777), 8000, subtype="PCM_16")
    insert_chunk(path, b"LIST" + struct.pack("<I", 5) + b"INFOx" + b"\0", before=b"data")  # odd size, padded
    insert_chunk(path, b"junk" + struct.pack("<I", 70_000) + bytes(70_000), before=b"LIST")  # beyond the head
    with open(path, "ab") as f:
        f.write(b"cue " + struct.pack("<I", 4) + b"\0\0\0\0")
    data = path.read_bytes()
    path.write_bytes(data[:4] + struct.pack("<I", len(data) - 8) + data[8:])
    assert_same_as_soundfile(path)


def test_long_files_read_the_data_beyond_the_first_read(tmp_path):
    path = tmp_path / "x.wav"
    frames = wav.HEAD_BYTES  # 2 bytes a frame: twice the first read
    sf.write(path, noise(frames=frames, channels=2), 48000, subtype="PCM_16")
    assert_same_as_soundfile(path)


def test_empty_data_chunk(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, np.zeros((0, 1)), 16000, subtype="PCM_16")
    samples, rate = wav.read(path)
    assert samples.shape == (0, 1) and rate == 16000


def patched(path, offset: int, value: bytes):
    data = bytearray(path.read_bytes())
    data[offset : offset + len(value)] = value
    path.write_bytes(bytes(data))


def fallback_files(tmp_path):
    """Files wav.py must decline (soundfile reads each of them, or rejects it itself)."""
    signal = noise(frames=500)
    files = {}
    for name, kwargs in {
        "flac": dict(format="FLAC", subtype="PCM_16"),
        "ulaw": dict(format="WAV", subtype="ULAW"),
        "adpcm": dict(format="WAV", subtype="IMA_ADPCM"),
        "rifx": dict(format="WAV", subtype="PCM_16", endian="BIG"),
        "rf64": dict(format="RF64", subtype="PCM_16"),
        "aiff": dict(format="AIFF", subtype="PCM_16"),
    }.items():
        files[name] = tmp_path / f"{name}.audio"
        sf.write(files[name], signal, 16000, **kwargs)
    # a 'data' chunk claiming more bytes than the file holds (truncated download)
    files["truncated"] = tmp_path / "truncated.wav"
    sf.write(files["truncated"], signal, 16000, subtype="PCM_16")
    data = files["truncated"].read_bytes()
    files["truncated"].write_bytes(data[:-100])
    # a streamed WAV whose sizes were never filled in
    files["streamed"] = tmp_path / "streamed.wav"
    sf.write(files["streamed"], signal, 16000, subtype="PCM_16")
    patched(files["streamed"], 40, b"\xff\xff\xff\xff")
    # extensible PCM with padded samples: 20 valid bits in 24
    files["padded"] = tmp_path / "padded.wav"
    sf.write(files["padded"], signal, 16000, subtype="PCM_24", format="WAVEX")
    data = files["padded"].read_bytes()
    patched(files["padded"], data.index(b"fmt ") + 8 + 18, struct.pack("<H", 20))
    return files


def test_unsupported_files_fall_back(tmp_path):
    for name, path in fallback_files(tmp_path).items():
        assert wav.read(path) is None, name


def test_preprocess_reads_fallback_files_with_soundfile(tmp_path):
    from acft.data.preprocess import fill, open_source

    for name, path in fallback_files(tmp_path).items():
        try:
            expected, rate = sf.read(path, dtype="float32", always_2d=True)
        except sf.LibsndfileError:
            with pytest.raises(sf.LibsndfileError):
                open_source(str(path))
            continue
        source = open_source(str(path))
        assert source.wav is None and source.rate == rate and source.frames == len(expected), name
        out = np.empty(source.frames, dtype=np.float32)
        fill(source, out)
        np.testing.assert_array_equal(out, expected.mean(axis=1, dtype=np.float32), err_msg=name)


def test_missing_and_non_audio_files_raise_soundfiles_error(tmp_path):
    from acft.data.preprocess import open_source

    (tmp_path / "text.wav").write_text("not audio")
    for path in (tmp_path / "missing.wav", tmp_path / "text.wav"):
        with pytest.raises(sf.LibsndfileError):
            open_source(str(path))
