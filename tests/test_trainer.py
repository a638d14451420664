"""The tuning stage end to end: outputs, no test leakage, label-kind errors, augmentation, SIGKILL resume,
and a short real tuning of the resemblyzer backbone on FSDD digits."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from acft.data.cache import AudioCache
from acft.identity import Run
from acft.models.contract import InputContract
from acft.results import validate_rows
from acft.tune import trainer
from acft.tune.augment import AugmentConfig, augment, random_crop
from acft.tune.trainer import TuneConfig, head_metrics, knn_metric, training_views, warmup_cosine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from schema_defaults import backbone_config, method, tune_config  # noqa: E402

torch.set_num_threads(1)

TESTS = Path(__file__).resolve().parent
PYTHON = sys.executable
SR = 16000


# ---------------------------------------------------------------- a tiny stand-in for acft.models.Encoder


class TinyEncoder(nn.Module):
    """Strided conv front end + masked mean: the Encoder interface at a few thousand parameters."""

    sample_rate = SR
    max_input_s = 30.0
    embed_dim = 16
    layer_names = ["last"]

    contract = InputContract(normalize_level=False, trim_silence=False)

    def __init__(self):
        super().__init__()
        self.frontend = nn.Conv1d(1, 16, kernel_size=64, stride=32)
        self.mix = nn.Conv1d(16, 16, kernel_size=3, padding=1)

    @contextlib.contextmanager
    def contract_applied_by_caller(self):
        yield

    def forward(self, waveforms, lengths):
        frames = self.mix(torch.relu(self.frontend(waveforms[:, None])))
        valid = ((lengths - 64) // 32 + 1).clamp(min=1)
        mask = (torch.arange(frames.shape[-1], device=frames.device)[None, :] < valid[:, None]).to(
            frames.dtype
        )
        return (frames * mask[:, None]).sum(-1) / valid[:, None].to(frames.dtype)

    def freeze(self, prefixes):
        matched = False
        for name, parameter in self.named_parameters():
            if any(name.startswith(p) for p in prefixes):
                parameter.requires_grad_(False)
                matched = True
        if not matched:
            raise ValueError(f"freeze prefixes {prefixes} match no parameter")

    def describe(self):
        return {"family": "tiny"}

    def save_pretrained(self, directory):
        raise AssertionError("only hf backbones are exported with save_pretrained")


def tiny_factory(backbone_cfg):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(backbone_cfg.get("init_seed", 0))  # the "pretrained" weights
        return TinyEncoder()


# ---------------------------------------------------------------- synthetic caches


def write_cache(root: Path, clips: list[dict], vocab: list[str], sample_rate: int = SR) -> tuple[Path, Path]:
    """Write an AudioCache directory (waveforms.npy + index.parquet) and a vocabulary file."""
    directory = root / "demo" / f"sr{sample_rate}"
    directory.mkdir(parents=True)
    lengths = [len(c["wave"]) for c in clips]
    np.save(directory / "waveforms.npy", np.concatenate([c["wave"] for c in clips]).astype(np.float32))
    pd.DataFrame(
        {
            "clip_id": [f"clip{i:04d}" for i in range(len(clips))],
            "offset": np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            "length": np.array(lengths, dtype=np.int64),
            "labels": [list(c["labels"]) for c in clips],
            "split": pd.array([c.get("split") for c in clips], dtype="string"),
            "fold": pd.array([c.get("fold") for c in clips], dtype="Int64"),
        }
    ).to_parquet(directory / "index.parquet", index=False)
    vocab_path = root / "vocab.txt"
    vocab_path.write_text("\n".join(vocab) + "\n")
    return directory, vocab_path


def tone(rng, freqs, n):
    """Label tones under a louder nuisance tone of random pitch, so the pretrained encoder has room to improve."""
    t = np.arange(n) / SR
    wave = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in freqs) if freqs else 0.0
    nuisance = rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * rng.uniform(100, 4000) * t)
    return 0.2 * wave + 0.3 * nuisance + 0.05 * rng.normal(size=n)


def single_label_clips(rng, n_classes=4, per_class=24, folds=4):
    clips = []
    for c in range(n_classes):
        for i in range(per_class):
            n = int(rng.integers(3200, 4800))
            clips.append({"wave": tone(rng, [300 * (c + 1)], n), "labels": [f"c{c}"], "fold": i % folds + 1})
    return clips, [f"c{c}" for c in range(n_classes)]


def multilabel_clips(rng, n_labels=4, n_clips=96):
    clips = []
    for i in range(n_clips):
        labels = sorted(rng.choice(n_labels, size=int(rng.integers(0, 3)), replace=False).tolist())
        split = ("train", "train", "val", "test")[i % 4]
        clips.append(
            {
                "wave": tone(rng, [250 * (c + 1) for c in labels], 4000),
                "labels": [f"n{c}" for c in labels],
                "split": split,
            }
        )
    return clips, [f"n{c}" for c in range(n_labels)]


def tune(cache_dir, vocab, backbone: dict, method_cfg: dict, cfg: dict, **kwargs) -> dict:
    """``trainer.tune`` with the schema's defaults filled in, as the tune rule passes its sections."""
    kwargs.setdefault("val_offset", 1)
    sections = backbone_config(**backbone), method(**method_cfg), tune_config(**cfg)
    names = dict(dataset="demo", backbone="tiny", method=method_cfg["loss"]) | kwargs.pop("names", {})
    run = Run(**names, fold=kwargs.pop("fold"), seed=kwargs.pop("seed"))
    return trainer.tune(cache_dir, vocab, *sections, run=run, **kwargs)


