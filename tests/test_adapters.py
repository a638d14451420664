"""Dataset adapters: each reads its official layout (fixtures_datasets) into the manifest contract."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from acft.data.adapters import ADAPTERS, check_options, get_adapter
from acft.data.adapters.common import DatasetLayoutError, stratified_folds, stratified_split
from acft.data.manifest import build_manifest, read_manifest, validate_manifest
from acft.data.splits import roles_for_fold
from acft.labels import build_vocab

from fixtures_datasets import (
    ESC50_CLASSES,
    FSD50K_VOCABULARY,
    GTZAN_GENRES,
    SPEECH_COMMANDS_WORDS,
    US8K_CLASSES,
    make_esc50,
    make_folder_dataset,
    make_fsd50k,
    make_gtzan,
    make_nsynth,
    make_speech_commands,
    make_us8k,
    make_vocalsound,
    write_audio,
)

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def build(name: str, tmp_path: Path, seed: int = 0, **options) -> pd.DataFrame:
    check_options(name, options)
    rows = get_adapter(name).build(options, tmp_path / "work", seed)
    validate_manifest(rows)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in rows["path"])
    return rows


def split_counts(rows: pd.DataFrame) -> dict[str, int]:
    return dict(Counter(rows["split"]))


# --- registry ---------------------------------------------------------------------------------------------


def test_registry_lists_every_adapter_the_schema_names():
    schema_text = SCHEMA.read_text()
    for name in ADAPTERS:
        assert name in schema_text, f"adapter {name} is not documented in the config schema"
    assert set(ADAPTERS) == {
        "demo_notes", "demo_chords", "demo_instruments", "demo_mixtures", "esc50", "us8k", "speech_commands",
        "gtzan", "nsynth", "fsd50k", "vocalsound", "fsdd", "folder", "csv",
    }  # fmt: skip
    for name, adapter in ADAPTERS.items():
        assert all(isinstance(text, str) and text for text in adapter.options.values()), name
        if not name.startswith("demo_"):
            assert "root" in adapter.options, name
        if adapter.download is not None:
            assert {"download", "sha256", "download_url"} <= set(adapter.options), name
            sha = adapter.download.sha256
            assert sha is None or (len(sha) == 64 and int(sha, 16) >= 0), name


def test_unknown_adapter_and_unknown_option_are_named():
    with pytest.raises(ValueError, match="'esc5'.*esc50"):
        get_adapter("esc5")
    with pytest.raises(ValueError, match="fold_count"):
        check_options("esc50", {"root": "/x", "fold_count": 5})
    check_options("esc50", {"root": "/x", "subset": "esc10"})
    check_options("demo_mixtures", {"n_train": 10, "notes_max": 2})  # the renderer's dataclass fields
    with pytest.raises(ValueError, match="'n_trian'.*did you mean 'n_train'"):
        check_options("demo_mixtures", {"n_trian": 10})


def test_tasks_and_fold_counts_follow_the_options():
    assert get_adapter("fsd50k").task({}) == "multi_label"
    assert get_adapter("esc50").task({}) == "single_label"
    assert get_adapter("csv").task({"label_delimiter": ";"}) == "multi_label"
    assert get_adapter("csv").task({}) == "single_label"
    assert get_adapter("esc50").n_folds({}) == 5
    assert get_adapter("us8k").n_folds({}) == 10
    assert get_adapter("gtzan").n_folds({}) == 10
    assert get_adapter("gtzan").n_folds({"n_folds": 5}) == 5
    assert get_adapter("gtzan").n_folds({"split_files": {"train": "a", "val": "b", "test": "c"}}) == 0
    assert get_adapter("speech_commands").n_folds({}) == 0
    with pytest.raises(ValueError, match="n_folds=2"):
        get_adapter("gtzan").n_folds({"n_folds": 2})


def test_missing_root_is_reported(tmp_path):
    with pytest.raises(ValueError, match="option 'root'"):
        get_adapter("esc50").build({}, tmp_path, 0)
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        get_adapter("esc50").build({"root": str(tmp_path / "nowhere")}, tmp_path, 0)


# --- shared split helpers -----------------------------------------------------------------------------------


def test_stratified_split_gives_each_class_its_rounded_share():
    keys = ["a"] * 10 + ["b"] * 5 + ["c"] * 1 + ["d"] * 20
    roles = stratified_split(keys, 0.1, 0.2, seed=3)
    for key, n in Counter(keys).items():
        got = Counter(r for k, r in zip(keys, roles, strict=True) if k == key)
        n_test = min(int(np.floor(n * 0.2 + 0.5)), n - 1)
        n_val = min(int(np.floor(n * 0.1 + 0.5)), n - 1 - n_test)
        assert (got["test"], got["val"], got["train"]) == (n_test, n_val, n - n_test - n_val), key
    assert (stratified_split(keys, 0.1, 0.2, seed=3) == roles).all()
    assert (stratified_split(keys, 0.1, 0.2, seed=4) != roles).any()
    with pytest.raises(ValueError, match="no training"):
        stratified_split(keys, 0.5, 0.5, seed=0)


def test_stratified_folds_balance_every_class():
    keys = ["a"] * 23 + ["b"] * 7 + ["c"] * 12
    folds = stratified_folds(keys, 5, seed=0)
    assert set(folds) == {1, 2, 3, 4, 5}
    sizes = Counter(folds.tolist())
    assert max(sizes.values()) - min(sizes.values()) <= 1
    for key in set(keys):
        per_fold = Counter(f for k, f in zip(keys, folds, strict=True) if k == key)
        counts = [per_fold.get(f, 0) for f in range(1, 6)]
        assert max(counts) - min(counts) <= 1, key


# --- ESC-50 / UrbanSound8K (official folds) ------------------------------------------------------------


def test_esc50_reads_folds_and_classes(tmp_path):
    meta = make_esc50(tmp_path / "ESC-50")
    rows = build("esc50", tmp_path, root=str(tmp_path / "ESC-50"))
    assert len(rows) == len(meta) == 5 * 5 * 2
    assert build_vocab(rows["labels"]) == sorted(c for _, c, _ in ESC50_CLASSES)
    assert rows["split"].isna().all()
    assert Counter(rows["fold"]) == {f: 10 for f in range(1, 6)}
    expected = {
        Path(f).stem: (c, fold)
        for f, c, fold in zip(meta["filename"], meta["category"], meta["fold"], strict=True)
    }
    assert {
        cid: (lab[0], f) for cid, lab, f in zip(rows["clip_id"], rows["labels"], rows["fold"], strict=True)
    } == expected

    esc10 = build("esc50", tmp_path, root=str(tmp_path / "ESC-50"), subset="esc10")
    assert build_vocab(esc10["labels"]) == sorted(c for _, c, is_esc10 in ESC50_CLASSES if is_esc10)
    assert len(esc10) == 3 * 5 * 2


def test_esc50_names_what_is_missing(tmp_path):
    root = tmp_path / "ESC-50"
    meta = make_esc50(root)
    (root / "audio" / meta["filename"][7]).unlink()
    with pytest.raises(DatasetLayoutError, match=meta["filename"][7]):
        build("esc50", tmp_path, root=str(root))
    (root / "meta" / "esc50.csv").unlink()
    with pytest.raises(DatasetLayoutError, match="meta/esc50.csv"):
        build("esc50", tmp_path, root=str(root))
    with pytest.raises(ValueError, match="subset='esc20'"):
        build("esc50", tmp_path, root=str(root), subset="esc20")


def test_us8k_reads_ten_folds(tmp_path):
    root = tmp_path / "UrbanSound8K"
    meta = make_us8k(root)
    rows = build("us8k", tmp_path, root=str(root))
    assert len(rows) == len(meta) == 3 * 10 * 2
    assert build_vocab(rows["labels"]) == sorted(name for _, name in US8K_CLASSES)
    assert Counter(rows["fold"]) == {f: 6 for f in range(1, 11)}
    for path, fold in zip(rows["path"], rows["fold"], strict=True):
        assert Path(path).parent.name == f"fold{fold}"
    assert set(rows["fsID"]) == set(meta["fsID"].astype(str))
    # the k-fold convention: round 3 tests fold 3 and validates on fold 4
    roles = roles_for_fold(rows, 3)
    assert Counter(roles) == {"test": 6, "val": 6, "train": 48}

    for path in (root / "audio" / "fold7").iterdir():
        path.unlink()
    (root / "audio" / "fold7").rmdir()
    with pytest.raises(DatasetLayoutError, match="audio/fold7"):
        build("us8k", tmp_path, root=str(root))


# --- Speech Commands ----------------------------------------------------------------------------------------


def test_speech_commands_split_by_official_lists(tmp_path):
    root = tmp_path / "speech_commands"
    role_of = make_speech_commands(root)
    rows = build("speech_commands", tmp_path, root=str(root))
    assert build_vocab(rows["labels"]) == sorted(SPEECH_COMMANDS_WORDS)
    assert len(build_vocab(rows["labels"])) == 35
    assert not any("_background_noise_" in p for p in rows["path"])
    assert len(rows) == len(role_of) == 35 * 4
    got = {
        f"{Path(p).parent.name}/{Path(p).name}": s for p, s in zip(rows["path"], rows["split"], strict=True)
    }
    assert got == role_of
    assert split_counts(rows) == {"train": 70, "val": 35, "test": 35}
    assert rows.loc[rows["clip_id"] == "yes_0a7c2a8d_nohash_0", "speaker"].item() == "0a7c2a8d"


def test_speech_commands_incomplete_is_reported(tmp_path):
    root = tmp_path / "speech_commands"
    make_speech_commands(root)
    (root / "bed" / "0a7c2a8d_nohash_0.wav").unlink()  # named in validation_list.txt
    with pytest.raises(DatasetLayoutError, match="bed/0a7c2a8d_nohash_0.wav"):
        build("speech_commands", tmp_path, root=str(root))
    for path in (root / "zero").iterdir():
        path.unlink()
    (root / "zero").rmdir()
    with pytest.raises(DatasetLayoutError, match="zero"):
        build("speech_commands", tmp_path, root=str(root))
    (root / "testing_list.txt").unlink()
    (root / "zero").mkdir()
    with pytest.raises(DatasetLayoutError, match="testing_list.txt"):
        build("speech_commands", tmp_path, root=str(root))


# --- GTZAN --------------------------------------------------------------------------------------------------


def test_gtzan_stratified_folds_are_seeded(tmp_path):
    make_gtzan(tmp_path / "gtzan")
    rows = build("gtzan", tmp_path, seed=1, root=str(tmp_path / "gtzan"))
    assert len(rows) == 100 and build_vocab(rows["labels"]) == sorted(GTZAN_GENRES)
    # 10 clips per genre over 10 folds: exactly one of each genre per fold
    assert Counter(zip(rows["fold"], [lab[0] for lab in rows["labels"]], strict=True)) == {
        (f, g): 1 for f in range(1, 11) for g in GTZAN_GENRES
    }
    again = build("gtzan", tmp_path, seed=1, root=str(tmp_path / "gtzan"))
    other = build("gtzan", tmp_path, seed=2, root=str(tmp_path / "gtzan"))
    assert again["fold"].tolist() == rows["fold"].tolist()
    assert other["fold"].tolist() != rows["fold"].tolist()


def test_gtzan_accepts_the_original_au_release(tmp_path):
    make_gtzan(tmp_path / "gtzan", folder="genres_original", per_genre=3, extension=".au")
    rows = build("gtzan", tmp_path, root=str(tmp_path / "gtzan"), n_folds=3)
    assert len(rows) == 30 and set(rows["fold"]) == {1, 2, 3}
    assert all(p.endswith(".au") for p in rows["path"])


def test_gtzan_split_files_reader(tmp_path):
    """A fixture list in the format of the fault-filtered split (the real list is not shipped here)."""
    root = tmp_path / "gtzan"
    make_gtzan(root, extension=".au")
    lists = {
        "train": range(0, 6),
        "val": range(6, 8),
        "test": range(8, 9),
    }  # take 9 of every genre is in none
    for role, takes in lists.items():
        lines = [
            f"{g}/{g}.{i:05d}.wav" if role == "train" else f"{g}.{i:05d}" for g in GTZAN_GENRES for i in takes
        ]
        (root / f"{role}_filtered.txt").write_text("\n".join(lines) + "\n")
    split_files = {role: f"{role}_filtered.txt" for role in lists}
    rows = build("gtzan", tmp_path, root=str(root), split_files=split_files)
    assert split_counts(rows) == {"train": 60, "val": 20, "test": 10}
    assert rows["fold"].isna().all()
    assert not any(cid.endswith(".00009") for cid in rows["clip_id"])
    assert rows.loc[rows["clip_id"] == "jazz.00007", "split"].item() == "val"

    with (root / "test_filtered.txt").open("a") as f:
        f.write("rock/rock.00000.wav\n")  # also in train
    with pytest.raises(ValueError, match="rock.00000 is listed twice"):
        build("gtzan", tmp_path, root=str(root), split_files=split_files)
    (root / "test_filtered.txt").write_text("rock/rock.00042.wav\n")
    with pytest.raises(DatasetLayoutError, match="rock.00042"):
        build("gtzan", tmp_path, root=str(root), split_files=split_files)
    with pytest.raises(ValueError, match="absent \\['test'\\]"):
        build("gtzan", tmp_path, root=str(root), split_files={"train": "a", "val": "b"})


# --- NSynth / FSD50K / VocalSound (official fixed splits) ----------------------------------------------


@pytest.mark.parametrize("label_field", ["instrument_family_str", "instrument_source_str"])
def test_nsynth_label_choices(tmp_path, label_field):
    examples = make_nsynth(tmp_path / "nsynth")
    rows = build("nsynth", tmp_path, root=str(tmp_path / "nsynth"), label_field=label_field)
    assert split_counts(rows) == {"train": 12, "val": 4, "test": 8}
    truth = {note: ex[label_field] for split in examples.values() for note, ex in split.items()}
    assert {cid: lab[0] for cid, lab in zip(rows["clip_id"], rows["labels"], strict=True)} == truth
    expected_vocab = {"instrument_family_str": ["bass", "guitar", "keyboard"]}
    assert build_vocab(rows["labels"]) == expected_vocab.get(
        label_field, ["acoustic", "electronic", "synthetic"]
    )
    assert rows.loc[rows["clip_id"] == "bass_electronic_001-061-100", "pitch"].item() == 61


def test_nsynth_errors(tmp_path):
    root = tmp_path / "nsynth"
    make_nsynth(root)
    with pytest.raises(ValueError, match="label_field='instrument_str'"):
        build("nsynth", tmp_path, root=str(root), label_field="instrument_str")
    (root / "nsynth-valid" / "audio" / "guitar_acoustic_100-060-100.wav").unlink()
    with pytest.raises(DatasetLayoutError, match="guitar_acoustic_100-060-100"):
        build("nsynth", tmp_path, root=str(root))


def test_fsd50k_multi_label_parsing_and_splits(tmp_path):
    root = tmp_path / "FSD50K"
    clips = make_fsd50k(root)
    rows = build("fsd50k", tmp_path, root=str(root))
    by_fname = {
        cid.split("_", 1)[1]: (list(lab), split)
        for cid, lab, split in zip(rows["clip_id"], rows["labels"], rows["split"], strict=True)
    }
    assert by_fname == clips
    assert split_counts(rows) == {"train": 3, "val": 2, "test": 2}
    assert set(build_vocab(rows["labels"])) == {label for label, _ in FSD50K_VOCABULARY}
    assert rows.loc[rows["clip_id"] == "eval_37", "path"].item().endswith("FSD50K.eval_audio/37.wav")

    eval_csv = root / "FSD50K.ground_truth" / "eval.csv"
    eval_csv.write_text(eval_csv.read_text().replace("Guitar,Music,Dog", "Guitar,Banjo,Dog"))
    with pytest.raises(ValueError, match="Banjo"):
        build("fsd50k", tmp_path, root=str(root))
    eval_csv.unlink()
    with pytest.raises(DatasetLayoutError, match="eval.csv"):
        build("fsd50k", tmp_path, root=str(root))


def test_vocalsound_official_split(tmp_path):
    root = tmp_path / "vs_release_16k"
    expected = make_vocalsound(root)
    rows = build("vocalsound", tmp_path, root=str(root))
    assert split_counts(rows) == {"train": 18, "val": 6, "test": 12}
    got = {
        (cid, lab[0], spk): split
        for cid, lab, spk, split in zip(
            rows["clip_id"], rows["labels"], rows["speaker"], rows["split"], strict=True
        )
    }
    assert got == {clip: role for role, clips in expected.items() for clip in clips}
    assert len(build_vocab(rows["labels"])) == 6

    te = root / "datafiles" / "te.json"
    data = json.loads(te.read_text())
    data["data"][0]["labels"] = "/m/0000"
    te.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="/m/0000"):
        build("vocalsound", tmp_path, root=str(root))


# --- FSDD (the real recordings in ../shared/data/fsdd) -----------------------------------------------------


def test_fsdd_index_split_on_real_data(fsdd_dir, tmp_path):
    rows = build("fsdd", tmp_path, seed=0, root=str(fsdd_dir))
    assert len(rows) == 2000
    assert build_vocab(rows["labels"]) == [str(d) for d in range(10)]
    assert set(rows["speaker"]) == {"george", "jackson", "lucas", "nicolas"}
    assert (rows["split"] == "test").to_numpy().tolist() == (rows["index"] < 5).tolist()
    # 4 speakers x 45 train takes = 180 per digit, 10% of which (18) become val
    per_digit = Counter(zip([lab[0] for lab in rows["labels"]], rows["split"], strict=True))
    assert all(per_digit[(str(d), "val")] == 18 and per_digit[(str(d), "test")] == 20 for d in range(10))
    assert split_counts(rows) == {"train": 1620, "val": 180, "test": 200}
    assert build("fsdd", tmp_path, seed=0, root=str(fsdd_dir))["split"].tolist() == rows["split"].tolist()


def test_fsdd_speaker_split_on_real_data(fsdd_dir, tmp_path):
    rows = build(
        "fsdd",
        tmp_path,
        root=str(fsdd_dir),
        split="speaker",
        test_speakers=["george"],
        val_speakers=["jackson"],
    )
    assert split_counts(rows) == {"train": 1000, "val": 500, "test": 500}
    speakers_of = {role: set(rows.loc[rows["split"] == role, "speaker"]) for role in ("train", "val", "test")}
    assert speakers_of == {"train": {"lucas", "nicolas"}, "val": {"jackson"}, "test": {"george"}}
    with pytest.raises(ValueError, match="theo"):
        build(
            "fsdd",
            tmp_path,
            root=str(fsdd_dir),
            split="speaker",
            test_speakers=["theo"],
            val_speakers=["lucas"],
        )
    with pytest.raises(ValueError, match="val_speakers"):
        build("fsdd", tmp_path, root=str(fsdd_dir), split="speaker", test_speakers=["george"])
    one_name = build(
        "fsdd", tmp_path, root=str(fsdd_dir), split="speaker", test_speakers="lucas", val_speakers="george"
    )
    assert set(one_name.loc[one_name["split"] == "test", "speaker"]) == {"lucas"}


def test_fsdd_rejects_a_foreign_file_name(tmp_path):
    write_audio(tmp_path / "fsdd" / "recordings" / "0_george_0.wav")
    write_audio(tmp_path / "fsdd" / "recordings" / "zero-george.wav")
    with pytest.raises(ValueError, match="zero-george.wav"):
        build("fsdd", tmp_path, root=str(tmp_path / "fsdd"))


# --- generic importers --------------------------------------------------------------------------------------


def test_folder_importer_splits_each_class(tmp_path):
    root = tmp_path / "mine"
    written = make_folder_dataset(root, {"cat": 10, "dog": 10, "bird": 5})
    rows = build("folder", tmp_path, seed=5, root=str(root))
    assert sorted(rows["path"]) == sorted(str(p) for p in written)  # notes.txt and README.md ignored
    assert "cat/take2/clip_01.wav" in set(rows["clip_id"])
    per_class = Counter(zip([lab[0] for lab in rows["labels"]], rows["split"], strict=True))
    # round-half-up shares of 0.2 test and 0.1 val per class
    assert [per_class[("cat", r)] for r in ("train", "val", "test")] == [7, 1, 2]
    assert [per_class[("bird", r)] for r in ("train", "val", "test")] == [3, 1, 1]

    folds = build("folder", tmp_path, seed=5, root=str(root), n_folds=5)
    assert folds["split"].isna().all() and set(folds["fold"]) == {1, 2, 3, 4, 5}
    assert get_adapter("folder").n_folds({"n_folds": 5}) == 5

    write_audio(root / "stray.wav")
    with pytest.raises(ValueError, match="stray.wav"):
        build("folder", tmp_path, root=str(root))


def _csv_dataset(root: Path, n_per_label: dict[str, int]) -> pd.DataFrame:
    rows = []
    for label, n in n_per_label.items():
        for i in range(n):
            rows.append(
                {"file": f"audio/{label}_{i}.wav", "tag": label, "speaker": f"s{i % 3}", "duration_s": "1.0"}
            )
            write_audio(root / rows[-1]["file"])
    return pd.DataFrame(rows)


def test_csv_importer_carves_missing_val_from_train(tmp_path):
    root = tmp_path / "csvdata"
    table = _csv_dataset(root, {"x": 20, "y": 10})
    table["part"] = ["test" if i % 5 == 0 else "training" for i in range(len(table))]
    table.to_csv(root / "meta.csv", index=False)
    options = dict(
        root=str(root), csv="meta.csv", path_column="file", label_column="tag", split_column="part"
    )
    rows = build("csv", tmp_path, **options)
    assert (rows["split"] == "test").tolist() == (table["part"] == "test").tolist()
    n_train = Counter(table.loc[table["part"] == "training", "tag"])  # x: 16, y: 8
    got = Counter(zip([lab[0] for lab in rows["labels"]], rows["split"], strict=True))
    assert got[("x", "val")] == 2 and got[("y", "val")] == 1  # round-half-up 10% of 16 and 8
    assert got[("x", "train")] == n_train["x"] - 2
    assert rows["speaker"].tolist() == table["speaker"].tolist()
    assert "source_duration_s" in rows.columns  # a reserved manifest name is kept under another name
    assert rows["clip_id"].tolist() == table["file"].tolist()

    table.loc[3, "part"] = "holdout"
    table.to_csv(root / "meta.csv", index=False)
    with pytest.raises(ValueError, match="holdout"):
        build("csv", tmp_path, **options)
    with pytest.raises(ValueError, match="'label'"):
        build("csv", tmp_path, **{**options, "label_column": "label"})


def test_csv_importer_multi_label_and_folds(tmp_path):
    root = tmp_path / "csvdata"
    table = pd.DataFrame(
        {
            "path": [f"clips/{i}.wav" for i in range(12)],
            "labels": ["a;b", "b", "a", "c; a", "b;c", "a"] * 2,
            "fold": [1, 2, 3] * 4,
        }
    )
    for path in table["path"]:
        write_audio(root / path)
    table.to_csv(root / "meta.tsv", sep="\t", index=False)
    options = dict(root=str(root), csv="meta.tsv", sep="\t", label_delimiter=";")
    rows = build("csv", tmp_path, **options)
    assert rows["labels"].map(list).tolist()[:6] == [["a", "b"], ["b"], ["a"], ["c", "a"], ["b", "c"], ["a"]]
    assert get_adapter("csv").task(options) == "multi_label"
    assert set(rows["split"]) <= {"train", "val", "test"} and rows["fold"].isna().all()

    with_folds = build("csv", tmp_path, **options, fold_column="fold")
    assert with_folds["fold"].tolist() == table["fold"].tolist() and with_folds["split"].isna().all()
    assert get_adapter("csv").n_folds({**options, "fold_column": "fold"}) == 3

    (root / "clips" / "4.wav").unlink()
    with pytest.raises(DatasetLayoutError, match="clips/4.wav"):
        build("csv", tmp_path, **options)


# --- the manifest builder accepts adapter rows --------------------------------------------------------


def test_build_manifest_from_an_adapter(tmp_path):
    make_esc50(tmp_path / "ESC-50", clips_per_class_and_fold=1)
    out = tmp_path / "results" / "data" / "esc"
    build_manifest("esc", {"adapter": "esc50", "options": {"root": str(tmp_path / "ESC-50")}}, out)
    manifest = read_manifest(out / "manifest.parquet")
    assert len(manifest) == 25 and sorted(manifest["fold"].unique()) == [1, 2, 3, 4, 5]
    assert (out / "labels.txt").read_text().split() == sorted(c for _, c, _ in ESC50_CLASSES)
    assert (manifest["sample_rate"] == 8000).all()
