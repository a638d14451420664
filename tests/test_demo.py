"""The embedded demo renderer: determinism, leak-free splits (checked with an independent SoundFont reader),
labels that match the audio, and loudness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import tinysoundfont
import torch
from scipy.signal import resample_poly

from acft.data.demo import (
    PROGRAM_KEYS,
    playable_keys,
    render_chords,
    render_instruments,
    render_mixtures,
    render_notes,
)
from acft.data.manifest import validate_manifest

from sf2_reference import ReferenceSoundFont, connected_zones

torch.set_num_threads(1)

SF2 = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
# classes: {0,1,3} (identical piano maps, 9 zones), 2, 9 (a one-key zone), 11 (3 zones); 78 has one zone
INSTRUMENT_PROGRAMS = [0, 1, 2, 3, 9, 11, 78]
INSTRUMENT_OPTIONS = {"programs": INSTRUMENT_PROGRAMS, "max_notes_per_zone": 2}
# four families that split three ways; family 1 (8, 9) has too few programs; 51 and 89 share one sample map
MIXTURE_PROGRAMS = [*range(0, 8), *range(16, 32), *range(40, 48), 8, 9, 51, 89]
MIXTURE_OPTIONS = {"programs": MIXTURE_PROGRAMS, "n_train": 12, "n_val": 4, "n_test": 6}
# held-out instruments: units {0,1,2,3} (two sample maps sharing a sample), {17,18}, {20..23}, {29,30}, {40,41}
# join programs; 38 (bass) and 87 (synth lead) share a sample, so that unit spans two families and trains;
# family 11 has one unit (88 and 92 play one sample map), too few to hold out
HELD_OUT_PROGRAMS = [*range(0, 8), *range(16, 32), *range(40, 48), 38, 87, 88, 92]
HELD_OUT_FAMILIES = [0, 2, 3, 4, 5, 10, 11]
NOTE_OPTIONS = {"programs": HELD_OUT_PROGRAMS, "families": HELD_OUT_FAMILIES, "notes_per_unit": 6}
CHORD_OPTIONS = {"programs": HELD_OUT_PROGRAMS, "families": HELD_OUT_FAMILIES, "n_train": 12, "n_val": 4}
CHORD_OPTIONS |= {"n_test": 6}


@pytest.fixture(scope="module")
def reference():
    return ReferenceSoundFont(SF2)


@pytest.fixture(scope="module")
def instruments(tmp_path_factory):
    return render_instruments(tmp_path_factory.mktemp("instruments"), INSTRUMENT_OPTIONS, seed=0)


@pytest.fixture(scope="module")
def mixtures(tmp_path_factory):
    return render_mixtures(tmp_path_factory.mktemp("mixtures"), MIXTURE_OPTIONS, seed=0)


@pytest.fixture(scope="module")
def notes(tmp_path_factory):
    return render_notes(tmp_path_factory.mktemp("notes"), NOTE_OPTIONS, seed=0)


@pytest.fixture(scope="module")
def chords(tmp_path_factory):
    return render_chords(tmp_path_factory.mktemp("chords"), CHORD_OPTIONS, seed=0)


def read(path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float64")
    assert audio.ndim == 1 and rate == 22050 and sf.info(path).subtype == "PCM_16"
    return audio


def dbfs(audio) -> float:
    return 20 * np.log10(np.sqrt(np.mean(audio**2)))


def reference_note(program: int, key: int) -> np.ndarray:
    """The demo's note protocol written out again: 44.1 kHz, gain -6 dB, held 0.6 s, 1 s clip, mono mean."""
    synth = tinysoundfont.Synth(gain=-6, samplerate=44100)
    sfid = synth.sfload(str(SF2))
    synth.program_select(0, sfid, 0, program)
    synth.noteon(0, key, 100)
    held = np.frombuffer(synth.generate(26460), dtype=np.float32)
    synth.noteoff(0, key)
    tail = np.frombuffer(synth.generate(44100 - 26460), dtype=np.float32)
    stereo = np.concatenate([held, tail]).reshape(-1, 2).astype(np.float64)
    return stereo.mean(axis=1)