def augment_config(**overrides) -> AugmentConfig:
    return AugmentConfig.from_dict(tune_config(augment=overrides)["augment"])


FAST = {
    "epochs": 2,
    "classes_per_batch": 4,
    "clips_per_class": 4,
    "lr_candidates": [1e-2],
    "warmup_epochs": 0.5,
}


@pytest.fixture(scope="module")
def kfold_cache(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("kfold"), *single_label_clips(np.random.default_rng(0)))


@pytest.fixture(scope="module")
def multi_cache(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("multi"), *multilabel_clips(np.random.default_rng(1)))


@pytest.fixture
def read_spy(monkeypatch):
    """Records every clip index the tuner reads, in order."""
    calls = []
    original = AudioCache.batch

    def batch(self, indices):
        calls.append([int(i) for i in indices])
        return original(self, indices)

    monkeypatch.setattr(AudioCache, "batch", batch)
    return calls


# ---------------------------------------------------------------- tuning runs


def test_supcon_ce_run_writes_every_output_and_reads_test_clips_only_for_the_head(
    kfold_cache, tmp_path, read_spy
):
    cache_dir, vocab = kfold_cache
    out = tmp_path / "run"
    names = {"dataset": "demo", "backbone": "tiny", "method": "hybrid"}
    meta = tune(
        cache_dir, vocab, {"family": "tiny"}, {"loss": "supcon_ce", "temperature": 0.2}, FAST,
        fold=2, seed=0, out_dir=out, names=names, lineage_hash="abc", encoder_factory=tiny_factory,
    )  # fmt: skip
    index = pd.read_parquet(cache_dir / "index.parquet")
    test_clips = set(np.flatnonzero(index["fold"] == 2).tolist())  # fold 2 is the test fold, fold 3 val
    first_test_read = next(i for i, call in enumerate(read_spy) if test_clips & set(call))
    assert all(set(call) <= test_clips for call in read_spy[first_test_read:])  # test reads come last, alone
    assert sorted(i for call in read_spy[first_test_read:] for i in call) == sorted(test_clips)

    assert {p.name for p in out.iterdir()} == {
        "model.safetensors",
        "meta.json",
        "log.csv",
        "curve.png",
        "head.parquet",
    }
    weights = load_file(out / "model.safetensors")
    assert set(weights) == set(TinyEncoder().state_dict())  # heads dropped
    log = pd.read_csv(out / "log.csv")
    assert log["epoch"].tolist() == [1, 2] and log["train_loss"].notna().all()
    expected_columns = {
        "lr_candidate",
        "epoch",
        "train_loss",
        "val_loss",
        "val_knn",
        "val_head",
        "val_metric",
    }
    expected_columns |= {
        "lr",
        "seconds",
        "positive_share",
        "zero_positive_batches",
        "clips_seen",
        "unique_clips",
    }
    assert expected_columns == set(log.columns)
    assert (log["positive_share"] == 1.0).all() and (log["zero_positive_batches"] == 0).all()
    assert meta == json.loads((out / "meta.json").read_text())
    # a contrastive method (the hybrid too) selects on val kNN by default
    assert meta["training"] == {"sampler": "balanced", "select_on": "knn", "views": 1}
    assert (log["val_metric"] == log["val_knn"]).all() and meta["val_metric"] == "knn_accuracy"
    assert meta["chosen_lr"] == 1e-2 and meta["best_epoch"] == int(log.at[log["val_knn"].idxmax(), "epoch"])
    assert meta["metrics"]["val_knn_accuracy"] == log["val_knn"].max()
    assert meta["n_train"] == 48 and meta["n_val"] == 24 and meta["sampler"]["positive_share"] == 1.0
    # budget: ceil(48 / (4 x 4)) = 3 batches per epoch, about one pass of the train clips
    assert meta["budget"]["batches_per_epoch"] == 3 and meta["budget"]["clips_per_batch"] == 16
    assert (log["clips_seen"] == 48).all()

    rows = pd.read_parquet(out / "head.parquet")
    validate_rows(rows)
    head = rows[rows["probe"] == "head"]
    assert sorted(head["metric"]) == ["accuracy", "macro_f1"] and set(rows["probe"]) == {"head", "tune"}
    assert set(rows["method"]) == {"hybrid"} and set(head["n_test"]) == {24} and set(rows["fold"]) == {2}
    assert set(rows["config_hash"]) == {"abc"} and set(rows["dataset"]) == {"demo"}
    assert meta["head"]["accuracy"] == pytest.approx(float(head.set_index("metric").at["accuracy", "value"]))
    chosen = rows[rows["probe"] == "tune"].set_index("metric")["value"]
    assert chosen["chosen_lr"] == 1e-2 and chosen["chosen_epoch"] == meta["best_epoch"]


