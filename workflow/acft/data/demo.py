"""The embedded demo datasets, rendered offline from the General-MIDI SoundFont bundled with pretty_midi.

Four tasks, all deterministic given (seed, options): same inputs give byte-identical WAV files and manifests.

- ``render_instruments`` (single-label): instrument identity. Programs whose key -> sample maps are identical are
  merged into one class. Each class is split by *sample zone*: keys whose samples are connected through sharing
  a sample form one zone, one zone goes to test, one to val (if the class has >= 3 zones), the rest to train, so
  no val/test note sounds a sample that the class's training notes use. Single-zone classes are dropped.
- ``render_mixtures`` (multi-label): 2-3 simultaneous notes of different GM families, multi-hot family labels.
  Each family's programs are partitioned into train/val/test, so no test program is heard in training; programs
  with identical sample maps move together, and a sample map shared across families (one sound, two family
  labels) is left out.
- ``render_notes`` (single-label): a musical attribute of single notes (pitch class, octave, or GM family) across
  instruments held out from training, so the task must ignore timbre. Instruments are *sample units*: programs
  whose key -> sample maps over the task's key range share any sample are joined (transitively) and move
  together; each family's single-family units are partitioned into train/val/test and units spanning families
  go to train, so no val/test note sounds a sample that any training note sounds.
- ``render_chords`` (multi-label): 2-3 simultaneous notes of distinct pitch classes on one instrument, labelled
  by their pitch-class set, over the same held-out sample units.

Notes are synthesised with tinysoundfont at 44.1 kHz or more and resampled to ``sample_rate``: its voice filters
go unstable at lower rates (Halo Pad peaks at 8-16x full scale on keys 70-78 at 8-16 kHz, Bagpipe's low keys
swing by 20 dB at 22.05 kHz).
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from functools import partial
from math import gcd
from pathlib import Path

import numpy as np
import pandas as pd
import pretty_midi
import soundfile as sf
import tinysoundfont
from tqdm import tqdm

from ..io import atomic_dir, write_json
from .soundfont import SoundFontMap, bundled_soundfont_path, read_soundfont

MIN_SYNTH_RATE = 44100
FLUSH_SECONDS = 0.05  # rendered and discarded after sounds_off() so no voice tail leaks into the next note
PEAK_CEILING = 0.98  # headroom below full scale for 16-bit rounding
MAX_REDRAWS = 50  # attempts to draw an audible note for one mixture slot before giving up
ROLES = ("train", "val", "test")
DEFAULT_KEYS = (36, 96)  # C2..C7: lower keys are pitched far below their samples, higher ones alias

# Programs whose playable keys differ from DEFAULT_KEYS (measured at 44.1 kHz, gain -6 dB; None = unusable).
PROGRAM_KEYS: dict[int, tuple[int, int] | None] = {
    54: (36, 92),  # Synth Choir: keys above 92 render at -86 dBFS
    101: (36, 92),  # FX 6 (goblins): keys above 92 render at -97 dBFS
    119: None,  # Reverse Cymbal: swells after a 1 s clip ends; -48..-54 dBFS inside it
    121: None,  # Breath Noise: -57..-62 dBFS, at the RMS floor on every key
}


@dataclass(frozen=True)
class RenderOptions:
    """Synthesis options shared by both demo tasks."""

    sample_rate: int = 22050  # Hz of the written WAV files
    clip_seconds: float = 1.0  # length of every clip
    note_seconds: float = 0.6  # how long a key is held; the release sounds for the rest of the clip
    velocity: int = 100  # MIDI velocity of every note (1-127)
    gain_db: float = -6.0  # synthesiser gain; keeps loud presets from clipping before normalisation
    target_dbfs: float = -30.0  # RMS loudness every clip is normalised to
    rms_floor_dbfs: float = -60.0  # a note rendering below this RMS (before normalisation) counts as silent
    programs: tuple[int, ...] | None = None  # GM programs 0-127 to use; None = every usable melodic program

    def __post_init__(self):
        checks = {
            "sample_rate": self.sample_rate >= 8000,
            "clip_seconds": self.clip_seconds > 0,
            "note_seconds": 0 < self.note_seconds <= self.clip_seconds,
            "velocity": 1 <= self.velocity <= 127,
            "target_dbfs": self.target_dbfs < 0,
            "rms_floor_dbfs": self.rms_floor_dbfs < self.target_dbfs,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"demo option {name}={getattr(self, name)!r} is out of range")
        if self.programs is not None:
            for program in self.programs:
                if not 0 <= program <= 127:
                    raise ValueError(f"demo option programs: {program} is not a GM program (0-127)")
                if program in PROGRAM_KEYS and PROGRAM_KEYS[program] is None:
                    raise ValueError(
                        f"demo option programs: {program} ({pretty_midi.program_to_instrument_name(program)}) "
                        "is excluded from the demo (near silent, see PROGRAM_KEYS)"
                    )

    @classmethod
    def from_options(cls, options: dict | None):
        """Build from a config ``options`` mapping; unknown keys raise ValueError naming them."""
        options = dict(options or {})
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; known: {sorted(known)}")
        for name in ("programs", "families"):
            if options.get(name) is not None:
                options[name] = tuple(int(p) for p in options[name])
        return cls(**options)

    def selected_programs(self) -> list[int]:
        """The requested programs (default: all 128 melodic ones) that PROGRAM_KEYS does not exclude."""
        chosen = range(128) if self.programs is None else sorted(set(self.programs))
        return [p for p in chosen if playable_keys(p) is not None]


@dataclass(frozen=True)
class InstrumentOptions(RenderOptions):
    """Options of the single-label instrument-identity task."""

    max_notes_per_zone: int = 4  # keys rendered per sample zone, spread evenly over the zone
    max_classes: int | None = None  # keep only the first N usable classes (by program); None = all

    def __post_init__(self):
        super().__post_init__()
        if self.max_notes_per_zone < 1:
            raise ValueError(f"demo option max_notes_per_zone={self.max_notes_per_zone} must be >= 1")
        if self.max_classes is not None and self.max_classes < 1:
            raise ValueError(f"demo option max_classes={self.max_classes} must be >= 1 or null")


@dataclass(frozen=True)
class MixtureOptions(RenderOptions):
    """Options of the multi-label family-mixture task."""

    n_train: int = 600  # mixtures rendered per split
    n_val: int = 150
    n_test: int = 250
    notes_min: int = 2  # simultaneous notes per mixture, each from a different family
    notes_max: int = 3
    val_fraction: float = 0.25  # share of each family's programs (sample-map groups) held out for val
    test_fraction: float = 0.25  # ... and for test; at least one each, and one left for train

    def __post_init__(self):
        super().__post_init__()
        if min(self.n_train, self.n_val, self.n_test) < 1:
            raise ValueError("demo options n_train, n_val, n_test must each be >= 1")
        if not 2 <= self.notes_min <= self.notes_max <= 16:
            raise ValueError(
                f"demo options need 2 <= notes_min <= notes_max <= 16, got {self.notes_min}, {self.notes_max}"
            )
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1):
            raise ValueError("demo options val_fraction and test_fraction must lie in (0, 1)")


PITCH_CLASSES = ("C", "Cs", "D", "Ds", "E", "F", "Fs", "G", "Gs", "A", "As", "B")
# GM families with a clear pitch: piano .. synth pad, and ethnic; synth effects, percussive and sound effects out
PITCHED_FAMILIES = (*range(12), 13)
NOTE_LABELS = ("pitch_class", "octave", "family")


@dataclass(frozen=True)
class HeldOutOptions(RenderOptions):
    """Options shared by the tasks over held-out instruments (sample units; see the module docstring)."""

    families: tuple[int, ...] = PITCHED_FAMILIES  # GM families (program // 8) whose programs are used
    key_min: int = 48  # lowest key rendered (C3)
    key_max: int = 83  # highest key rendered (B5)
    val_fraction: float = 0.2  # share of each family's sample units held out for val
    test_fraction: float = 0.2  # ... and for test; at least one each, and one left for train

    def __post_init__(self):
        super().__post_init__()
        if not self.families or not all(0 <= f <= 15 for f in self.families):
            raise ValueError(f"demo option families={self.families!r} must list GM families 0-15")
        if not 0 <= self.key_min <= self.key_max <= 127 or self.key_max - self.key_min < 11:
            raise ValueError(
                f"demo options need 0 <= key_min <= key_max <= 127 spanning an octave, "
                f"got {self.key_min}, {self.key_max}"
            )
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1):
            raise ValueError("demo options val_fraction and test_fraction must lie in (0, 1)")

    def task_programs(self) -> list[int]:
        """The selected programs of the chosen families."""
        return [p for p in self.selected_programs() if p // 8 in set(self.families)]


@dataclass(frozen=True)
class NoteOptions(HeldOutOptions):
    """Options of the single-label note-attribute task."""

    label: str = "pitch_class"  # pitch_class (12 classes), octave (of the key, C-based) or family (GM family)
    notes_per_unit: int = 24  # keys rendered per sample unit (pitch classes cycled in a seeded order)

    def __post_init__(self):
        super().__post_init__()
        if self.label not in NOTE_LABELS:
            raise ValueError(f"demo option label={self.label!r} must be one of {NOTE_LABELS}")
        if self.notes_per_unit < 1:
            raise ValueError(f"demo option notes_per_unit={self.notes_per_unit} must be >= 1")


@dataclass(frozen=True)
class ChordOptions(HeldOutOptions):
    """Options of the multi-label chord (pitch-class set) task."""

    n_train: int = 600  # chords rendered per split
    n_val: int = 150
    n_test: int = 250
    notes_min: int = 2  # simultaneous notes per chord, each of a different pitch class
    notes_max: int = 3

    def __post_init__(self):
        super().__post_init__()
        if min(self.n_train, self.n_val, self.n_test) < 1:
            raise ValueError("demo options n_train, n_val, n_test must each be >= 1")
        if not 2 <= self.notes_min <= self.notes_max <= 12:
            raise ValueError(
                f"demo options need 2 <= notes_min <= notes_max <= 12, got {self.notes_min}, {self.notes_max}"
            )


@dataclass(frozen=True)
class SampleGroup:
    """Programs (lowest first) that play identical samples on every playable key."""

    programs: tuple[int, ...]
    key_samples: dict[int, frozenset[int]]  # playable key -> sample ids sounding

    def zones(self) -> dict[int, list[int]]:
        """``{zone id: keys}``: keys whose sample sets are connected through shared samples form one zone.

        The zone id is the zone's lowest sample id.
        """
        parent: dict[int, int] = {}

        def root(sample: int) -> int:
            while parent.setdefault(sample, sample) != sample:
                sample = parent[sample]
            return sample

        for samples in self.key_samples.values():
            first, *rest = sorted(samples)
            for sample in rest:
                a, b = root(first), root(sample)
                parent[max(a, b)] = min(a, b)
        zones: dict[int, list[int]] = {}
        for key in sorted(self.key_samples):
            zones.setdefault(root(min(self.key_samples[key])), []).append(key)
        return dict(sorted(zones.items()))


class NoteRenderer:
    """Renders one note at a time from the bundled SoundFont, mono, at the synthesiser's rate."""

    def __init__(self, options: RenderOptions, soundfont: Path | None = None):
        self.options = options
        self.synth_rate = max(options.sample_rate, MIN_SYNTH_RATE)
        divisor = gcd(options.sample_rate, self.synth_rate)
        self.up, self.down = options.sample_rate // divisor, self.synth_rate // divisor
        # imported on use: scipy.signal takes ~0.9 s to import, and every workflow start reads the adapter
        # registry, which imports this module
        from scipy.signal import firwin, resample_poly

        self._resample_poly = resample_poly
        # scipy's default resample_poly low-pass, designed once instead of on every call
        rate = max(self.up, self.down)
        self.lowpass = firwin(20 * rate + 1, 1.0 / rate, window=("kaiser", 5.0))
        self.n_samples = round(options.clip_seconds * options.sample_rate)
        self.synth = tinysoundfont.Synth(gain=options.gain_db, samplerate=self.synth_rate)
        self.sfid = self.synth.sfload(str(soundfont or bundled_soundfont_path()))

    def _generate(self, n_frames: int) -> np.ndarray:
        """[n_frames] float64 mono: the mean of the synthesiser's interleaved stereo channels."""
        stereo = np.frombuffer(self.synth.generate(n_frames), dtype=np.float32)
        return 0.5 * (stereo[0::2].astype(np.float64) + stereo[1::2])

    def __call__(self, program: int, key: int) -> np.ndarray:
        """Press ``key`` on GM ``program`` for note_seconds, release; the clip [clip_seconds * synth_rate]."""
        opts = self.options
        held = round(opts.note_seconds * self.synth_rate)
        total = round(opts.clip_seconds * self.synth_rate)
        self.synth.program_select(0, self.sfid, 0, program)
        self.synth.noteon(0, key, opts.velocity)
        pressed = self._generate(held)
        self.synth.noteoff(0, key)
        released = self._generate(total - held) if total > held else np.zeros(0)
        self.synth.sounds_off()
        self.synth.generate(round(FLUSH_SECONDS * self.synth_rate))
        return np.concatenate([pressed, released])

    def to_output_rate(self, audio: np.ndarray) -> np.ndarray:
        """Resample [clip_seconds * synth_rate] -> [clip_seconds * sample_rate] (polyphase FIR)."""
        if self.up != self.down:
            audio = self._resample_poly(audio, self.up, self.down, window=self.lowpass)
        return np.pad(audio[: self.n_samples], (0, max(0, self.n_samples - len(audio))))


