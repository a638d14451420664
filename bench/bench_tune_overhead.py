"""The trainer's time per optimiser step against a bare PyTorch loop doing the same steps (issue 17 §3), on CPU.

Data (generated, not timed): ``--clips`` clips of ``--min-s``-``--max-s`` s at 16 kHz, ``--classes`` classes of
tone chords plus noise (``bench_scaling.clip_audio``), written straight into an audio cache (float32
``waveforms.npy`` + ``index.parquet``, as ``acft.data.preprocess`` writes it) with a fixed 70/10/20
train/val/test split.

Sides, alternating (bare, trainer, bare, ...) ``--runs`` times after one untimed bare epoch (warm-up), both on
one torch thread with deterministic algorithms (the trainer's CPU setting, ``_pinned_torch``):

- trainer: ``acft.tune.trainer.tune`` exactly as the tune rule calls it: SupCon (``method("supcon")``), one lr
  candidate, ``--epochs`` epochs (patience above the budget, so every epoch runs), the label-balanced P x m
  batches, on the tiny random-init wav2vec2 of ``tests/tiny_models.py`` (``--backbone hf``) or resemblyzer.
  Everything it does is timed: model builds, the pretrained val pass, per epoch the training pass, val loss +
  val kNN (an embedding pass over train and val, then the search), the resume checkpoint and the printed log,
  and the final outputs (encoder weights, head.parquet, log.csv, curve.png).
- bare: the loop a researcher writes over the same model, batches and loss: the model, optimiser (AdamW, same
  parameter groups), scheduler and sampler are built with the trainer's own helpers (untimed), then per epoch
  ``list(sampler)``, and per batch the cache read, the input contract and the (no-op by default) crop and
  augmentation, forward, SupCon, backward, gradient clipping, optimiser and scheduler step. No evaluation,
  checkpoint or logging. Per-epoch seeding as the trainer's, so its train losses must equal the trainer's
  ``log.csv`` (the check that both did the same work; ``loss_max_abs_diff``).

Reported: ``ratio`` = bare seconds per optimiser step / the trainer's training pass seconds per step (goal
>= 0.9: the trainer's own loop costs at most ~10 % more than the bare one), ``ratio_epoch`` = the same against
the trainer's whole epoch (training pass + val + checkpoint + logging; context: the per-epoch val pass is a
feature, not overhead), and ``ratio_run`` against the whole ``tune`` call. The trainer exposes no timing split,
so it is measured from outside: the bench wraps, while the trainer runs, the trainer module's ``_train_epoch``,
``_evaluate``, ``embed_clips``, ``knn_metric``, ``training_views`` and ``print``, ``AudioCache.batch``,
``InputContract.apply``, the sampler's ``__iter__`` / ``set_epoch``, ``CandidateResume.save``,
``TuneModel.forward``, the SupCon loss, ``Tensor.backward``, ``clip_grad_norm_`` and ``AdamW.step`` with
timers (``monkeypatch``-style, restored afterwards; nothing in the package changes). An epoch runs from the
sampler's ``set_epoch`` to the end of its checkpoint save; its split: data loading (sampling, cache reads, input
contract, crop and augmentation), forward + backward + step (the rest of the training pass: forward, loss,
backward, clipping, step, and the loop's own bookkeeping), val (val embedding pass, val loss, kNN search),
checkpointing, logging (the printed lines) and other (what is left: the log row, the scheduler's lr, ...).
The log.csv ``seconds`` column (training pass + val, as the trainer measures it) is recorded as a cross-check.

Run: ``.venv/bin/python bench/bench_tune_overhead.py [--runs 3] [--clips 800] [--epochs 3] [--backbone hf]``;
smoke test: ``--clips 96 --epochs 1 --runs 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import REPO, summary, write_result
from tqdm import tqdm

from acft.data.cache import AudioCache
from acft.identity import Run
from acft.models.contract import InputContract
from acft.tune import losses, trainer
from acft.tune.checkpoint import CandidateResume
from acft.tune.samplers import LabelBalancedBatchSampler

sys.path.insert(0, str(REPO / "tests"))
from schema_defaults import backbone_config, method, tune_config  # noqa: E402

from tiny_models import save_tiny_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scaling import clip_audio  # noqa: E402

RATE = 16000
GOAL = 0.9


# ---------------------------------------------------------------------------------------------- data


def write_cache(
    root: Path, clips: int, classes: int, min_s: float, max_s: float, seed: int
) -> tuple[Path, Path]:
    """An audio cache of generated clips with a fixed 70/10/20 split, and its vocabulary file."""
    rng = np.random.default_rng([seed, 10])
    labels = np.arange(clips) % classes
    seconds = rng.uniform(min_s, max_s, clips)
    waves = [clip_audio(i, int(labels[i]), round(seconds[i] * RATE), RATE, seed) for i in range(clips)]
    roles = np.array(["train"] * 7 + ["val"] + ["test"] * 2)[rng.permutation(clips) % 10]
    directory = root / "data" / f"sr{RATE}"
    directory.mkdir(parents=True)
    lengths = np.array([len(w) for w in waves], dtype=np.int64)
    np.save(directory / "waveforms.npy", np.concatenate(waves).astype(np.float32))
    pd.DataFrame(
        {
            "clip_id": [f"clip{i:05d}" for i in range(clips)],
            "offset": np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            "length": lengths,
            "labels": [[f"class{c}"] for c in labels],
            "split": pd.array(roles, dtype="string"),
            "fold": pd.array([None] * clips, dtype="Int64"),
        }
    ).to_parquet(directory / "index.parquet", index=False)
    vocab = root / "labels.txt"
    vocab.write_text("".join(f"class{c}\n" for c in range(classes)))
    return directory, vocab


# -------------------------------------------------------------------------------------------- timers


class Timers:
    """Inclusive wall time of wrapped callables, keyed by the stack of wrapped calls they ran inside."""

    def __init__(self):
        self.stack: list[str] = []
        self.events: list[tuple[str, float, float]] = []  # (path, start, end)
        self._undo: list[tuple[object, str, object, bool]] = []

    def timed(self, fn, name: str):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            self.stack.append(name)
            path, start = "/".join(self.stack), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.stack.pop()
                self.events.append((path, start, time.perf_counter()))

        return wrapper

    def patch(self, owner, attr: str, name: str, make=None) -> None:
        had = attr in vars(owner)
        original = getattr(owner, attr) if had or hasattr(owner, attr) else print
        self._undo.append((owner, attr, vars(owner).get(attr), had))
        setattr(owner, attr, (make or self.timed)(original, name))

    def restore(self) -> None:
        for owner, attr, original, had in reversed(self._undo):
            if had:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)
        self._undo.clear()

    def sampler_iter(self, original, name):
        """The sampler's generator drained under the timer (``list(sampler)`` is where the trainer draws)."""

        def wrapper(sampler):
            return iter(self.timed(lambda: list(original(sampler)), name)())

        return wrapper