def test_supcon_never_reads_the_test_role_and_tuning_helps(kfold_cache, tmp_path, read_spy):
    cache_dir, vocab = kfold_cache
    cfg = {**FAST, "epochs": 4}
    meta = tune(
        cache_dir, vocab, {"family": "tiny"}, {"loss": "supcon", "temperature": 0.2}, cfg,
        fold=1, seed=0, out_dir=tmp_path / "run", encoder_factory=tiny_factory,
    )  # fmt: skip
    index = pd.read_parquet(cache_dir / "index.parquet")
    read = {i for call in read_spy for i in call}
    assert read == set(np.flatnonzero(index["fold"] != 1).tolist())
    rows = pd.read_parquet(tmp_path / "run" / "head.parquet")  # only the tuning choices: no head
    assert set(rows["probe"]) == {"tune"} and set(rows["metric"]) >= {"chosen_lr", "chosen_epoch"}
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    assert meta["metrics"]["val_knn_accuracy"] >= meta["metrics"]["pretrained_val_knn"]


@pytest.mark.parametrize("method", [{"loss": "bce"}, {"loss": "jaccard_supcon", "jaccard_power": 2.0}])
def test_multilabel_methods_run_with_map_selection(multi_cache, tmp_path, method):
    cache_dir, vocab = multi_cache
    cfg = {**FAST, "augment": {"gain_db": 6, "noise_snr_db": 20, "time_mask_s": 0.05, "random_crop_s": 0.2}}
    meta = tune(
        cache_dir, vocab, {"family": "tiny"}, method, cfg,
        fold=0, seed=1, out_dir=tmp_path / "run", encoder_factory=tiny_factory,
    )  # fmt: skip
    # bce selects on its own head's val mAP, jaccard_supcon on val kNN mAP
    assert meta["multilabel"] and meta["val_metric"] == ("head_map" if method["loss"] == "bce" else "knn_map")
    # clips without labels are sampled too, and they have no positives
    assert 0 < meta["sampler"]["positive_share"] < 1
    rows = pd.read_parquet(tmp_path / "run" / "head.parquet")
    if method["loss"] == "bce":
        # the probes' multi-label metrics, thresholds chosen on val
        assert sorted(rows.loc[rows["probe"] == "head", "metric"]) == [
            "macro_f1", "map", "n_classes_without_test_positive", "n_classes_without_val_positive",
        ]  # fmt: skip
    else:
        assert set(rows["probe"]) == {"tune"}


def test_ce_trains_on_shuffled_batches_covering_every_clip_once_and_selects_on_its_head(
    kfold_cache, tmp_path, read_spy, monkeypatch
):
    from acft.tune import trainer

    cache_dir, vocab = kfold_cache
    index = pd.read_parquet(cache_dir / "index.parquet")
    train = set(np.flatnonzero(index["fold"].isin([3, 4])).tolist())  # fold 1 tests, fold 2 validates
    train_batches = []
    original = trainer._train_epoch

    def spy(model, data, cfg, loss_fn, batches, *args):
        train_batches.append([data.train_idx[b].tolist() for b in batches])
        return original(model, data, cfg, loss_fn, batches, *args)

    monkeypatch.setattr(trainer, "_train_epoch", spy)
    cfg = {**FAST, "epochs": 3, "patience": 3}
    meta = tune(
        cache_dir, vocab, {"family": "tiny"}, {"loss": "ce"}, cfg,
        fold=1, seed=0, out_dir=tmp_path / "run", encoder_factory=tiny_factory,
    )  # fmt: skip
    assert meta["training"] == {"sampler": "shuffle", "select_on": "head", "views": 1}
    assert len(train_batches) == 3
    orders = []
    for batches in train_batches:  # every train clip exactly once per epoch, in batches of P x m = 16
        assert [len(b) for b in batches] == [16, 16, 16]
        assert sorted(i for b in batches for i in b) == sorted(train)
        orders.append([i for b in batches for i in b])
    assert orders[0] != orders[1] != orders[2]  # a fresh shuffle each epoch
    # the batches the encoder read are exactly those (plus the embedding passes, which are bucketed by length)
    assert [call for call in read_spy if call in [b for e in train_batches for b in e]]
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert (log["val_metric"] == log["val_head"]).all() and log["val_head"].notna().all()
    assert meta["val_metric"] == "head_accuracy"
    assert meta["best_epoch"] == int(log.at[log["val_head"].idxmax(), "epoch"])
    assert meta["metrics"]["val_head_accuracy"] == log["val_head"].max()
    assert (log["unique_clips"] == len(train)).all() and meta["budget"]["batches_per_epoch"] == 3