def rms_dbfs(audio: np.ndarray) -> float:
    """RMS level in dB relative to full scale (-inf for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20 * np.log10(rms) if rms > 0 else float("-inf")


def at_level(audio: np.ndarray, dbfs: float) -> np.ndarray:
    """``audio`` [T] scaled to an RMS of ``dbfs``."""
    return audio * 10 ** ((dbfs - rms_dbfs(audio)) / 20)


def normalise(audio: np.ndarray, target_dbfs: float) -> tuple[np.ndarray, bool]:
    """Scale to ``target_dbfs`` RMS, then down to PEAK_CEILING if the peak would exceed it.

    Returns (audio [T] float32, whether the peak limit lowered the level below the target).
    """
    scaled = at_level(audio, target_dbfs)
    peak = float(np.abs(scaled).max())
    if peak > PEAK_CEILING:
        return (scaled * (PEAK_CEILING / peak)).astype(np.float32), True
    return scaled.astype(np.float32), False


def playable_keys(program: int) -> range | None:
    """Keys the demo may press on ``program`` (before checking which ones the SoundFont maps)."""
    keys = PROGRAM_KEYS.get(program, DEFAULT_KEYS)
    return None if keys is None else range(keys[0], keys[1] + 1)


def sample_groups(soundfont: SoundFontMap, programs: list[int], velocity: int) -> list[SampleGroup]:
    """Merge programs whose key -> sample maps over their playable keys are identical; lowest program first."""
    by_map: dict[tuple, list[int]] = {}
    for program in programs:
        key_samples = soundfont.key_map(program, playable_keys(program), velocity)
        if key_samples:
            by_map.setdefault(tuple(sorted(key_samples.items())), []).append(program)
    groups = [SampleGroup(tuple(members), dict(mapping)) for mapping, members in by_map.items()]
    return sorted(groups, key=lambda group: group.programs)


def _slug(name: str) -> str:
    return "_".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


def program_label(program: int) -> str:
    """``p000_acoustic_grand_piano``."""
    return f"p{program:03d}_{_slug(pretty_midi.program_to_instrument_name(program))}"


def family_label(program: int) -> str:
    """``f00_piano`` .. ``f15_sound_effects``: the GM family (program // 8) of ``program``."""
    return f"f{program // 8:02d}_{_slug(pretty_midi.program_to_instrument_class(program))}"


def _rng(seed: int, *tags: str | int) -> np.random.Generator:
    """A generator for one purpose (tags), independent of how many draws other purposes made."""
    words = [t if isinstance(t, int) else zlib.crc32(t.encode()) for t in tags]
    return np.random.default_rng([seed, *words])


def _even_keys(keys: list[int], count: int) -> list[int]:
    """Up to ``count`` keys spread evenly over ``keys`` (sorted), ends included."""
    picks = np.unique(np.round(np.linspace(0, len(keys) - 1, min(count, len(keys)))).astype(int))
    return [keys[i] for i in picks]


class _ClipWriter:
    """Writes 16-bit mono WAVs into a staging directory that becomes ``final_dir`` when rendering succeeds."""

    def __init__(self, staging_dir: Path, final_dir: Path, sample_rate: int):
        self.staging_dir, self.final_dir, self.sample_rate = staging_dir, final_dir, sample_rate

    def __call__(self, clip_id: str, audio: np.ndarray) -> str:
        """Write one clip; return the absolute path it will have."""
        sf.write(self.staging_dir / f"{clip_id}.wav", audio, self.sample_rate, subtype="PCM_16")
        return str(self.final_dir / f"{clip_id}.wav")


def _render_into(out_dir: Path, options: RenderOptions, render_rows) -> pd.DataFrame:
    """Run ``render_rows(render, write) -> (rows, stats)`` with out_dir/audio replaced whole on success.

    Stats are written to out_dir/render_stats.json and attached as ``manifest.attrs["render_stats"]``.
    """
    audio_dir = (Path(out_dir) / "audio").resolve()
    with atomic_dir(audio_dir) as staging:
        rows, stats = render_rows(NoteRenderer(options), _ClipWriter(staging, audio_dir, options.sample_rate))
    manifest = pd.DataFrame(rows)
    requested = range(128) if options.programs is None else options.programs
    stats["programs_excluded"] = sorted(set(requested) - set(options.selected_programs()))  # PROGRAM_KEYS
    stats["clips_per_split"] = {role: int((manifest["split"] == role).sum()) for role in ROLES}
    write_json(Path(out_dir) / "render_stats.json", stats)
    manifest.attrs["render_stats"] = stats
    return manifest


def render_instruments(out_dir: Path, options: dict, seed: int) -> pd.DataFrame:
    """Render the single-label instrument-identity task (see the module docstring for the split).

    Args:
        out_dir: WAVs go to ``out_dir/audio/<clip_id>.wav``; ``out_dir/render_stats.json`` holds the stats.
        options: InstrumentOptions fields; unknown keys raise ValueError.
        seed: picks each class's held-out zones.

    Returns:
        Manifest rows: clip_id, path (absolute), labels ([class label]), split, fold (None), duration_s,
        sample_rate, program (the class's lowest program), programs_in_class ("0,1,3"), key, velocity,
        zone (lowest sample id of the zone), samples (sample ids sounding, "43,423").
        ``.attrs["render_stats"]`` lists kept and dropped classes and notes below the RMS floor.
    """
    opts = InstrumentOptions.from_options(options)
    groups = sample_groups(read_soundfont(), opts.selected_programs(), opts.velocity)
    return _render_into(out_dir, opts, partial(_instrument_rows, groups, opts, seed))


def _instrument_rows(groups: list[SampleGroup], opts: InstrumentOptions, seed: int, render, write):
    rows = []
    stats = {
        "classes_total": len(groups),
        "classes_kept": [],
        "classes_single_zone": [],  # fewer than two (audible) sample zones: nothing to hold out
        "classes_beyond_max": [],
        "notes_below_floor": [],
        "clips_peak_limited": 0,
    }
    for group in tqdm(groups, desc="instruments: rendering classes", disable=None):
        program, label = group.programs[0], program_label(group.programs[0])
        if opts.max_classes is not None and len(stats["classes_kept"]) >= opts.max_classes:
            stats["classes_beyond_max"].append(label)
            continue
        zones = group.zones()
        if len(zones) < 2:
            stats["classes_single_zone"].append(label)
            continue
        audible: dict[int, dict[int, np.ndarray]] = {}  # zone -> key -> normalised audio
        for zone, keys in zones.items():
            for key in _even_keys(keys, opts.max_notes_per_zone):
                audio = render(program, key)
                if rms_dbfs(audio) < opts.rms_floor_dbfs:
                    stats["notes_below_floor"].append(f"{label}:k{key}")
                    continue
                audio, limited = normalise(render.to_output_rate(audio), opts.target_dbfs)
                stats["clips_peak_limited"] += int(limited)
                audible.setdefault(zone, {})[key] = audio
        if len(audible) < 2:
            stats["classes_single_zone"].append(label)
            continue
        stats["classes_kept"].append(label)
        held_out = _rng(seed, "instruments", program).permutation(sorted(audible))
        role_of = {int(zone): "train" for zone in held_out}
        role_of[int(held_out[0])] = "test"
        if len(held_out) >= 3:
            role_of[int(held_out[1])] = "val"
        for zone, notes in audible.items():
            for key, audio in notes.items():
                clip_id = f"p{program:03d}_k{key:03d}"
                rows.append(
                    {
                        "clip_id": clip_id,
                        "path": write(clip_id, audio),
                        "labels": [label],
                        "split": role_of[zone],
                        "fold": None,
                        "duration_s": render.n_samples / opts.sample_rate,
                        "sample_rate": opts.sample_rate,
                        "program": program,
                        "programs_in_class": ",".join(map(str, group.programs)),
                        "key": key,
                        "velocity": opts.velocity,
                        "zone": zone,
                        "samples": ",".join(map(str, sorted(group.key_samples[key]))),
                    }
                )
    if not rows:
        raise ValueError(
            f"demo instruments: no class with two audible sample zones among programs {opts.selected_programs()}"
        )
    return rows, stats


def split_programs(groups: list[SampleGroup], opts: MixtureOptions, seed: int) -> tuple[dict, dict]:
    """Partition each family's sample groups into train/val/test.

    Returns ({family: {role: [programs]}} for families with a group for every role, stats on what was left out).
    """
    by_family: dict[int, list[SampleGroup]] = {}
    left_out = {"programs_shared_across_families": [], "families_too_few_programs": []}
    for group in groups:
        families = {program // 8 for program in group.programs}
        if len(families) > 1:
            left_out["programs_shared_across_families"].extend(group.programs)
            continue
        by_family.setdefault(families.pop(), []).append(group)
    split = {}
    for family, members in sorted(by_family.items()):
        n_test = max(1, round(opts.test_fraction * len(members)))
        n_val = max(1, round(opts.val_fraction * len(members)))
        if len(members) - n_test - n_val < 1:
            left_out["families_too_few_programs"].append(family_label(family * 8))
            continue
        order = _rng(seed, "mixtures", "families", family).permutation(len(members))
        roles = ["test"] * n_test + ["val"] * n_val + ["train"] * (len(members) - n_test - n_val)
        split[family] = {role: [] for role in ROLES}
        for index, role in zip(order, roles, strict=True):
            split[family][role].extend(members[index].programs)
        split[family] = {role: sorted(programs) for role, programs in split[family].items()}
    return split, left_out


def render_mixtures(out_dir: Path, options: dict, seed: int) -> pd.DataFrame:
    """Render the multi-label family-mixture task (see the module docstring for the split).

    Each note is rendered alone, checked against the RMS floor (re-drawn if silent, so every label is heard),
    normalised to the target loudness, summed with the others, and the mixture normalised again.

    Args:
        out_dir: WAVs go to ``out_dir/audio/<clip_id>.wav``; ``out_dir/render_stats.json`` holds the stats.
        options: MixtureOptions fields; unknown keys raise ValueError.
        seed: drives the program partition and every draw.

    Returns:
        Manifest rows: clip_id, path (absolute), labels (family labels, sorted), split, fold (None),
        duration_s, sample_rate, programs, keys, families (lists aligned with each other, one per note).
        ``.attrs["render_stats"]`` lists the program partition and counts re-drawn notes.
    """
    opts = MixtureOptions.from_options(options)
    soundfont = read_soundfont()
    groups = sample_groups(soundfont, opts.selected_programs(), opts.velocity)
    partition, stats = split_programs(groups, opts, seed)
    if len(partition) < opts.notes_max:
        raise ValueError(
            f"demo mixtures: notes_max={opts.notes_max} needs that many families with programs "
            f"for train, val and test; only {len(partition)} among programs {opts.selected_programs()}"
        )
    mapped_keys = {group.programs[0]: sorted(group.key_samples) for group in groups}
    keys_of = {p: mapped_keys[g.programs[0]] for g in groups for p in g.programs}
    stats.update(
        {
            "partition": {family_label(f * 8): roles for f, roles in partition.items()},
            "notes_redrawn": 0,
            "clips_peak_limited": 0,
        }
    )
    return _render_into(out_dir, opts, partial(_mixture_rows, partition, keys_of, opts, seed, stats))


def _audible_note(family: int, programs: list[int], keys_of: dict, opts, rng, render, stats):
    """Draw (program, key) from ``programs`` until the note alone is above the RMS floor; (program, key, audio)."""
    for _ in range(MAX_REDRAWS):
        program = int(rng.choice(programs))
        key = int(rng.choice(keys_of[program]))
        audio = render(program, key)
        if rms_dbfs(audio) >= opts.rms_floor_dbfs:
            return program, key, audio
        stats["notes_redrawn"] += 1
    raise RuntimeError(
        f"demo mixtures: no audible note in {MAX_REDRAWS} draws for family {family_label(family * 8)} "
        f"(programs {programs})"
    )


def _mixture_rows(
    partition: dict, keys_of: dict, opts: MixtureOptions, seed: int, stats: dict, render, write
):
    rows = []
    counts = {"train": opts.n_train, "val": opts.n_val, "test": opts.n_test}
    for role in ROLES:
        rng = _rng(seed, "mixtures", role)
        for index in tqdm(range(counts[role]), desc=f"mixtures: rendering {role}", disable=None):
            n_notes = int(rng.integers(opts.notes_min, opts.notes_max + 1))
            families = sorted(int(f) for f in rng.choice(sorted(partition), size=n_notes, replace=False))
            notes = [
                _audible_note(f, partition[f][role], keys_of, opts, rng, render, stats) for f in families
            ]
            # equal loudness per note, so every labelled family is clearly present in the mix
            mixture = np.sum([at_level(audio, opts.target_dbfs) for _, _, audio in notes], axis=0)
            mixture, limited = normalise(render.to_output_rate(mixture), opts.target_dbfs)
            stats["clips_peak_limited"] += int(limited)
            clip_id = f"mix_{role}_{index:04d}"
            labels = [family_label(program) for program, _, _ in notes]
            rows.append(
                {
                    "clip_id": clip_id,
                    "path": write(clip_id, mixture),
                    "labels": labels,
                    "split": role,
                    "fold": None,
                    "duration_s": render.n_samples / opts.sample_rate,
                    "sample_rate": opts.sample_rate,
                    "programs": [program for program, _, _ in notes],
                    "keys": [key for _, key, _ in notes],
                    "families": labels,
                }
            )
    return rows, stats


def pitch_class_label(key: int) -> str:
    """``pc00_C`` .. ``pc11_B``: the pitch class of MIDI ``key``."""
    return f"pc{key % 12:02d}_{PITCH_CLASSES[key % 12]}"


def octave_label(key: int) -> str:
    """``oct3`` for keys 48-59 (C3..B3; key 60 is C4)."""
    return f"oct{key // 12 - 1}"


@dataclass(frozen=True)
class SampleUnit:
    """Sample groups that share a sample on some key of the task's range: they move together between splits."""

    groups: tuple[SampleGroup, ...]  # lowest program first

    @property
    def programs(self) -> tuple[int, ...]:
        return tuple(sorted(p for group in self.groups for p in group.programs))

    @property
    def families(self) -> frozenset[int]:
        return frozenset(p // 8 for p in self.programs)


def sample_units(soundfont: SoundFontMap, opts: HeldOutOptions) -> list[SampleUnit]:
    """The task's sample groups (key maps over key_min..key_max) joined into units through shared samples."""
    groups = []
    by_map: dict[tuple, list[int]] = {}
    for program in opts.task_programs():
        playable = playable_keys(program)
        keys = range(max(opts.key_min, playable.start), min(opts.key_max, playable.stop - 1) + 1)
        key_samples = soundfont.key_map(program, keys, opts.velocity)
        if key_samples:
            by_map.setdefault(tuple(sorted(key_samples.items())), []).append(program)
    groups = sorted((SampleGroup(tuple(m), dict(k)) for k, m in by_map.items()), key=lambda g: g.programs)
    parent = list(range(len(groups)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    owner: dict[int, int] = {}
    for index, group in enumerate(groups):
        for sample in sorted(set().union(*group.key_samples.values())):
            a, b = root(owner.setdefault(sample, index)), root(index)
            parent[max(a, b)] = min(a, b)
    units: dict[int, list[SampleGroup]] = {}
    for index, group in enumerate(groups):
        units.setdefault(root(index), []).append(group)
    return [SampleUnit(tuple(members)) for _, members in sorted(units.items())]


def split_units(units: list[SampleUnit], opts: HeldOutOptions, seed: int, tag: str) -> tuple[dict, dict]:
    """Assign every unit a role: each family's single-family units are partitioned into train/val/test (at least
    one each and one left for train); units spanning families, and families with too few units, go to train.

    Returns ({role: [units]}, stats naming the units sent to train whole).
    """
    by_family: dict[int, list[SampleUnit]] = {}
    roles: dict[str, list[SampleUnit]] = {role: [] for role in ROLES}
    stats = {"units_spanning_families": [], "families_train_only": []}
    for unit in units:
        if len(unit.families) > 1:
            roles["train"].append(unit)
            stats["units_spanning_families"].append(list(unit.programs))
        else:
            by_family.setdefault(next(iter(unit.families)), []).append(unit)
    for family, members in sorted(by_family.items()):
        n_test = max(1, round(opts.test_fraction * len(members)))
        n_val = max(1, round(opts.val_fraction * len(members)))
        if len(members) - n_test - n_val < 1:
            roles["train"].extend(members)
            stats["families_train_only"].append(family_label(family * 8))
            continue
        order = _rng(seed, tag, "families", family).permutation(len(members))
        assigned = ["test"] * n_test + ["val"] * n_val + ["train"] * (len(members) - n_test - n_val)
        for index, role in zip(order, assigned, strict=True):
            roles[role].append(members[index])
    return {role: sorted(members, key=lambda u: u.programs) for role, members in roles.items()}, stats


def _held_out_units(opts: HeldOutOptions, seed: int, tag: str) -> tuple[dict, dict]:
    units = sample_units(read_soundfont(), opts)
    split, stats = split_units(units, opts, seed, tag)
    if not all(split.values()):
        raise ValueError(
            f"demo {tag}: families {sorted(opts.families)} among programs {opts.selected_programs()} give "
            "no sample unit to hold out for val and test"
        )
    stats["partition"] = {role: [list(u.programs) for u in members] for role, members in split.items()}
    return split, stats


def _unit_keys(group: SampleGroup, opts: HeldOutOptions) -> list[int]:
    return [key for key in sorted(group.key_samples) if opts.key_min <= key <= opts.key_max]


def render_notes(out_dir: Path, options: dict, seed: int) -> pd.DataFrame:
    """Render the single-label note-attribute task over held-out instruments (see the module docstring).

    Each sample group of a unit is played on its lowest program; a unit's ``notes_per_unit`` keys are spread
    over its groups, with pitch classes cycled in a seeded order and each key drawn among that pitch class's
    keys in range (no key twice while unused ones remain).

    Args:
        out_dir: WAVs go to ``out_dir/audio/<clip_id>.wav``; ``out_dir/render_stats.json`` holds the stats.
        options: NoteOptions fields; unknown keys raise ValueError.
        seed: drives the unit partition and every key draw.

    Returns:
        Manifest rows: clip_id, path (absolute), labels ([label]), split, fold (None), duration_s, sample_rate,
        program, programs_in_group ("0,1,3"), unit (the unit's lowest program), family, key, velocity,
        samples (sample ids sounding, "43,423").
    """
    opts = NoteOptions.from_options(options)
    split, stats = _held_out_units(opts, seed, "notes")
    stats.update({"notes_below_floor": [], "clips_peak_limited": 0})
    return _render_into(out_dir, opts, partial(_note_rows, split, opts, seed, stats))


def _note_label(opts: NoteOptions, program: int, key: int) -> str:
    if opts.label == "pitch_class":
        return pitch_class_label(key)
    if opts.label == "octave":
        return octave_label(key)
    return family_label(program)


def _draw_keys(keys: list[int], count: int, rng: np.random.Generator) -> list[int]:
    """``count`` keys from ``keys``: pitch classes cycled in seeded orders, unused keys of a class first."""
    by_class: dict[int, list[int]] = {}
    for key in keys:
        by_class.setdefault(key % 12, []).append(key)
    unused = {pc: list(members) for pc, members in by_class.items()}
    drawn = []
    while len(drawn) < count:
        for pc in rng.permutation(sorted(by_class)):
            if len(drawn) == count:
                break
            pool = unused[int(pc)] or by_class[int(pc)]
            key = int(pool[int(rng.integers(len(pool)))])
            if key in unused[int(pc)]:
                unused[int(pc)].remove(key)
            drawn.append(key)
    return drawn


def _note_rows(split: dict, opts: NoteOptions, seed: int, stats: dict, render, write):
    rows = []
    for role in ROLES:
        for unit in tqdm(split[role], desc=f"notes: rendering {role}", disable=None):
            rng = _rng(seed, "notes", unit.programs[0])
            per_group = np.diff(
                np.round(np.linspace(0, opts.notes_per_unit, len(unit.groups) + 1)).astype(int)
            )
            for group, count in zip(unit.groups, per_group, strict=True):
                program = group.programs[0]
                for key in sorted(set(_draw_keys(_unit_keys(group, opts), int(count), rng))):
                    audio = render(program, key)
                    if rms_dbfs(audio) < opts.rms_floor_dbfs:
                        stats["notes_below_floor"].append(f"p{program:03d}:k{key}")
                        continue
                    audio, limited = normalise(render.to_output_rate(audio), opts.target_dbfs)
                    stats["clips_peak_limited"] += int(limited)
                    clip_id = f"p{program:03d}_k{key:03d}"
                    rows.append(
                        {
                            "clip_id": clip_id,
                            "path": write(clip_id, audio),
                            "labels": [_note_label(opts, program, key)],
                            "split": role,
                            "fold": None,
                            "duration_s": render.n_samples / opts.sample_rate,
                            "sample_rate": opts.sample_rate,
                            "program": program,
                            "programs_in_group": ",".join(map(str, group.programs)),
                            "unit": unit.programs[0],
                            "family": family_label(program),
                            "key": key,
                            "velocity": opts.velocity,
                            "samples": ",".join(map(str, sorted(group.key_samples[key]))),
                        }
                    )
    return rows, stats


def render_chords(out_dir: Path, options: dict, seed: int) -> pd.DataFrame:
    """Render the multi-label chord task over held-out instruments (see the module docstring).

    A chord is 2-3 keys of distinct pitch classes on one sample group (its lowest program), each note rendered
    alone, checked against the RMS floor (the chord is re-drawn if one is silent), normalised to the target
    loudness, summed with the others, and the sum normalised again.

    Returns:
        Manifest rows: clip_id, path (absolute), labels (pitch-class labels, sorted), split, fold (None),
        duration_s, sample_rate, program, unit, family, keys (sorted), samples (sample ids sounding, "43,423").
    """
    opts = ChordOptions.from_options(options)
    split, stats = _held_out_units(opts, seed, "chords")
    stats.update({"chords_redrawn": 0, "clips_peak_limited": 0})
    return _render_into(out_dir, opts, partial(_chord_rows, split, opts, seed, stats))


def _chord_rows(split: dict, opts: ChordOptions, seed: int, stats: dict, render, write):
    rows = []
    counts = {"train": opts.n_train, "val": opts.n_val, "test": opts.n_test}
    for role in ROLES:
        rng = _rng(seed, "chords", role)
        groups = [(unit, group) for unit in split[role] for group in unit.groups]
        for index in tqdm(range(counts[role]), desc=f"chords: rendering {role}", disable=None):
            for _ in range(MAX_REDRAWS):
                unit, group = groups[int(rng.integers(len(groups)))]
                program, keys = group.programs[0], _unit_keys(group, opts)
                classes = sorted({key % 12 for key in keys})
                n_notes = min(int(rng.integers(opts.notes_min, opts.notes_max + 1)), len(classes))
                chosen = rng.choice(classes, size=n_notes, replace=False)
                chord = sorted(int(rng.choice([k for k in keys if k % 12 == pc])) for pc in chosen)
                notes = [render(program, key) for key in chord]
                if min(rms_dbfs(note) for note in notes) >= opts.rms_floor_dbfs:
                    break
                stats["chords_redrawn"] += 1
            else:
                raise RuntimeError(f"demo chords: no audible chord in {MAX_REDRAWS} draws for role {role}")
            mixture = np.sum([at_level(note, opts.target_dbfs) for note in notes], axis=0)
            mixture, limited = normalise(render.to_output_rate(mixture), opts.target_dbfs)
            stats["clips_peak_limited"] += int(limited)
            clip_id = f"chord_{role}_{index:04d}"
            rows.append(
                {
                    "clip_id": clip_id,
                    "path": write(clip_id, mixture),
                    "labels": sorted(pitch_class_label(key) for key in chord),
                    "split": role,
                    "fold": None,
                    "duration_s": render.n_samples / opts.sample_rate,
                    "sample_rate": opts.sample_rate,
                    "program": program,
                    "unit": unit.programs[0],
                    "family": family_label(program),
                    "keys": chord,
                    "samples": ",".join(
                        map(str, sorted(set().union(*(group.key_samples[k] for k in chord))))
                    ),
                }
            )
    return rows, stats
