"""Dataset adapters: the registry the manifest builder asks for a dataset's clips, task, folds and options.

Each adapter's ``build(options, work_dir, seed)`` returns manifest rows without duration_s / sample_rate (the
manifest builder decodes every clip): clip_id, path (absolute), labels (list of str), split (train / val /
test or None), fold (1..k or None), plus source columns. Adapters with a registered archive also take the
options ``download``, ``sha256`` and ``download_url`` (see ``acft.data.download.ensure_downloaded``).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import demo
from . import esc50, fsd50k, fsdd, generic, gtzan, nsynth, speech_commands, urbansound8k, vocalsound


@dataclass(frozen=True)
class Download:
    """A public archive of a dataset.

    Attributes:
        url: where the archive is published.
        sha256: its checksum, or None where it is not known for certain (the user must then supply one).
        archive_root: the folder inside the archive that becomes the dataset root; "." for the archive's top
            level; None to take its single top-level folder (or the top level if it has several entries).
        expects: paths relative to the dataset root whose presence means the dataset is complete.
    """

    url: str
    sha256: str | None
    archive_root: str | None
    expects: tuple[str, ...] = ()


@dataclass(frozen=True)
class Adapter:
    build: Callable[[dict, Path, int], pd.DataFrame]  # (options, work_dir, seed) -> manifest rows
    task: Callable[[dict], str]  # options -> "single_label" | "multi_label"
    n_folds: Callable[[dict], int]  # options -> 0 (fixed split) or k (official folds 1..k)
    options: dict[str, str]  # option name -> one-line description
    download: Download | None = None


DOWNLOAD_OPTIONS = {
    "download": "true: fetch and unpack the registered archive into root if root is missing (default false)",
    "sha256": "sha256 of the archive; required to download where the registry knows none",
    "download_url": "a mirror of the registered archive (verified against the same sha256)",
}


def _single_label(options: dict) -> str:
    return "single_label"


def _multi_label(options: dict) -> str:
    return "multi_label"


def _fixed_split(options: dict) -> int:
    return 0


def _render_instruments(options: dict, work_dir: Path, seed: int) -> pd.DataFrame:
    return demo.render_instruments(work_dir, options, seed)


def _render_mixtures(options: dict, work_dir: Path, seed: int) -> pd.DataFrame:
    return demo.render_mixtures(work_dir, options, seed)


def _render_notes(options: dict, work_dir: Path, seed: int) -> pd.DataFrame:
    return demo.render_notes(work_dir, options, seed)


def _render_chords(options: dict, work_dir: Path, seed: int) -> pd.DataFrame:
    return demo.render_chords(work_dir, options, seed)


def _demo_options(options_class) -> dict[str, str]:
    """The renderer's option names (its dataclass fields), so a misspelt one is refused at workflow start."""
    return {f.name: f"see acft.data.demo.{options_class.__name__}" for f in dataclasses.fields(options_class)}


def _module_adapter(module, task=_single_label, download: Download | None = None) -> Adapter:
    options = module.OPTIONS | (DOWNLOAD_OPTIONS if download else {})
    return Adapter(build=module.build, task=task, n_folds=module.n_folds, options=options, download=download)


# Checksums only where a published source states them; every other sha256 is None (see Download).
ADAPTERS: dict[str, Adapter] = {
    "demo_instruments": Adapter(
        _render_instruments, _single_label, _fixed_split, _demo_options(demo.InstrumentOptions)
    ),
    "demo_mixtures": Adapter(
        _render_mixtures, _multi_label, _fixed_split, _demo_options(demo.MixtureOptions)
    ),
    "demo_notes": Adapter(_render_notes, _single_label, _fixed_split, _demo_options(demo.NoteOptions)),
    "demo_chords": Adapter(_render_chords, _multi_label, _fixed_split, _demo_options(demo.ChordOptions)),
    "esc50": _module_adapter(
        esc50,
        download=Download(
            "https://github.com/karoldvl/ESC-50/archive/master.zip",
            None,
            "ESC-50-master",
            ("meta/esc50.csv", "audio"),
        ),
    ),
    "us8k": _module_adapter(
        urbansound8k,
        download=Download(
            "https://zenodo.org/record/1203745/files/UrbanSound8K.tar.gz",
            None,
            "UrbanSound8K",
            ("metadata/UrbanSound8K.csv", "audio"),
        ),
    ),
    "speech_commands": _module_adapter(
        speech_commands,
        download=Download(
            "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
            # as listed by torchaudio.datasets.speechcommands (taken from TensorFlow Datasets url_checksums)
            "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
            ".",
            ("validation_list.txt", "testing_list.txt"),
        ),
    ),
    "gtzan": _module_adapter(
        gtzan,
        download=Download(
            # the original host, often offline: point download_url at a mirror of the same archive
            "http://opihi.cs.uvic.ca/sound/genres.tar.gz",
            # as listed by torchaudio.datasets.gtzan
            "24347e0223d2ba798e0a558c4c172d9d4a19c00bb7963fe055d183dadb4ef2c6",
            ".",
            ("genres",),
        ),
    ),
    "nsynth": _module_adapter(nsynth),  # three archives (train / valid / test): fetch them by hand
    "fsd50k": _module_adapter(fsd50k, task=_multi_label),  # a multi-part zip on Zenodo: fetch by hand
    "vocalsound": _module_adapter(
        vocalsound,
        download=Download(
            "https://www.dropbox.com/s/c5ace70qh1vbyzb/vs_release_16k.zip?dl=1",
            None,
            None,
            ("audio_16k", "datafiles", "class_labels_indices_vs.csv"),
        ),
    ),
    "fsdd": _module_adapter(
        fsdd,
        download=Download(
            "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/master.zip",
            None,
            "free-spoken-digit-dataset-master",
            ("recordings",),
        ),
    ),
    "folder": Adapter(generic.build_folder, _single_label, generic.folder_folds, generic.FOLDER_OPTIONS),
    "csv": Adapter(generic.build_csv, generic.csv_task, generic.csv_folds, generic.CSV_OPTIONS),
}


def get_adapter(name: str) -> Adapter:
    """The registered adapter ``name``; unknown names raise ValueError listing the known ones."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown dataset adapter {name!r}; known adapters: {sorted(ADAPTERS)}")
    return ADAPTERS[name]


def check_options(name: str, options: dict) -> None:
    """Unknown option keys raise ValueError naming them, with the closest known name."""
    documented = get_adapter(name).options
    unknown = sorted(set(options) - set(documented))
    if unknown:
        guesses = {key: difflib.get_close_matches(key, documented, n=1) for key in unknown}
        hints = "".join(f" ({key!r}: did you mean {close[0]!r}?)" for key, close in guesses.items() if close)
        raise ValueError(
            f"adapter {name!r}: unknown option(s) {unknown}{hints}; it takes {sorted(documented)}"
        )