def test_ce_selection_reads_the_head_metric_not_knn(kfold_cache, tmp_path, monkeypatch):
    from acft.tune import trainer

    # a head metric that rises every epoch while kNN falls: the chosen epoch must follow the head
    calls = {"n": 0}

    def fake_evaluate(model, data, loss_fn, val_batches, cfg, device):
        calls["n"] += 1
        return {"val_loss": 1.0, "val_knn": 1.0 / calls["n"], "val_head": float(calls["n"])}

    monkeypatch.setattr(trainer, "_evaluate", fake_evaluate)
    cfg = {**FAST, "epochs": 3, "patience": 3}
    run = {"fold": 1, "seed": 0, "encoder_factory": tiny_factory}
    head = tune(*kfold_cache, {"family": "tiny"}, {"loss": "ce"}, cfg, out_dir=tmp_path / "head", **run)
    assert head["best_epoch"] == 3
    calls["n"] = 0
    legacy = {"loss": "ce", "sampler": "balanced", "select_on": "knn"}  # the earlier CE baseline, by name
    knn = tune(*kfold_cache, {"family": "tiny"}, legacy, cfg, out_dir=tmp_path / "knn", **run)
    assert knn["best_epoch"] == 1 and knn["training"]["sampler"] == "balanced"


def test_two_views_double_the_anchors_with_independent_crops(kfold_cache, tmp_path):
    cfg = {**FAST, "max_clip_s": 0.1, "augment": {"gain_db": 6.0}}
    meta = tune(
        *kfold_cache, {"family": "tiny"}, {"loss": "supcon", "views": 2}, cfg,
        fold=1, seed=0, out_dir=tmp_path / "run", encoder_factory=tiny_factory,
    )  # fmt: skip
    assert meta["training"]["views"] == 2 and meta["budget"]["views_per_clip"] == 2
    assert meta["budget"]["batches_per_epoch"] == 3  # same clips per batch and steps per epoch as one view

    waveforms = torch.arange(2 * 4000, dtype=torch.float32).reshape(2, 4000) + 1
    lengths = torch.tensor([4000, 3000])
    one = TuneConfig.from_dict(tune_config(max_clip_s=0.05))
    views, view_lengths = training_views(waveforms, lengths, one, SR, torch.Generator().manual_seed(0), 2)
    assert views.shape == (4, 800) and view_lengths.tolist() == [800, 800, 800, 800]
    assert not torch.equal(views[0], views[2])  # two independent crops of clip 0
    assert views[2, 0] <= 4000 and views[3, 0] > 4000  # rows: view 0 of clips 0, 1, then view 1 of clips 0, 1
    single = training_views(waveforms, lengths, one, SR, torch.Generator().manual_seed(0), 1)
    assert torch.equal(single[0], views[:2])  # one view draws exactly what the single-view trainer drew


class LevellingEncoder(TinyEncoder):
    """resemblyzer's level contract; records the level of what reaches the network in training."""

    contract = InputContract(normalize_level=True, trim_silence=False)

    def __init__(self):
        super().__init__()
        self.applied_by_caller, self.training_levels = False, []

    @contextlib.contextmanager
    def contract_applied_by_caller(self):
        self.applied_by_caller = True
        yield
        self.applied_by_caller = False

    def forward(self, waveforms, lengths):
        if self.training:
            assert (
                self.applied_by_caller
            )  # the trainer applied the contract: the crops are not levelled again
            valid = torch.arange(waveforms.shape[1]) < lengths[:, None]
            self.training_levels += ((waveforms.square() * valid).sum(1) / lengths).sqrt().tolist()
        return super().forward(waveforms, lengths)


def test_training_levels_whole_clips_before_cropping_as_resemblyzer_does(tmp_path):
    """A clip loud in its first half and 40 dB quieter in its second: levelled as a whole (already above
    -30 dBFS, so unchanged), its quiet crops stay quiet; a crop levelled on its own would reach -30 dBFS."""
    rng = np.random.default_rng(0)
    clips = []
    for i in range(32):
        loud, quiet = 0.3 * rng.normal(size=4000), 0.003 * rng.normal(size=4000)
        clips.append({"wave": np.r_[loud, quiet], "labels": [f"c{i % 4}"], "fold": i % 4 + 1})
    cache = write_cache(tmp_path, clips, [f"c{c}" for c in range(4)])
    encoder = LevellingEncoder()
    cfg = {**FAST, "epochs": 1, "max_clip_s": 0.1}
    tune(
        *cache, {"family": "tiny"}, {"loss": "supcon"}, cfg,
        fold=1, seed=0, out_dir=tmp_path / "run", encoder_factory=lambda _: encoder,
    )  # fmt: skip
    levels = np.array(encoder.training_levels)
    assert len(levels) > 0 and levels.min() < 0.01  # quiet crops kept (-30 dBFS is 0.0316)