def assert_zone_split(manifest, reference):
    """No val/test note of a class sounds a sample that a training note of that class sounds."""
    samples = [reference.samples(p, k) for p, k in zip(manifest["program"], manifest["key"], strict=True)]
    assert [",".join(map(str, sorted(s))) for s in samples] == manifest["samples"].tolist()
    manifest = manifest.assign(sample_set=samples)
    for label, rows in manifest.groupby(manifest["labels"].str[0]):
        heard = {
            role: set().union(*rows.loc[rows["split"] == role, "sample_set"])
            for role in ("train", "val", "test")
        }
        assert heard["train"] and heard["test"], label
        assert not heard["train"] & heard["test"], label
        assert not heard["train"] & heard["val"], label
        assert not heard["val"] & heard["test"], label
        assert rows["split"].isin(["train", "val", "test"]).all()
        # every member program plays exactly the class's samples on its playable keys
        members = [int(p) for p in rows["programs_in_class"].iloc[0].split(",")]
        maps = [reference.key_map(p, playable_keys(p)) for p in members]
        assert all(m == maps[0] for m in maps), label
        assert label.startswith(f"p{members[0]:03d}_"), label


def test_unknown_or_excluded_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="bogus"):
        render_instruments(tmp_path, {"bogus": 1}, seed=0)
    with pytest.raises(ValueError, match="notes_per_zone"):
        render_mixtures(tmp_path, {"max_notes_per_zone": 2}, seed=0)
    excluded = next(p for p, keys in PROGRAM_KEYS.items() if keys is None)
    with pytest.raises(ValueError, match=str(excluded)):
        render_instruments(tmp_path, {"programs": [excluded]}, seed=0)
    with pytest.raises(ValueError, match="notes_max"):
        render_mixtures(tmp_path, {"programs": [0, 1, 2, 3, 4, 5, 6, 7]}, seed=0)


def assert_same_render(first, again) -> None:
    """The same manifest rows (paths aside), render statistics and WAV bytes."""
    assert again.drop(columns="path").equals(first.drop(columns="path"))
    assert again.attrs.get("render_stats") == first.attrs.get("render_stats")
    for a, b in zip(first["path"], again["path"], strict=True):
        assert open(a, "rb").read() == open(b, "rb").read()


def test_instruments_are_byte_identical_across_runs(instruments, tmp_path):
    assert_same_render(instruments, render_instruments(tmp_path, INSTRUMENT_OPTIONS, seed=0))


def test_mixtures_are_byte_identical_across_runs(mixtures, tmp_path):
    assert_same_render(mixtures, render_mixtures(tmp_path, MIXTURE_OPTIONS, seed=0))


def test_instrument_manifest_contract(instruments, tmp_path):
    assert list(instruments.columns[:7]) == [
        "clip_id",
        "path",
        "labels",
        "split",
        "fold",
        "duration_s",
        "sample_rate",
    ]
    assert instruments["clip_id"].is_unique and instruments["fold"].isna().all()
    for clip_id, path in zip(instruments["clip_id"], instruments["path"], strict=True):
        assert path.startswith("/") and path.endswith(f"/audio/{clip_id}.wav")
        assert len(read(path)) == 22050
    classes = {labels[0] for labels in instruments["labels"]}
    assert classes == {
        "p000_acoustic_grand_piano",
        "p002_electric_grand_piano",
        "p009_glockenspiel",
        "p011_vibraphone",
    }
    assert instruments.loc[instruments["program"] == 0, "programs_in_class"].unique().tolist() == ["0,1,3"]
    stats = instruments.attrs["render_stats"]
    assert stats["classes_single_zone"] == ["p078_whistle"] and stats["programs_excluded"] == []
    assert sum(stats["clips_per_split"].values()) == len(instruments)
    validate_manifest(instruments)


def test_mixture_manifest_contract(mixtures):
    validate_manifest(mixtures)
    assert mixtures["clip_id"].is_unique and (mixtures["duration_s"] == 1.0).all()
    assert mixtures.attrs["render_stats"]["clips_per_split"] == {"train": 12, "val": 4, "test": 6}