@contextlib.contextmanager
def instrumented(timers: Timers):
    """Wrap the trainer's parts with timers for the duration of one ``tune`` call."""
    t = timers
    for attr, name in (
        ("_train_epoch", "train_epoch"),
        ("_evaluate", "val_eval"),
        ("embed_clips", "embed"),
        ("knn_metric", "knn_search"),
        ("training_views", "crop_augment"),
        ("_build_model", "model_build"),
        ("_save_encoder", "final_outputs"),
        ("_write_rows_log_curve", "final_outputs"),
    ):
        t.patch(trainer, attr, name)
    t.patch(trainer, "print", "logging")  # a module global shadows the builtin inside the trainer
    t.patch(AudioCache, "batch", "cache_read")
    t.patch(InputContract, "apply", "contract")
    t.patch(LabelBalancedBatchSampler, "__iter__", "sampling", make=t.sampler_iter)
    t.patch(LabelBalancedBatchSampler, "set_epoch", "epoch_start")
    t.patch(CandidateResume, "save", "checkpoint")
    t.patch(trainer.TuneModel, "forward", "forward")
    t.patch(torch.Tensor, "backward", "backward")
    t.patch(torch.nn.utils, "clip_grad_norm_", "grad_clip")
    t.patch(torch.optim.AdamW, "step", "optimizer_step")
    supcon = losses.LOSSES["supcon"]
    losses.LOSSES["supcon"] = dataclasses.replace(supcon, compute=t.timed(supcon.compute, "loss"))
    try:
        yield
    finally:
        losses.LOSSES["supcon"] = supcon
        t.restore()


# Categories of one epoch's time: paths of wrapped calls (inclusive seconds) added (+1) or taken out (-1).
CATEGORIES = {
    "data_loading": {"sampling": 1, "train_epoch/cache_read": 1, "train_epoch/contract": 1,
                     "train_epoch/crop_augment": 1},
    "forward_backward_step": {"train_epoch": 1, "train_epoch/cache_read": -1, "train_epoch/contract": -1,
                              "train_epoch/crop_augment": -1},
    "val_knn": {"val_eval": 1},
    "checkpointing": {"checkpoint": 1},
    "logging": {"logging": 1},
}  # fmt: skip
DETAIL = ("train_epoch/forward", "train_epoch/loss", "train_epoch/backward", "train_epoch/grad_clip",
          "train_epoch/optimizer_step", "val_eval/embed", "val_eval/knn_search", "val_eval/loss")  # fmt: skip


