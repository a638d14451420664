"""The canonical manifest: contract checks, stats, and bad audio in both modes (error naming the file, or a
listed and counted skip), through the real folder importer."""

import contextlib
import json
import os
import signal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from acft.data.manifest import BadAudioError, build_manifest, inspect_audio, validate_manifest


def tone(seconds=0.2, rate=8000):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.fixture
def corpus(tmp_path):
    """Six good clips in two class folders plus four bad files, one of each kind."""
    root = tmp_path / "sounds"
    for label in ("bird", "car"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            sf.write(root / label / f"{label}_{i}.wav", tone(0.1 * (i + 1)), 8000)
    (root / "bird" / "garbage.wav").write_bytes(b"RIFF not really a wave file")
    sf.write(root / "car" / "empty.wav", np.zeros(0, dtype=np.float32), 8000)
    nan = tone()
    nan[10] = np.nan
    sf.write(root / "car" / "nan.wav", nan, 8000, subtype="FLOAT")
    inf = tone()
    inf[5] = np.inf
    sf.write(root / "bird" / "inf.wav", inf, 8000, subtype="FLOAT")
    return root


def folder_dataset(root):
    return {"adapter": "folder", "options": {"root": str(root)}}


def test_bad_audio_stops_the_run_naming_the_file(corpus, tmp_path):
    out = tmp_path / "results" / "data" / "mine"
    with pytest.raises(BadAudioError) as error:
        build_manifest("mine", folder_dataset(corpus), out, on_bad_audio="error")
    message = str(error.value)
    assert any(name in message for name in ("garbage.wav", "empty.wav", "nan.wav", "inf.wav"))
    assert "on_bad_audio: skip" in message
    assert not (out / "manifest.parquet").exists()  # nothing half-written


def test_bad_audio_skipped_is_listed_and_counted(corpus, tmp_path):
    out = tmp_path / "results" / "data" / "mine"
    manifest = build_manifest("mine", folder_dataset(corpus), out, on_bad_audio="skip")
    assert len(manifest) == 6
    skipped = pd.read_csv(out / "skipped.csv")
    reasons = dict(zip(skipped["path"].map(lambda p: p.rsplit("/", 1)[1]), skipped["reason"], strict=True))
    assert set(reasons) == {"garbage.wav", "empty.wav", "nan.wav", "inf.wav"}
    assert "unreadable" in reasons["garbage.wav"]
    assert "zero-length" in reasons["empty.wav"]
    assert "NaN or infinite" in reasons["nan.wav"] and "NaN or infinite" in reasons["inf.wav"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["clips"] == 6 and stats["skipped"] == 4
    assert stats["class_counts"] == {"bird": 3, "car": 3}
    assert stats["duration_s_quantiles"]["0.0"] == pytest.approx(0.1)
    assert stats["duration_s_quantiles"]["1.0"] == pytest.approx(0.3)


def test_manifest_contract_on_disk(corpus, tmp_path):
    out = tmp_path / "data"
    build_manifest("mine", folder_dataset(corpus), out, on_bad_audio="skip")
    table = pq.read_table(out / "manifest.parquet")
    assert table.column_names[:7] == [
        "clip_id",
        "path",
        "labels",
        "split",
        "fold",
        "duration_s",
        "sample_rate",
    ]
    assert str(table.schema.field("labels").type) == "list<element: string>"
    manifest = table.to_pandas()
    assert manifest["clip_id"].is_unique
    assert set(manifest["split"]) <= {"train", "val", "test"} and manifest["fold"].isna().all()
    assert (manifest["sample_rate"] == 8000).all()
    assert (out / "labels.txt").read_text().split() == ["bird", "car"]


def test_validate_manifest_rejects_broken_contracts():
    good = pd.DataFrame(
        {
            "clip_id": ["a", "b"],
            "path": ["x", "y"],
            "labels": [["l"], ["m"]],
            "split": ["train", "test"],
            "fold": [None, None],
        }
    )
    validate_manifest(good)
    with pytest.raises(ValueError, match="not unique"):
        validate_manifest(good.assign(clip_id=["a", "a"]))
    with pytest.raises(ValueError, match="exactly one of split"):
        validate_manifest(good.assign(fold=[1, None]))
    with pytest.raises(ValueError, match="not among"):
        validate_manifest(good.assign(split=["train", "dev"]))
    with pytest.raises(ValueError, match="lists of strings"):
        validate_manifest(good.assign(labels=["l", ["m"]]))


@contextlib.contextmanager
def deadline(seconds):
    """Fail instead of hanging: SIGALRM interrupts a blocking open() (of a FIFO without a writer)."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def corpus_with_fifo(tmp_path):
    """Two good clips per class folder and a FIFO named like a clip (opening it would wait for a writer)."""
    root = tmp_path / "sounds"
    for label in ("bird", "car"):
        (root / label).mkdir(parents=True)
        for i in range(2):
            sf.write(root / label / f"{label}_{i}.wav", tone(), 8000)
    os.mkfifo(root / "car" / "x.wav")
    return root


def test_a_fifo_named_like_a_clip_stops_the_run_naming_it(corpus_with_fifo, tmp_path):
    out = tmp_path / "data"
    with deadline(20), pytest.raises(BadAudioError, match=r"car/x\.wav: not a regular file but a FIFO"):
        build_manifest("mine", folder_dataset(corpus_with_fifo), out, on_bad_audio="error")
    assert not (out / "manifest.parquet").exists()


def test_a_fifo_named_like_a_clip_is_skipped_listed_and_counted(corpus_with_fifo, tmp_path, caplog):
    out = tmp_path / "data"
    with deadline(20), caplog.at_level("WARNING", logger="acft.data.manifest"):
        manifest = build_manifest("mine", folder_dataset(corpus_with_fifo), out, on_bad_audio="skip")
    assert len(manifest) == 4
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["clip_id"].tolist() == ["car/x.wav"]
    assert "not a regular file but a FIFO" in skipped["reason"][0] and "x.wav" in caplog.text
    assert json.loads((out / "stats.json").read_text())["skipped"] == 1


def test_adapters_list_a_fifo_so_the_manifest_step_can_name_it(tmp_path):
    from acft.data.adapters.common import audio_files

    (tmp_path / "sub.wav").mkdir()  # a directory named like a clip is no clip
    sf.write(tmp_path / "a.wav", tone(), 8000)
    os.mkfifo(tmp_path / "b.wav")
    assert [p.name for p in audio_files(tmp_path)] == ["a.wav", "b.wav"]
    with deadline(20), pytest.raises(BadAudioError, match="not a regular file but a FIFO"):
        inspect_audio(str(tmp_path / "b.wav"))
    with pytest.raises(BadAudioError, match="not a regular file but a directory"):
        inspect_audio(str(tmp_path / "sub.wav"))