def test_max_classes_keeps_the_first_usable_classes(tmp_path):
    manifest = render_instruments(tmp_path, {"programs": [8, 9, 11], "max_classes": 1}, seed=0)
    stats = manifest.attrs["render_stats"]
    assert stats["classes_single_zone"] == ["p008_celesta"]
    assert stats["classes_kept"] == ["p009_glockenspiel"] and stats["classes_beyond_max"] == [
        "p011_vibraphone"
    ]
    assert set(manifest["program"]) == {9}


def test_instrument_split_never_reuses_a_training_sample(instruments, reference):
    assert_zone_split(instruments, reference)
    # classes with three or more zones hold one out for val as well
    zone_counts = instruments.groupby("program")["zone"].nunique()
    for program, n_zones in zone_counts.items():
        roles = set(instruments.loc[instruments["program"] == program, "split"])
        assert roles == ({"train", "val", "test"} if n_zones >= 3 else {"train", "test"})


def test_dropped_instruments_have_a_single_zone(instruments, reference):
    kept = {int(p) for members in instruments["programs_in_class"] for p in members.split(",")}
    for program in set(INSTRUMENT_PROGRAMS) - kept:
        assert connected_zones(reference.key_map(program, playable_keys(program)).values()) == 1


def test_held_out_zones_follow_the_seed(instruments, tmp_path):
    def held_out(manifest):
        return sorted(zip(manifest["program"], manifest["zone"], manifest["split"], strict=True))

    assert held_out(render_instruments(tmp_path / "s0", INSTRUMENT_OPTIONS, seed=0)) == held_out(instruments)
    others = [held_out(render_instruments(tmp_path / f"s{s}", INSTRUMENT_OPTIONS, seed=s)) for s in (1, 2, 3)]
    assert any(other != held_out(instruments) for other in others)


def test_mixture_programs_never_cross_splits(mixtures, reference):
    programs = {role: set() for role in ("train", "val", "test")}
    for role, members in zip(mixtures["split"], mixtures["programs"], strict=True):
        programs[role].update(members)
    assert not programs["train"] & programs["test"]
    assert not programs["train"] & programs["val"]
    assert not programs["val"] & programs["test"]
    # programs that play identical samples count as one program
    maps = {p: reference.key_map(p, playable_keys(p)) for p in set().union(*programs.values())}
    for held in programs["test"] | programs["val"]:
        assert all(maps[held] != maps[seen] for seen in programs["train"]), held
    stats = mixtures.attrs["render_stats"]
    assert stats["programs_shared_across_families"] == [51, 89]
    assert stats["families_too_few_programs"] == ["f01_chromatic_percussion"]
    used_families = {label for labels in mixtures["labels"] for label in labels}
    assert used_families <= {"f00_piano", "f02_organ", "f03_guitar", "f05_strings"}


def test_mixture_labels_are_the_families_heard(mixtures):
    for row in mixtures.itertuples():
        families = [f"f{p // 8:02d}_" for p in row.programs]
        assert len(set(families)) == len(families) and 2 <= len(families) <= 3
        assert [label[:4] for label in row.labels] == families and row.labels == sorted(row.labels)
        assert row.labels == row.families
        assert all(
            pretty_midi.program_to_instrument_class(p).lower().split()[0] in label
            for p, label in zip(row.programs, row.labels, strict=True)
        )
        mixture = read(row.path)
        notes = [reference_note(p, k) for p, k in zip(row.programs, row.keys, strict=True)]
        assert all(dbfs(note) > -60 for note in notes), row.clip_id
        # the mixture is the sum of its notes at equal loudness, nothing else
        basis = np.stack([resample_poly(note, 1, 2) for note in notes], axis=1)
        weights, *_ = np.linalg.lstsq(basis, mixture, rcond=None)
        residual = mixture - basis @ weights
        assert np.sqrt(np.mean(residual**2)) < 0.01 * np.sqrt(np.mean(mixture**2)), row.clip_id
        contribution = np.abs(weights) * np.sqrt(np.mean(basis**2, axis=0))
        np.testing.assert_allclose(contribution / contribution.mean(), 1.0, rtol=0.05)