def test_label_kind_and_config_errors(kfold_cache, multi_cache, tmp_path):
    def run(cache, method, cfg=FAST, backbone=None):
        return tune(
            *cache, backbone or {"family": "tiny"}, method, cfg,
            fold=1 if cache is kfold_cache else 0, seed=0, out_dir=tmp_path / "x", encoder_factory=tiny_factory,
        )  # fmt: skip

    with pytest.raises(ValueError, match="use loss: bce"):
        run(multi_cache, {"loss": "ce"})
    with pytest.raises(ValueError, match="use loss: ce"):
        run(kfold_cache, {"loss": "bce"})
    # value and key errors are the schema's, met at workflow start (tests/schema_defaults.py fills the same way)
    with pytest.raises(ValueError, match=r"tune: Additional properties .*'epoch'"):
        run(kfold_cache, {"loss": "ce"}, {"epoch": 3})
    with pytest.raises(ValueError, match=r"tune.augment: Additional properties .*'pitch'"):
        run(kfold_cache, {"loss": "ce"}, {"augment": {"pitch": 2}})
    with pytest.raises(ValueError, match="tune.clips_per_class: 1 is less than the minimum of 2"):
        run(kfold_cache, {"loss": "ce"}, {"clips_per_class": 1})
    with pytest.raises(ValueError, match="match no parameter"):
        run(kfold_cache, {"loss": "ce"}, {**FAST, "freeze": ["nothing."]})
    with pytest.raises(ValueError, match="select_on: head needs a classifier head"):
        run(kfold_cache, {"loss": "supcon", "select_on": "head"})
    with pytest.raises(ValueError, match="methods.m.sampler: 'random' is not one of"):
        run(kfold_cache, {"loss": "ce", "sampler": "random"})


def test_supcon_without_shared_labels_is_refused(tmp_path):
    rng = np.random.default_rng(2)
    clips = [{"wave": tone(rng, [200], 4000), "labels": [f"c{i}"], "split": "train"} for i in range(4)]
    clips += [{"wave": tone(rng, [200], 4000), "labels": ["c0"], "split": s} for s in ("val", "test")]
    cache = write_cache(tmp_path, clips, [f"c{i}" for i in range(4)])
    with pytest.raises(ValueError, match="needs train clips that share a label"):
        tune(
            *cache,
            {},
            {"loss": "supcon"},
            FAST,
            fold=0,
            seed=0,
            out_dir=tmp_path / "x",
            encoder_factory=tiny_factory,
        )


def test_head_methods_need_a_test_role_before_training_starts(tmp_path):
    rng = np.random.default_rng(4)
    clips = [
        {"wave": tone(rng, [200], 4000), "labels": [f"c{i % 2}"], "split": ("train", "val")[i % 2]}
        for i in range(8)
    ]
    cache = write_cache(tmp_path, clips, ["c0", "c1"])
    with pytest.raises(ValueError, match="reports its head on the test role"):
        tune(
            *cache,
            {},
            {"loss": "ce"},
            FAST,
            fold=0,
            seed=0,
            out_dir=tmp_path / "x",
            encoder_factory=tiny_factory,
        )
    assert not (tmp_path / "x").exists()


def test_frozen_prefixes_stay_at_their_pretrained_values(kfold_cache, tmp_path):
    cache_dir, vocab = kfold_cache
    tune(
        cache_dir, vocab, {"family": "tiny", "freeze": ["frontend."]}, {"loss": "ce"}, FAST,
        fold=1, seed=0, out_dir=tmp_path / "run", encoder_factory=tiny_factory,
    )  # fmt: skip
    tuned, pretrained = load_file(tmp_path / "run" / "model.safetensors"), tiny_factory({}).state_dict()
    assert torch.equal(tuned["frontend.weight"], pretrained["frontend.weight"])
    assert not torch.equal(tuned["mix.weight"], pretrained["mix.weight"])