def epoch_split(timers: Timers) -> tuple[list[dict], dict]:
    """Per epoch {category: seconds} (plus "total", "other" and the detail paths), and the one-off costs."""
    starts = sorted(start for path, start, _ in timers.events if path == "epoch_start")
    saves = sorted(end for path, _, end in timers.events if path == "checkpoint")
    epochs = []
    for start, end in zip(starts, saves, strict=True):
        inside = defaultdict(float)
        for path, s, e in timers.events:
            if start <= s < end:
                inside[path] += e - s
        row = {name: sum(sign * inside[p] for p, sign in parts.items()) for name, parts in CATEGORIES.items()}
        row["total"] = end - start
        row["other"] = row["total"] - sum(row[name] for name in CATEGORIES)
        row |= {path: inside[path] for path in DETAIL}
        epochs.append(row)
    first = starts[0] if starts else float("inf")
    one_off = defaultdict(float)
    for path, s, e in timers.events:
        if path in ("model_build", "final_outputs") or (path == "val_eval" and s < first):
            one_off["pretrained_val" if path == "val_eval" else path] += e - s
    return epochs, dict(one_off)


# ---------------------------------------------------------------------------------------------- sides


def sections(args, work: Path) -> tuple[dict, dict, dict]:
    if args.backbone == "hf":
        backbone = backbone_config(**save_tiny_model("wav2vec2_layer", work / "tiny"), pooling="mean")
    else:
        backbone = backbone_config("resemblyzer")
    cfg = tune_config(epochs=args.epochs, lr_candidates=[3e-4], patience=args.epochs + 1,
                      classes_per_batch=args.classes_per_batch, clips_per_class=args.clips_per_class)  # fmt: skip
    return backbone, method("supcon"), cfg


RUN = Run("bench", "tiny", "supcon", fold=0, seed=0)


def run_trainer(cache_dir, vocab, backbone, method_cfg, cfg, out_dir: Path) -> dict:
    """One timed ``tune`` call with the timers in place."""
    timers = Timers()
    with instrumented(timers), contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        trainer.tune(cache_dir, vocab, backbone, method_cfg, cfg, run=RUN, out_dir=out_dir, val_offset=1,
                     device="cpu")  # fmt: skip
        wall = time.perf_counter() - start
    epochs, one_off = epoch_split(timers)
    log = pd.read_csv(out_dir / "log.csv")
    train_pass = [row["train_epoch"] for row in _train_pass(timers)]
    return {"wall": wall, "epochs": epochs, "one_off": one_off, "train_pass": train_pass,
            "log_seconds": log["seconds"].tolist(), "train_loss": log["train_loss"].tolist()}  # fmt: skip


def _train_pass(timers: Timers) -> list[dict]:
    return [{"train_epoch": e - s} for path, s, e in timers.events if path == "train_epoch"]