def clip_samples(reference, program, keys) -> frozenset[int]:
    return frozenset().union(*(reference.samples(program, key) for key in keys))


def assert_held_out_split(manifest, reference, keys_of):
    """No val/test clip of a class is rendered from an instrument or a sample that a training clip of that class
    uses; here even across classes: the roles' sample sets are disjoint, and no val/test program plays a sample
    that any training program plays on a key of the task's range."""
    samples = [clip_samples(reference, row.program, keys_of(row)) for row in manifest.itertuples()]
    assert [",".join(map(str, sorted(s))) for s in samples] == manifest["samples"].tolist()
    manifest = manifest.assign(sample_set=samples)
    heard = {role: manifest.loc[manifest["split"] == role] for role in ("train", "val", "test")}
    assert all(len(rows) for rows in heard.values())
    for label in {label for labels in manifest["labels"] for label in labels}:
        per_role = {
            role: set().union(
                *rows.loc[rows["labels"].map(lambda ls, label=label: label in ls), "sample_set"]
            )
            for role, rows in heard.items()
        }
        assert not per_role["train"] & (per_role["val"] | per_role["test"]), label
        assert not per_role["val"] & per_role["test"], label
    sets = {role: set().union(*rows["sample_set"]) for role, rows in heard.items()}
    assert (
        not sets["train"] & sets["val"]
        and not sets["train"] & sets["test"]
        and not sets["val"] & sets["test"]
    )
    # whole instruments: every sample a held-out program can sound in the key range is unheard in training
    keys = range(48, 84)
    programs = {role: set(rows["program"]) for role, rows in heard.items()}
    train_samples = set().union(*(clip_samples(reference, p, keys) for p in programs["train"]))
    for program in programs["val"] | programs["test"]:
        assert not clip_samples(reference, program, keys) & train_samples, program
    assert not programs["train"] & (programs["val"] | programs["test"])


def test_notes_are_byte_identical_across_runs(notes, tmp_path):
    assert_same_render(notes, render_notes(tmp_path, NOTE_OPTIONS, seed=0))


def test_chords_are_byte_identical_across_runs(chords, tmp_path):
    assert_same_render(chords, render_chords(tmp_path, CHORD_OPTIONS, seed=0))


def test_note_split_holds_out_whole_instruments(notes, reference):
    assert_held_out_split(notes, reference, lambda row: [row.key])
    stats = notes.attrs["render_stats"]
    assert stats["units_spanning_families"] == [[38, 87]]
    assert stats["families_train_only"] == ["f11_synth_pad"]  # 4 and 10 have no single-family unit
    partition = stats["partition"]
    assert [38, 87] in partition["train"] and [88, 92] in partition["train"]
    # programs sharing a sample move together: each unit lies in one role
    units = notes.groupby("unit")["split"].nunique()
    assert (units == 1).all() and {0, 17, 20, 29, 40} <= set(units.index) | {
        u for members in partition["val"] + partition["test"] for u in members
    }
    for role in ("val", "test"):
        assert {f"f{f:02d}" for f in (0, 2, 3, 5)} == {
            label[:3] for label in notes.loc[notes["split"] == role, "family"]
        }


def test_note_labels_and_manifest(notes, tmp_path):
    validate_manifest(notes)
    assert notes["clip_id"].is_unique and (notes["duration_s"] == 1.0).all()
    assert all(
        labels == [f"pc{key % 12:02d}_{'C Cs D Ds E F Fs G Gs A As B'.split()[key % 12]}"]
        for labels, key in zip(notes["labels"], notes["key"], strict=True)
    )
    assert notes["key"].between(48, 83).all()
    # pitch classes are cycled per unit: 6 notes per unit give 6 distinct pitch classes
    assert (notes.groupby("unit")["key"].apply(lambda keys: (keys % 12).nunique()) == 6).all()
    for label, expected in (
        ("octave", lambda p, k: f"oct{k // 12 - 1}"),
        ("family", lambda p, k: f"f{p // 8:02d}_"),
    ):
        other = render_notes(tmp_path / label, NOTE_OPTIONS | {"label": label}, seed=0)
        assert other[["program", "key", "split"]].equals(notes[["program", "key", "split"]])
        assert all(
            labels[0].startswith(expected(p, k))
            for labels, p, k in zip(other["labels"], other["program"], other["key"], strict=True)
        )
    seeds = [
        render_notes(tmp_path / f"s{s}", NOTE_OPTIONS, seed=s).attrs["render_stats"]["partition"]
        for s in (1, 2)
    ]
    assert any(partition != notes.attrs["render_stats"]["partition"] for partition in seeds)