def test_early_stopping_and_accumulated_schedule(kfold_cache, tmp_path):
    cache_dir, vocab = kfold_cache
    frozen_lr = {
        **FAST,
        "epochs": 5,
        "patience": 2,
        "lr_candidates": [1e-12],
    }  # weights (and val kNN) stay put
    meta = tune(
        cache_dir, vocab, {"family": "tiny"}, {"loss": "ce"}, frozen_lr,
        fold=1, seed=0, out_dir=tmp_path / "flat", encoder_factory=tiny_factory,
    )  # fmt: skip
    assert meta["candidates"][0]["epochs_run"] == 3 and meta["candidates"][0]["stopped_early"]
    assert meta["best_epoch"] == 1

    # 48 train clips / (4 x 4) = 3 batches; accumulating 2 gives 2 optimiser steps per epoch
    cfg = {**FAST, "epochs": 3, "grad_accum": 2, "warmup_epochs": 1.0, "patience": 5}
    tune(
        cache_dir, vocab, {"family": "tiny"}, {"loss": "ce"}, cfg,
        fold=1, seed=0, out_dir=tmp_path / "accum", encoder_factory=tiny_factory,
    )  # fmt: skip
    log = pd.read_csv(tmp_path / "accum" / "log.csv")
    factor = warmup_cosine(2, 6)
    assert log["lr"].tolist() == pytest.approx([1e-2 * factor(2 * epoch) for epoch in (1, 2, 3)])


# ---------------------------------------------------------------- resume after SIGKILL


RUN_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_trainer import tiny_factory, tune
tune({cache!r}, {vocab!r}, {{"family": "tiny"}}, {{"loss": "supcon_ce", "temperature": 0.2}}, {cfg!r},
     fold=1, seed=3, out_dir=sys.argv[1], encoder_factory=tiny_factory)