def run_bare(
    cache_dir, vocab, backbone, method_cfg, cfg_dict, epochs: int
) -> tuple[list[float], list[float]]:
    """The bare loop: (seconds per epoch, mean train loss per epoch). Set-up with the trainer's helpers, untimed."""
    cfg = trainer.TuneConfig.from_dict(cfg_dict)
    resolved = trainer.resolve(method_cfg)
    device = torch.device("cpu")
    data = trainer._load_data(cache_dir, vocab, RUN.fold, 1)
    model = trainer._build_model(trainer._build_encoder, backbone, cfg, resolved.loss.heads, data, RUN.seed,
                                 device, 0)  # fmt: skip
    sampler, _ = trainer._samplers(data, cfg, resolved.training["sampler"], RUN.seed, 0)
    optimizer, scheduler = trainer._optimiser(
        model, cfg, cfg.lr_candidates[0], batches_per_epoch=len(sampler)
    )
    params = resolved.params
    trainable = [p for p in model.parameters() if p.requires_grad]
    contract, rate = model.encoder.contract, data.cache.sample_rate
    times, mean_losses = [], []
    with trainer._pinned_torch(cfg.threads, deterministic=True):
        model.train()
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            # the trainer's per-epoch seeding, so both sides draw the same crops, dropout and batches
            seed = trainer.derived_seed(RUN.seed, 0, trainer.TRAIN_STEP, epoch)
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            views = torch.Generator().manual_seed(trainer.derived_seed(RUN.seed, 0, trainer.VIEWS, epoch))
            sampler.set_epoch(epoch)
            step_losses = []
            for positions in list(sampler):
                waveforms, lengths = data.cache.batch(data.train_idx[positions])
                waveforms, lengths = contract.apply(waveforms, lengths, rate)
                waveforms, lengths = trainer.training_views(waveforms, lengths, cfg, rate, views, 1)
                labels = data.train_labels[positions]
                with model.encoder.contract_applied_by_caller():
                    outputs = model(waveforms, lengths)
                loss = resolved.loss.compute(outputs, labels, multilabel=False, **params)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step_losses.append(loss.item())
            times.append(time.perf_counter() - start)
            mean_losses.append(float(np.mean(step_losses)))
    return times, mean_losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clips", type=int, default=800)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--min-s", type=float, default=1.0)
    parser.add_argument("--max-s", type=float, default=3.0)
    parser.add_argument("--classes-per-batch", type=int, default=8)
    parser.add_argument("--clips-per-class", type=int, default=4)
    parser.add_argument("--backbone", choices=("hf", "resemblyzer"), default="hf")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the per-run "Loading weights" bars
    with tempfile.TemporaryDirectory(prefix="bench_tune_") as tmp:
        work = Path(tmp)
        cache_dir, vocab = write_cache(work, args.clips, args.classes, args.min_s, args.max_s, args.seed)
        backbone, method_cfg, cfg = sections(args, work)
        run_bare(cache_dir, vocab, backbone, method_cfg, cfg, 1)  # warm-up, untimed
        bare_runs, trainer_runs = [], []
        for i in tqdm(range(args.runs), desc="runs", disable=None):
            bare_runs.append(run_bare(cache_dir, vocab, backbone, method_cfg, cfg, args.epochs))
            trainer_runs.append(run_trainer(cache_dir, vocab, backbone, method_cfg, cfg, work / f"run{i}"))
        index = AudioCache(cache_dir).index
        n_train = int((index["split"] == "train").sum())
    steps = -(-n_train // (min(args.classes, args.classes_per_batch) * args.clips_per_class))
    steps_per_run = steps * args.epochs

    bare_step = [sum(times) / steps_per_run for times, _ in bare_runs]
    train_step = [sum(r["train_pass"]) / steps_per_run for r in trainer_runs]
    epoch_step = [sum(e["total"] for e in r["epochs"]) / steps_per_run for r in trainer_runs]
    run_step = [r["wall"] / steps_per_run for r in trainer_runs]
    med = statistics.median
    ratio = med(bare_step) / med(train_step)
    ratio_epoch, ratio_run = med(bare_step) / med(epoch_step), med(bare_step) / med(run_step)
    loss_diff = max(
        float(np.max(np.abs(np.array(losses_) - np.array(r["train_loss"]))))
        for (_, losses_), r in zip(bare_runs, trainer_runs, strict=True)
    )
    keys = list(trainer_runs[0]["epochs"][0])
    split = {k: med([float(np.mean([e[k] for e in r["epochs"]])) for r in trainer_runs]) for k in keys}
    one_off = {k: med([r["one_off"].get(k, 0.0) for r in trainer_runs]) for k in trainer_runs[0]["one_off"]}
    log_seconds = med([float(np.mean(r["log_seconds"])) for r in trainer_runs])

    print(f"bare loop:            {med(bare_step) * 1e3:8.1f} ms per optimiser step")
    print(
        f"trainer training pass:{med(train_step) * 1e3:8.1f} ms per step -> ratio {ratio:.3f} (goal >= {GOAL})"
    )
    print(f"trainer whole epoch:  {med(epoch_step) * 1e3:8.1f} ms per step -> ratio {ratio_epoch:.3f}")
    print(f"trainer tune() call:  {med(run_step) * 1e3:8.1f} ms per step -> ratio {ratio_run:.3f}")
    print(f"train losses, bare vs trainer log.csv: max |diff| {loss_diff:.2e}")
    print("one trainer epoch (s): " + ", ".join(f"{k} {v:.3f}" for k, v in split.items()))
    print("one-off (s): " + ", ".join(f"{k} {v:.3f}" for k, v in one_off.items()))
    write_result(
        "tune_overhead",
        {
            "task": (
                f"SupCon, {args.backbone} backbone, {args.clips} clips ({n_train} train) of {args.min_s:g}-"
                f"{args.max_s:g} s, {args.classes} classes, batches "
                f"{min(args.classes, args.classes_per_batch)} x {args.clips_per_class}, {args.epochs} epochs, CPU, 1 thread"
            ),
            "backbone": args.backbone,
            "clips": args.clips,
            "train_clips": n_train,
            "epochs": args.epochs,
            "steps_per_epoch": steps,
            "runs": args.runs,
            "bare_s_per_step": summary(bare_step),
            "trainer_train_s_per_step": summary(train_step),
            "trainer_epoch_s_per_step": summary(epoch_step),
            "trainer_run_s_per_step": summary(run_step),
            "ratio": ratio,
            "ratio_epoch": ratio_epoch,
            "ratio_run": ratio_run,
            "goal": GOAL,
            "met": bool(ratio >= GOAL),
            "epoch_split_s": split,
            "epoch_split_share": {k: split[k] / split["total"] for k in (*CATEGORIES, "other")},
            "one_off_s": one_off,
            "log_csv_seconds_per_epoch": log_seconds,
            "loss_max_abs_diff": loss_diff,
        },
    )


if __name__ == "__main__":
    main()