def test_chord_split_holds_out_whole_instruments(chords, reference):
    assert_held_out_split(chords, reference, lambda row: row.keys)


def test_chord_labels_are_the_pitch_classes_heard(chords):
    validate_manifest(chords)
    assert chords.attrs["render_stats"]["clips_per_split"] == {"train": 12, "val": 4, "test": 6}
    for row in chords.itertuples():
        classes = [key % 12 for key in row.keys]
        assert 2 <= len(row.keys) <= 3 and len(set(classes)) == len(classes) and row.keys == sorted(row.keys)
        assert [int(label[2:4]) for label in row.labels] == sorted(classes) and row.labels == sorted(
            row.labels
        )
        mixture = read(row.path)
        notes = [reference_note(row.program, key) for key in row.keys]
        basis = np.stack([resample_poly(note, 1, 2) for note in notes], axis=1)
        weights, *_ = np.linalg.lstsq(basis, mixture, rcond=None)
        residual = mixture - basis @ weights
        assert np.sqrt(np.mean(residual**2)) < 0.01 * np.sqrt(np.mean(mixture**2)), row.clip_id
        contribution = np.abs(weights) * np.sqrt(np.mean(basis**2, axis=0))
        np.testing.assert_allclose(contribution / contribution.mean(), 1.0, rtol=0.05)


@pytest.mark.parametrize("task", ["instruments", "mixtures", "notes", "chords"])
def test_loud_enough_and_never_clipped(task, request):
    manifest = request.getfixturevalue(task)
    levels = np.array([dbfs(read(path)) for path in manifest["path"]])
    peaks = np.array([np.abs(read(path)).max() for path in manifest["path"]])
    assert (peaks < 1.0).all()
    assert (levels > -60).all()
    off_target = np.abs(levels + 30) > 0.1
    assert off_target.sum() == manifest.attrs["render_stats"]["clips_peak_limited"]


def test_other_sample_rates_keep_length_loudness_and_pitch(tmp_path):
    options = {
        "programs": [0],
        "max_notes_per_zone": 1,
        "sample_rate": 16000,
        "clip_seconds": 0.5,
        "note_seconds": 0.3,
    }
    manifest = render_instruments(tmp_path, options, seed=0)
    assert (manifest["duration_s"] == 0.5).all() and (manifest["sample_rate"] == 16000).all()
    for key, path in zip(manifest["key"], manifest["path"], strict=True):
        audio, rate = sf.read(path)
        assert rate == 16000 and len(audio) == 8000
        assert abs(dbfs(audio) + 30) < 0.1
        # equal-tempered pitch of the key (A4 = key 69 = 440 Hz) is present and nothing sounds below it
        spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)), 16 * len(audio)))
        freqs = np.fft.rfftfreq(16 * len(audio), 1 / rate)
        f0 = 440 * 2 ** ((key - 69) / 12)
        near_f0 = spectrum[np.abs(freqs / f0 - 1) < 0.015].max()
        assert near_f0 > 0.1 * spectrum.max(), key
        assert spectrum[(freqs > 20) & (freqs < 0.9 * f0)].max() < 0.1 * spectrum.max(), key


def test_full_default_instruments_split_is_leak_free(tmp_path, reference):
    manifest = render_instruments(tmp_path, {}, seed=0)
    stats = manifest.attrs["render_stats"]
    assert len(stats["classes_kept"]) + len(stats["classes_single_zone"]) == stats["classes_total"]
    assert len(stats["classes_kept"]) >= 60 and not stats["notes_below_floor"]
    assert stats["programs_excluded"] == [p for p, keys in PROGRAM_KEYS.items() if keys is None]
    assert_zone_split(manifest, reference)