"""


def test_sigkill_during_epoch_two_then_rerun_gives_bit_identical_weights(kfold_cache, tmp_path):
    cache_dir, vocab = kfold_cache
    cfg = {**FAST, "epochs": 6, "patience": 6, "lr_candidates": [1e-3, 3e-3], "grad_accum": 2,
           "max_clip_s": 0.22, "augment": {"gain_db": 3.0, "noise_snr_db": 30.0}}  # fmt: skip
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT.format(tests=str(TESTS), cache=str(cache_dir), vocab=str(vocab), cfg=cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def finish(out):
        result = subprocess.run([PYTHON, str(script), str(out)], capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    # the uninterrupted reference runs in this process: same arguments, same single thread
    tune(
        cache_dir, vocab, {"family": "tiny"}, {"loss": "supcon_ce", "temperature": 0.2}, cfg,
        fold=1, seed=3, out_dir=tmp_path / "straight", encoder_factory=tiny_factory,
    )  # fmt: skip

    killed = tmp_path / "killed"
    process = subprocess.Popen([PYTHON, str(script), str(killed)], stdout=subprocess.DEVNULL, env=env)
    marker = killed / "resume" / "lr1" / "state.pt"  # the second candidate finished its first epoch
    deadline = time.time() + 120
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL and not (killed / "meta.json").exists()
    state = torch.load(marker, weights_only=True)
    assert 1 <= state["epoch"] < cfg["epochs"]

    stdout = finish(killed)
    assert "lr 0.001: finished in an earlier run" in stdout
    assert f"lr 0.003: resuming at epoch {state['epoch'] + 1}" in stdout

    straight, resumed = (
        load_file(tmp_path / "straight" / "model.safetensors"),
        load_file(killed / "model.safetensors"),
    )
    assert set(straight) == set(resumed) and all(torch.equal(straight[k], resumed[k]) for k in straight)
    columns = ["lr_candidate", "epoch", "train_loss", "val_loss", "val_knn", "lr", "positive_share"]
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "straight" / "log.csv")[columns], pd.read_csv(killed / "log.csv")[columns]
    )
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "straight" / "head.parquet"), pd.read_parquet(killed / "head.parquet")
    )
    assert not (killed / "resume").exists()
    assert not [p for p in killed.rglob("*") if ".tmp" in p.name]


# ---------------------------------------------------------------- building blocks


def test_tune_config_from_dict_needs_every_key():
    cfg = TuneConfig.from_dict(
        {**tune_config(lr_candidates=[1e-4, 3e-4], augment={"gain_db": 3}), "freeze": ["a"]}
    )
    assert cfg.lr_candidates == (1e-4, 3e-4) and cfg.freeze == ("a",) and cfg.augment.gain_db == 3
    assert cfg.to_dict()["augment"] == {
        "random_crop_s": None, "gain_db": 3, "noise_snr_db": None, "time_mask_s": None,
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"missing key\(s\) \['amp'"):
        TuneConfig.from_dict({k: v for k, v in tune_config().items() if k != "amp"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epoch'\]"):
        TuneConfig.from_dict({**tune_config(), "epoch": 3})


def test_warmup_cosine_schedule():
    factor = warmup_cosine(4, 20)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(12) == pytest.approx(0.5)  # half-way through the cosine
    assert factor(19) > 0 and factor(19) < 0.02
    assert warmup_cosine(0, 10)(0) == 1.0


def test_knn_metric_against_brute_force():
    rng = np.random.default_rng(0)
    train, query = rng.normal(size=(40, 5)), rng.normal(size=(15, 5))
    train_classes, query_classes = rng.integers(0, 3, size=40), rng.integers(0, 3, size=15)
    cos = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ (
        train / np.linalg.norm(train, axis=1, keepdims=True)
    ).T
    correct = 0
    for row, truth in zip(cos, query_classes, strict=True):
        nearest = np.argsort(-row)[:5]
        votes = np.bincount(train_classes[nearest], weights=np.exp(row[nearest] / 0.07), minlength=3)
        correct += int(np.argmax(votes) == truth)
    eye = np.eye(3, dtype=np.float32)
    got = knn_metric(
        torch.tensor(train), torch.tensor(eye[train_classes]), torch.tensor(query), torch.tensor(eye[query_classes]),
        5, multilabel=False,
    )  # fmt: skip
    assert got == pytest.approx(correct / 15)

    from sklearn.metrics import average_precision_score

    train_mh = (rng.random((40, 4)) < 0.4).astype(np.float32)
    query_mh = (rng.random((15, 4)) < 0.4).astype(np.float32)
    query_mh[:, 3] = 0  # a class without a query positive is left out
    scores = []
    for row in cos:
        nearest = np.argsort(-row)[:7]
        weights = np.exp(row[nearest] / 0.07)
        scores.append((weights[:, None] * train_mh[nearest]).sum(axis=0) / weights.sum())
    scores = np.stack(scores)
    expected = np.mean([average_precision_score(query_mh[:, c], scores[:, c]) for c in range(3)])
    got = knn_metric(
        torch.tensor(train),
        torch.tensor(train_mh),
        torch.tensor(query),
        torch.tensor(query_mh),
        7,
        multilabel=True,
    )
    assert got == pytest.approx(expected)


def test_head_metrics_are_the_probes_metrics():
    from sklearn.metrics import accuracy_score, f1_score

    from acft.probes.metrics import multilabel_metrics

    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(size=(30, 4)), dtype=torch.float32)
    truth = rng.integers(0, 3, size=30)  # class 3 has no test clip but may be predicted
    records = {r["metric"]: r["value"] for r in head_metrics(logits, torch.eye(4)[truth], multilabel=False)}
    predicted = logits.argmax(1).numpy()
    assert records["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    # macro-F1 over the classes in the truth or the predictions, as sklearn's default and the probes
    assert records["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    # one class present: still a 1-class macro-F1, never sklearn's binary reading of an (n, 1) matrix
    one = {
        r["metric"]: r["value"] for r in head_metrics(torch.ones(5, 1), torch.ones(5, 1), multilabel=False)
    }
    assert one == {"accuracy": 1.0, "macro_f1": 1.0}

    mh = (rng.random((30, 4)) < 0.4).astype(np.float32)
    mh[:, 0] = 0
    val_logits = torch.tensor(rng.normal(size=(20, 4)), dtype=torch.float32)
    val_mh = (rng.random((20, 4)) < 0.4).astype(np.float32)
    records = {
        r["metric"]: r["value"]
        for r in head_metrics(logits, torch.tensor(mh), True, val_logits, torch.tensor(val_mh))
    }
    expected = multilabel_metrics(
        val_mh, torch.sigmoid(val_logits).double().numpy(), mh, torch.sigmoid(logits).double().numpy()
    )
    assert records == pytest.approx(expected)


def test_random_crop_takes_contiguous_windows():
    waveforms = torch.zeros(3, 10)
    lengths = torch.tensor([10, 6, 3])
    for row, n in enumerate(lengths):
        waveforms[row, :n] = torch.arange(1, int(n) + 1, dtype=torch.float32)
    cropped, new_lengths = random_crop(waveforms, lengths, 4, torch.Generator().manual_seed(0))
    assert new_lengths.tolist() == [4, 4, 3] and cropped.shape == (3, 4)
    for row in range(3):
        window = cropped[row, : new_lengths[row]]
        assert torch.equal(window - window[0], torch.arange(int(new_lengths[row]), dtype=torch.float32))
        assert 1 <= window[0] <= lengths[row] - new_lengths[row] + 1
    assert cropped[2, 3] == 0  # padding stays zero


def test_augment_ops_respect_valid_samples_and_strengths():
    generator = torch.Generator().manual_seed(0)
    waveforms = torch.zeros(64, 16000)
    lengths = torch.full((64,), 16000)
    lengths[::2] = 8000
    t = torch.arange(16000) / SR
    for row in range(64):
        waveforms[row, : lengths[row]] = torch.sin(2 * torch.pi * 440 * t[: lengths[row]])

    gained, _ = augment(waveforms, lengths, augment_config(gain_db=6.0), SR, generator)
    ratio_db = 20 * torch.log10(gained.abs().amax(1) / waveforms.abs().amax(1))
    assert (ratio_db.abs() <= 6.0 + 1e-4).all() and ratio_db.std() > 1.0

    noisy, _ = augment(waveforms, lengths, augment_config(noise_snr_db=10.0), SR, generator)
    noise = noisy - waveforms
    snr = 10 * torch.log10((waveforms.square().sum(1)) / noise.square().sum(1))
    assert snr.mean().item() == pytest.approx(10.0, abs=0.2)
    assert (noisy[::2, 8000:] == 0).all()  # padding untouched

    masked, _ = augment(waveforms, lengths, augment_config(time_mask_s=0.1), SR, generator)
    zeroed = (masked == 0) & (waveforms != 0)
    spans = zeroed.sum(1)
    assert (spans <= 1600).all() and spans.float().mean() > 400
    for row in range(64):  # one contiguous span per clip
        where = torch.nonzero(zeroed[row]).flatten()
        if len(where):
            assert where[-1] - where[0] + 1 >= len(where)
            assert (
                masked[row, where[0] : where[-1] + 1].abs().sum()
                <= waveforms[row, where[0] : where[-1] + 1].abs().sum()
            )


# ---------------------------------------------------------------- real backbone on real audio


def fsdd_cache(root: Path, fsdd: Path, per_digit: int) -> tuple[Path, Path]:
    import soundfile as sf
    import torchaudio

    clips = []
    for speaker, split in (("george", "train"), ("jackson", "train"), ("lucas", "train"), ("nicolas", "val")):
        for digit in range(10):
            for index in range(5, 5 + per_digit):
                wave, rate = sf.read(fsdd / "recordings" / f"{digit}_{speaker}_{index}.wav", dtype="float32")
                wave = torchaudio.functional.resample(torch.from_numpy(wave), rate, SR).numpy()
                clips.append({"wave": wave, "labels": [str(digit)], "split": split})
    # official test clips (index 0) of every speaker: present in the cache, never read by supcon tuning
    for digit in range(10):
        wave, rate = sf.read(fsdd / "recordings" / f"{digit}_nicolas_0.wav", dtype="float32")
        clips.append(
            {
                "wave": torchaudio.functional.resample(torch.from_numpy(wave), rate, SR).numpy(),
                "labels": [str(digit)],
                "split": "test",
            }
        )
    return write_cache(root, clips, [str(d) for d in range(10)])


def test_resemblyzer_supcon_on_fsdd_digits_lowers_loss_and_raises_val_knn(fsdd_dir, tmp_path, read_spy):
    try:
        from acft.models import build_encoder
    except ImportError:
        pytest.skip("the backbone registry acft.models.build_encoder is not in this checkout yet")
    cache_dir, vocab = fsdd_cache(tmp_path, fsdd_dir, per_digit=6)
    cfg = {
        "epochs": 3,
        "lr_candidates": [3e-4],
        "classes_per_batch": 10,
        "clips_per_class": 6,
        "warmup_epochs": 0.5,
    }
    meta = tune(
        cache_dir, vocab, {"family": "resemblyzer", "layer": "last", "pooling": "mean"},
        {"loss": "supcon", "temperature": 0.1}, cfg, fold=0, seed=0, out_dir=tmp_path / "run",
        encoder_factory=build_encoder,
    )  # fmt: skip
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    print(log.to_string())
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    assert meta["metrics"]["val_knn_accuracy"] > meta["metrics"]["pretrained_val_knn"]
    last_epoch_gain = log["val_knn"].iloc[-1] - meta["metrics"]["pretrained_val_knn"]
    assert last_epoch_gain > 0.1  # the last epoch improves too, not only the selected one
    index = pd.read_parquet(cache_dir / "index.parquet")
    assert not {i for call in read_spy for i in call} & set(np.flatnonzero(index["split"] == "test").tolist())


def test_hf_backbone_is_exported_with_save_pretrained_and_reloads(kfold_cache, tmp_path):
    try:
        from acft.models import build_encoder

        from tiny_models import save_tiny_model
    except ImportError:
        pytest.skip("the backbone registry acft.models.build_encoder is not in this checkout yet")
    backbone = backbone_config(
        **save_tiny_model("wav2vec2_layer", tmp_path / "tiny"), freeze=["model.feature_extractor"]
    )
    out = tmp_path / "run"
    tune(
        *kfold_cache, backbone, {"loss": "ce"}, FAST, fold=1, seed=0, out_dir=out
    )  # the default build_encoder
    tuned = load_file(out / "model.safetensors")
    encoder = build_encoder(backbone)
    pretrained = {k: v.clone() for k, v in encoder.state_dict().items()}
    encoder.load_state_dict(tuned)  # strict: exactly the encoder's keys
    exported = build_encoder({**backbone, "source": str(out / "pretrained")}).state_dict()
    assert set(exported) == set(tuned) and all(torch.equal(exported[k], tuned[k]) for k in tuned)
    frozen = [k for k in tuned if k.startswith("model.feature_extractor")]
    assert frozen and all(torch.equal(tuned[k], pretrained[k]) for k in frozen)
    assert any(not torch.equal(tuned[k], pretrained[k]) for k in tuned if k.startswith("model.encoder"))
