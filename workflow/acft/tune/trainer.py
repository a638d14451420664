"""Contrastive tuning and vanilla fine-tuning of one backbone for one (method, fold, seed).

The story of ``tune``: data (this fold's train and val roles; the test role stays on disk) -> for every
learning-rate candidate: model (a fresh pretrained encoder plus the loss's heads), optimiser (AdamW, warm-up +
cosine), loop (the method's batches: uniformly shuffled for ce/bce, label-balanced for the contrastive losses;
per-epoch val loss, val kNN and val head score; early stopping on the method's selection metric), checkpoint
(resume state every epoch, best weights on improvement) -> the candidate with the best val selection metric
wins -> outputs (encoder weights without heads, meta.json, log.csv, curve.png, and head.parquet: the tuning
choices as result rows, probe "tune", plus for methods with a classifier the fine-tuned model's own test
metrics, probe "head").

Outputs in ``out_dir``: model.safetensors (encoder state_dict only: heads dropped), meta.json (the method's
sampler, selection metric and views, the budget, each candidate's pretrained val scores), log.csv (one row per
candidate x trained epoch), curve.png, head.parquet (result rows: probe "tune" with the chosen lr and epoch;
probe "head" for methods with a classifier: the best checkpoint's own classifier on the test role, read only
now) and, for hf backbones, ``pretrained/`` from ``encoder.save_pretrained``. Resume state lives in
``out_dir/resume/`` and is removed once the run completes; rerunning with the same arguments after a kill
resumes there.

Budget: every method and sampler gets ceil(N_train / B) batches of B = P x m clips per epoch (P capped at the
number of label groups), i.e. about one pass of the train clips, and the same lr candidates.
"""

from __future__ import annotations

import contextlib
import functools
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..data.cache import INDEX, AudioCache
from ..data.splits import roles_for_fold
from ..device import autocast, embed_cache_clips, select_device
from ..identity import Run
from ..io import atomic_dir, write_csv, write_json, write_parquet
from ..labels import encode_multi_hot, encode_single, is_multilabel, read_vocab
from ..methods import training_settings
from ..probes.knn import predict_single, score_multilabel
from ..probes.knn_search import nearest_neighbours
from ..probes.metrics import accuracy, mean_average_precision, multilabel_metrics, single_label_metrics
from ..provenance import config_hash, file_sha256, git_commit
from ..report.plots import plot_tune_curves
from ..results import make_rows
from .augment import AugmentConfig, augment, random_crop
from .checkpoint import CandidateResume, load_weights, open_resume_dir, save_weights
from .losses import Loss, check_label_kind, resolve_method
from .samplers import PositiveStats, make_batch_sampler

EVAL_BATCH_SIZE = 64  # clips per inference batch of the embedding passes (length-bucketed)
KNN_QUERY_CHUNK = 4096  # similarity blocks of the val kNN search hold at most this^2 pairs (bounded memory)
VAL_KNN_TEMPERATURE = 0.07  # tau of the val kNN vote: the weighted kNN probe's usual tau (DINO's 0.07)

# Purposes of derived seeds: every random stream is a function of (seed, candidate, purpose, epoch).
HEAD_INIT, TRAIN_STEP, VIEWS, TRAIN_BATCHES, VAL_BATCHES = range(5)


@dataclass(frozen=True)
class TuneConfig:
    """The config's ``tune`` section: one recipe and budget for every tuned method.

    Defaults, valid ranges and the reason for each default live in the config schema
    (``workflow/schemas/config.schema.yaml``, section ``tune``), which fills and checks them at workflow start.
    """

    epochs: int  # epoch budget per lr candidate, the same for every method (fair baselines)
    lr_candidates: tuple[float, ...]  # tried for every method; the best on val is kept
    weight_decay: float  # AdamW weight decay, applied to weight matrices only
    head_lr_scale: float  # lr multiplier of the randomly initialised heads
    warmup_epochs: float  # linear warm-up before the cosine decay
    grad_clip: float | None  # gradient-norm cap (None = off)
    grad_accum: int  # batches per optimiser step; each micro-batch stays its own contrastive batch
    classes_per_batch: int  # P labels per batch (also sets B = P x m of the shuffled batches)
    clips_per_class: int  # m clips per label, so every anchor has m - 1 same-label positives
    max_clip_s: float | None  # random crop of training clips (None = full clip)
    patience: int  # epochs without a gain of the val selection metric before early stopping
    val_knn_k: int  # neighbours of the per-epoch val kNN metric
    projection_dim: int  # SupCon projection size
    projection_hidden: int | None  # hidden width of the projection MLP (None = embedding size)
    augment: AugmentConfig  # waveform augmentation of the training views
    amp: str  # "auto" = bf16 autocast on CUDA only (CPU autocast is slow and breaks bit-equality); "off"
    threads: int  # torch threads, pinned so CPU runs are reproducible and parallel jobs do not oversubscribe
    # Not a config key: encoder parameter-name prefixes kept frozen by tools and tests (added to the backbone's).
    freeze: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict) -> TuneConfig:
        """Build from the validated ``tune`` section; a missing or unknown key raises ValueError naming it."""
        known = [f.name for f in fields(cls)]
        unknown, missing = sorted(set(d) - set(known)), sorted(set(known) - set(d) - {"freeze"})
        if unknown or missing:
            raise ValueError(
                f"tune config: unknown key(s) {unknown}, missing key(s) {missing} (acft.plan.validate_config "
                "fills every default from the schema)"
            )
        d = dict(d, lr_candidates=tuple(float(lr) for lr in d["lr_candidates"]))
        d["augment"] = AugmentConfig.from_dict(d["augment"])
        if "freeze" in d:
            d["freeze"] = tuple(d["freeze"])
        return cls(**d)

    def to_dict(self) -> dict:
        """JSON-ready form (tuples as lists), as stored in meta.json."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class Method(NamedTuple):
    """A tuned method resolved: its loss and that loss's hyper-parameters, and its training settings."""

    name: str  # the loss name
    loss: Loss
    params: dict  # the loss's hyper-parameters
    training: dict  # {"sampler", "select_on", "views"} (acft.methods)


def resolve(method_cfg: dict) -> Method:
    """The method's loss and training settings (``acft.methods.training_settings``)."""
    name, loss, params = resolve_method(method_cfg)
    return Method(name, loss, params, training_settings(method_cfg))


class ProjectionHead(nn.Module):
    """2-layer MLP to an L2-normalised projection (Khosla et al. 2020); dropped after tuning."""

    def __init__(self, embed_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, embedding: Tensor) -> Tensor:
        """[B, D] -> [B, out_dim] unit vectors."""
        return F.normalize(self.net(embedding), dim=-1)


class TuneModel(nn.Module):
    """Encoder plus the heads a loss needs; only ``encoder`` survives tuning."""

    def __init__(self, encoder: nn.Module, heads: tuple[str, ...], n_classes: int, cfg: TuneConfig):
        super().__init__()
        self.encoder = encoder
        dim = encoder.embed_dim
        self.projection = (
            ProjectionHead(dim, cfg.projection_hidden or dim, cfg.projection_dim)
            if "projection" in heads
            else None
        )
        # The classifier reads layer-normalised embeddings, as the linear probe reads standardised ones:
        # backbones differ in embedding scale by orders of magnitude (resemblyzer's unit-norm frames give
        # ~0.06 per dimension), and a head on raw unit-norm inputs barely moves in a short fine-tuning run.
        self.classifier = (
            nn.Sequential(nn.LayerNorm(dim, elementwise_affine=False), nn.Linear(dim, n_classes))
            if "classifier" in heads
            else None
        )

    def heads(self, embedding: Tensor) -> dict[str, Tensor]:
        """[B, D] embeddings -> {"embedding", "projection"?, "logits"?}."""
        outputs = {"embedding": embedding}
        if self.projection is not None:
            outputs["projection"] = self.projection(embedding)
        if self.classifier is not None:
            outputs["logits"] = self.classifier(embedding)
        return outputs

    def forward(self, waveforms: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """[B, N] waveforms + [B] lengths -> the heads' outputs."""
        return self.heads(self.encoder(waveforms, lengths))


@dataclass
class TuneData:
    """The clips the tuner may touch: train and val roles of one fold, with [N, C] multi-hot labels."""

    cache: AudioCache
    train_idx: np.ndarray
    val_idx: np.ndarray
    train_labels: Tensor
    val_labels: Tensor
    multilabel: bool
    vocab: list[str]
    n_test: int  # clips of the test role: counted, never read during training


def derived_seed(seed: int, candidate: int, purpose: int, epoch: int = 0) -> int:
    """A 63-bit seed for one random stream, so resumed epochs replay exactly."""
    return int(np.random.SeedSequence([seed, candidate, purpose, epoch]).generate_state(2, np.uint64)[0] >> 1)


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier per optimiser step: linear warm-up to 1, then cosine decay towards 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def label_matrix(label_lists, vocab: list[str], multilabel: bool) -> np.ndarray:
    """[N, C] float32 multi-hot labels (one-hot for single-label data)."""
    if multilabel:
        return encode_multi_hot(label_lists, vocab)
    return np.eye(len(vocab), dtype=np.float32)[encode_single(label_lists, vocab)]


def embed_clips(
    encoder: nn.Module, cache: AudioCache, indices: np.ndarray, device, amp: str, desc: str
) -> Tensor:
    """Embed cache clips in inference mode, in batches bucketed by length (``acft.device.embed_cache_clips``).

    Returns:
        [len(indices), D] float32 CPU embeddings in the order of ``indices``.
    """
    embeddings = embed_cache_clips(
        lambda waveforms, lengths: {"embedding": encoder(waveforms, lengths)}, cache, indices,
        batch_size=EVAL_BATCH_SIZE, device=device, amp=amp == "auto", desc=desc,
    )  # fmt: skip
    return torch.from_numpy(embeddings["embedding"])


def knn_metric(
    train_emb: Tensor, train_labels: Tensor, query_emb: Tensor, query_labels: Tensor, k: int, multilabel: bool
) -> float:
    """Val selection metric: the kNN probe's similarity-weighted vote (``acft.probes.knn``), train clips as bank.

    The weighted vote (DINO's exp(s / tau)) rather than the majority vote: with many classes and few clips per
    class most majority votes at k = 5 are ties, settled by class index, which makes epoch selection noisy.

    Args:
        train_emb: [Nt, D]; train_labels: [Nt, C] multi-hot; query_emb: [Nq, D]; query_labels: [Nq, C].
        k: neighbours (capped at Nt).

    Returns:
        single-label: accuracy of the weighted vote; multi-label: mAP of the neighbours' weighted label
        frequencies over classes with a query positive.
    """
    k = min(k, len(train_emb))
    neighbours = nearest_neighbours(train_emb.numpy(), query_emb.numpy(), [k], chunk_size=KNN_QUERY_CHUNK)
    if not multilabel:
        train_classes, n_classes = train_labels.argmax(dim=1).numpy(), train_labels.shape[1]
        predicted = predict_single(
            neighbours, k, train_classes, n_classes, weighted=True, temperature=VAL_KNN_TEMPERATURE
        )
        return accuracy(query_labels.argmax(dim=1).numpy(), predicted)
    scores = score_multilabel(
        neighbours, k, train_labels.numpy(), weighted=True, temperature=VAL_KNN_TEMPERATURE
    )
    return mean_average_precision(query_labels.numpy(), scores)[0]


def head_val_metric(logits: Tensor, labels: Tensor, multilabel: bool) -> float:
    """Val selection metric of a classifier head: accuracy, or mAP over classes with a val positive.

    Args:
        logits: [N, C]; labels: [N, C] multi-hot (one-hot for single-label data).
    """
    if not multilabel:
        return accuracy(labels.argmax(dim=1).numpy(), logits.argmax(dim=1).numpy())
    return mean_average_precision(labels.numpy(), torch.sigmoid(logits).double().numpy())[0]


def head_metrics(
    logits: Tensor,
    labels: Tensor,
    multilabel: bool,
    val_logits: Tensor | None = None,
    val_labels: Tensor | None = None,
) -> list[dict]:
    """The fine-tuned classifier's own test metrics, defined exactly as the probes' (acft.probes.metrics).

    Args:
        logits: [N, C] test logits; labels: [N, C] multi-hot (one-hot for single-label data).
        val_logits, val_labels: [N_val, C]; multi-label only: the per-class decision thresholds of macro-F1
            are chosen on val, as the probes choose theirs.

    Returns:
        records {"metric", "value"}: accuracy + macro_f1 over the classes in the truth or the predictions
        (single-label), or map, macro_f1, n_classes_without_test_positive, n_classes_without_val_positive
        (multi-label).
    """
    if not multilabel:
        metrics = single_label_metrics(labels.argmax(dim=1).numpy(), logits.argmax(dim=1).numpy())
    else:

        def scores(x):
            return None if x is None else torch.sigmoid(x).double().numpy()

        val_true = None if val_labels is None else val_labels.numpy()
        metrics = multilabel_metrics(val_true, scores(val_logits), labels.numpy(), scores(logits))
    return [{"metric": name, "value": float(value)} for name, value in metrics.items()]


def _param_groups(model: nn.Module, weight_decay: float, lr: float, head_lr_scale: float) -> list[dict]:
    # Decay weight matrices only; decaying biases and norm gains just shrinks them towards zero.
    # Heads (classifier, projection) get lr x head_lr_scale, the same rule for every method.
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    groups = []
    for is_head, scale in ((False, 1.0), (True, head_lr_scale)):
        trainable = [
            p for p in model.parameters() if p.requires_grad and (id(p) not in encoder_ids) == is_head
        ]
        groups += [
            {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay, "lr": lr * scale},
            {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0, "lr": lr * scale},
        ]
    return [group for group in groups if group["params"]]


def _load_data(cache_dir, vocab_path, fold: int, val_offset: int) -> TuneData:
    cache = AudioCache(cache_dir)
    vocab = read_vocab(vocab_path)
    label_lists = cache.index["labels"]
    unknown = sorted({label for labels in label_lists for label in labels} - set(vocab))
    if unknown:
        raise ValueError(
            f"labels {unknown[:10]} of cache {cache_dir} are missing from vocabulary {vocab_path}"
        )
    multilabel = is_multilabel(label_lists)  # a property of the dataset, so every clip's label list counts
    roles = roles_for_fold(cache.index, fold, val_offset)
    train_idx, val_idx = np.flatnonzero(roles == "train"), np.flatnonzero(roles == "val")
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(
            f"fold {fold} of cache {cache_dir} has {len(train_idx)} train and {len(val_idx)} val clips; need both"
        )
    # Only the train and val roles are encoded; no test waveform is read here.
    train_labels, val_labels = (
        torch.from_numpy(label_matrix(label_lists.iloc[idx].tolist(), vocab, multilabel))
        for idx in (train_idx, val_idx)
    )
    n_test = int((roles == "test").sum())
    return TuneData(cache, train_idx, val_idx, train_labels, val_labels, multilabel, vocab, n_test)


def _evaluate(model: TuneModel, data: TuneData, loss_fn, val_batches, cfg: TuneConfig, device) -> dict:
    """{"val_loss", "val_knn", "val_head"} from one embedding pass over the train and val clips.

    ``val_head`` (the classifier's val accuracy, or mAP) is None for a model without a classifier.
    """
    model.eval()
    train_emb = embed_clips(model.encoder, data.cache, data.train_idx, device, cfg.amp, "embed train")
    val_emb = embed_clips(model.encoder, data.cache, data.val_idx, device, cfg.amp, "embed val")
    with torch.inference_mode():
        outputs = {name: out.float().cpu() for name, out in model.heads(val_emb.to(device)).items()}
        # The same fixed val batches every epoch, so val losses are comparable across epochs.
        losses = [loss_fn({n: o[b] for n, o in outputs.items()}, data.val_labels[b]) for b in val_batches]
    model.train()
    knn = knn_metric(train_emb, data.train_labels, val_emb, data.val_labels, cfg.val_knn_k, data.multilabel)
    head = (
        head_val_metric(outputs["logits"], data.val_labels, data.multilabel) if "logits" in outputs else None
    )
    return {"val_loss": float(torch.stack(losses).mean()), "val_knn": knn, "val_head": head}


def training_views(
    waveforms: Tensor, lengths: Tensor, cfg: TuneConfig, sample_rate: int, generator, n_views: int
) -> tuple[Tensor, Tensor]:
    """``n_views`` independently cropped and augmented views of a batch, stacked view after view.

    Args:
        waveforms: [B, N] zero-padded clips; lengths: [B].

    Returns:
        ([n_views * B, N'] views, [n_views * B] lengths); row v * B + i is view v of clip i. With one view
        the random draws are exactly those of the single-view trainer.
    """
    views = []
    for _ in range(n_views):
        view, view_lengths = waveforms, lengths
        if cfg.max_clip_s is not None:
            view, view_lengths = random_crop(
                view, view_lengths, round(cfg.max_clip_s * sample_rate), generator
            )
        views.append(augment(view, view_lengths, cfg.augment, sample_rate, generator))
    if n_views == 1:
        return views[0]
    width = max(view.shape[1] for view, _ in views)
    stacked = torch.cat([F.pad(view, (0, width - view.shape[1])) for view, _ in views])
    return stacked, torch.cat([view_lengths for _, view_lengths in views])


def _train_candidate(
    data: TuneData,
    cfg: TuneConfig,
    method: Method,
    build_model: Callable[[int], TuneModel],
    candidate: int,
    lr: float,
    seed: int,
    device: torch.device,
    resume: CandidateResume,
) -> dict:
    """Train one learning-rate candidate (resuming if a state exists); returns its summary with log rows."""

    def loss_fn(outputs, labels):
        return method.loss.compute(outputs, labels, multilabel=data.multilabel, **method.params)

    # ---- model ----
    model = build_model(candidate)

    # ---- optimiser: AdamW, linear warm-up then cosine decay over the whole epoch budget ----
    sampler, val_batches = _samplers(data, cfg, method.training["sampler"], seed, candidate)
    optimizer, scheduler = _optimiser(model, cfg, lr, batches_per_epoch=len(sampler))
    resumable = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "sampler": sampler}

    # ---- checkpoint: resume from the last finished epoch, else evaluate the pretrained model first ----
    progress = _resume(resume, resumable, lr)
    if progress is None:
        pretrained = _evaluate(model, data, loss_fn, val_batches, cfg, device)
        progress = {"epoch": 0, "log": [], "pretrained": pretrained, "best_val": float("-inf")}
        progress |= {"best_epoch": None, "bad_epochs": 0}
        print(f"[tune] lr {lr:g}: pretrained {_scores_text(pretrained)}")

    # ---- loop: train an epoch, score it on val, stop early when the selection metric stalls ----
    for epoch in range(progress["epoch"] + 1, cfg.epochs + 1):
        if progress["bad_epochs"] >= cfg.patience:
            break
        started = time.perf_counter()
        sampler.set_epoch(epoch)
        train = _train_epoch(model, data, cfg, loss_fn, list(sampler), optimizer, scheduler, device,
                             (seed, candidate, epoch), method.training["views"], f"{method.name} lr {lr:g}")  # fmt: skip
        scores = _evaluate(model, data, loss_fn, val_batches, cfg, device)
        selected = scores[f"val_{method.training['select_on']}"]
        row = {"lr_candidate": lr, "epoch": epoch, **train, **scores, "val_metric": selected}
        row |= {"lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - started}
        improved = _record_epoch(progress, row)
        print(
            f"[tune] lr {lr:g} epoch {epoch}: train loss {row['train_loss']:.4f}, {_scores_text(scores)}"
            f"{' (best)' if improved else ''}, positives {row['positive_share']:.2f}, {row['seconds']:.1f} s"
        )

        # ---- checkpoint: best weights (on improvement), then the resume state that names them ----
        state = {**progress, **{key: part.state_dict() for key, part in resumable.items()}}
        state["rng"] = torch.get_rng_state()
        sidecar = {"lr": lr, "epoch": epoch, "metrics": row, "method": {"loss": method.name, **method.params,
                   **method.training}, "tune": cfg.to_dict()}  # fmt: skip
        resume.save(state, model.state_dict() if improved else None, sidecar if improved else None)

    log = progress["log"]
    summary = {"candidate": candidate, "lr": lr, "best_epoch": progress["best_epoch"]}
    summary |= {"best_val": progress["best_val"], "epochs_run": log[-1]["epoch"]}
    summary |= {
        "stopped_early": log[-1]["epoch"] < cfg.epochs,
        "pretrained": progress["pretrained"],
        "log": log,
    }
    resume.mark_done(summary)
    return summary


def _optimiser(model: nn.Module, cfg: TuneConfig, lr: float, batches_per_epoch: int):
    """AdamW over ``_param_groups`` and its LambdaLR: linear warm-up, then cosine decay over every epoch."""
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay, lr, cfg.head_lr_scale), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch)
    )
    return optimizer, scheduler


PROGRESS_KEYS = ("epoch", "log", "pretrained", "best_val", "best_epoch", "bad_epochs")


def _resume(resume: CandidateResume, resumable: dict, lr: float) -> dict | None:
    """Restore the last finished epoch's state into ``resumable``; its progress dict, or None to start afresh."""
    state = resume.load()
    if state is None:
        return None
    for key, part in resumable.items():
        part.load_state_dict(state[key])
    torch.set_rng_state(state["rng"])  # each epoch also reseeds, so a resumed epoch never depends on history
    progress = {key: state[key] for key in PROGRESS_KEYS}
    print(
        f"[tune] lr {lr:g}: resuming at epoch {progress['epoch'] + 1} (best so far: epoch {progress['best_epoch']})"
    )
    return progress


def _record_epoch(progress: dict, row: dict) -> bool:
    """Append the epoch's log row and update best and patience counters; True when the epoch improved."""
    progress["epoch"] = row["epoch"]
    progress["log"].append(row)
    improved = row["val_metric"] > progress["best_val"]
    if improved:
        progress.update(best_val=row["val_metric"], best_epoch=row["epoch"], bad_epochs=0)
    else:
        progress["bad_epochs"] += 1
    return improved


def _samplers(data: TuneData, cfg: TuneConfig, kind: str, seed: int, candidate: int):
    """The training batch sampler and the fixed val batches (same kind, so val losses match train losses)."""
    sampler = make_batch_sampler(
        kind, data.train_labels.numpy(), cfg.classes_per_batch, cfg.clips_per_class,
        derived_seed(seed, candidate, TRAIN_BATCHES),
    )  # fmt: skip
    val_sampler = make_batch_sampler(
        kind, data.val_labels.numpy(), cfg.classes_per_batch, cfg.clips_per_class,
        derived_seed(seed, candidate, VAL_BATCHES),
    )  # fmt: skip
    return sampler, [torch.from_numpy(batch) for batch in val_sampler]


def _train_epoch(
    model, data, cfg, loss_fn, batches, optimizer, scheduler, device, key, n_views, desc
) -> dict:
    """One pass over ``batches``; returns the epoch's train loss, positive statistics and clip counts."""
    seed, candidate, epoch = key
    torch.manual_seed(derived_seed(seed, candidate, TRAIN_STEP, epoch))  # in-model randomness (dropout)
    # transformers' wav2vec2-family SpecAugment and LayerDrop draw from numpy's global generator
    np.random.seed(derived_seed(seed, candidate, TRAIN_STEP, epoch) % 2**32)
    views = torch.Generator().manual_seed(derived_seed(seed, candidate, VIEWS, epoch))
    trainable = [p for p in model.parameters() if p.requires_grad]
    contract = model.encoder.contract
    stats, train_losses = PositiveStats(), []
    model.train()
    optimizer.zero_grad(set_to_none=True)
    for step, positions in enumerate(tqdm(batches, desc=f"{desc} epoch {epoch}", disable=None, leave=False)):
        waveforms, lengths = data.cache.batch(data.train_idx[positions])
        # The backbone's input contract on whole clips, then crops: resemblyzer levels a whole utterance before
        # cutting partials from it (a quiet crop keeps its level relative to the clip); the gain augmentation
        # then stays in force instead of being levelled away.
        waveforms, lengths = contract.apply(waveforms, lengths, data.cache.sample_rate)
        waveforms, lengths = training_views(waveforms, lengths, cfg, data.cache.sample_rate, views, n_views)
        labels = data.train_labels[positions].repeat(n_views, 1)  # [n_views * B, C], view after view
        with autocast(device, cfg.amp == "auto"), model.encoder.contract_applied_by_caller():
            outputs = model(waveforms.to(device), lengths.to(device))
        loss = loss_fn({n: o.float() for n, o in outputs.items()}, labels.to(device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss is {loss.item()} at epoch {epoch}, batch {step}")
        group_start = step - step % cfg.grad_accum
        group_size = min(cfg.grad_accum, len(batches) - group_start)
        (loss / group_size).backward()
        stats.update(labels)
        train_losses.append(loss.item())
        if step + 1 == group_start + group_size:
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    seen = np.concatenate(batches) if batches else np.empty(0, dtype=np.int64)
    return {
        "train_loss": float(np.mean(train_losses)),
        **stats.as_dict(),
        "clips_seen": int(len(seen)),  # clip draws this epoch (the budget: about N_train)
        "unique_clips": int(len(np.unique(seen))),  # distinct train clips among them (all for shuffle)
    }


def _scores_text(scores: dict) -> str:
    text = f"val loss {scores['val_loss']:.4f}, val kNN {scores['val_knn']:.4f}"
    return text if scores["val_head"] is None else f"{text}, val head {scores['val_head']:.4f}"


def tune(
    cache_dir,
    vocab_path,
    backbone_cfg: dict,
    method_cfg: dict,
    tune_cfg: dict | TuneConfig,
    *,
    run: Run,
    out_dir,
    val_offset: int,
    lineage_hash: str = "",
    device: str = "auto",
    encoder_factory: Callable[[dict], nn.Module] | None = None,
) -> dict:
    """Tune one backbone with one method on one fold's train role, selecting lr and epoch on its val role.

    Writes the run's outputs into ``out_dir`` (module docstring); resumes there after a kill.

    Args:
        cache_dir, vocab_path: the audio cache (``.../sr<rate>``, at the encoder's rate) and label vocabulary.
        backbone_cfg, method_cfg, tune_cfg: config sections with every key filled: a ``backbones`` entry (its
            ``freeze`` prefixes frozen), ``acft.plan.method_config``'s method, ``tune`` (or a ``TuneConfig``).
        run: the grid cell: its ``fold`` is the evaluation round (its test role never reaches training), its
            ``seed`` the tuning seed (equal CPU runs give bit-identical weights); it names the result rows.
        val_offset: k-fold val fold offset (``acft.data.splits``).
        out_dir: run directory. device: "auto" (CUDA if present), "cpu" or "cuda[:i]".
        lineage_hash: the rows' ``config_hash`` (``acft.plan.lineage``; default: the run's fingerprint, the hash
            of everything this function reads, which also keys resuming).
        encoder_factory: builds the encoder from ``backbone_cfg`` (default ``acft.models.build_encoder``).

    Returns:
        the meta dict written to meta.json.
    """
    cfg = tune_cfg if isinstance(tune_cfg, TuneConfig) else TuneConfig.from_dict(tune_cfg)
    method = resolve(method_cfg)
    encoder_factory = encoder_factory or _build_encoder
    out_dir, run_device = Path(out_dir), select_device(device)
    fold, seed = run.fold, run.seed
    with _pinned_torch(cfg.threads, deterministic=run_device.type == "cpu"):
        # ---- data: this fold's train and val roles; the test role stays on disk until the head evaluation ----
        data = _load_data(cache_dir, vocab_path, fold, val_offset)
        _check_data(data, method.name, method.loss, f"fold {fold} of {cache_dir}")
        fingerprint = config_hash(
            {"backbone": backbone_cfg, "method": method_cfg, "tune": cfg.to_dict(), "fold": fold, "seed": seed,
             "val_offset": val_offset, "cache_index": file_sha256(Path(cache_dir) / INDEX), "vocab": data.vocab}
        )  # fmt: skip
        identity = {"dataset": run.dataset, "backbone": run.backbone, "method": run.method,
                    "config_hash": lineage_hash or fingerprint}  # fmt: skip

        # ---- model: a fresh pretrained encoder plus the loss's heads, rebuilt for every lr candidate ----
        build_model = functools.partial(
            _build_model, encoder_factory, backbone_cfg, cfg, method.loss.heads, data, seed, run_device
        )
        sizes = _parameter_counts(build_model(0))
        budget = _report_start(identity, fold, seed, method, cfg, run_device, sizes, data)

        # ---- optimiser and loop: every lr candidate gets the same budget; finished ones are skipped on resume ----
        resume_dir = open_resume_dir(out_dir, fingerprint)
        summaries = [
            _candidate_summary(data, cfg, method, build_model, candidate, lr, seed, run_device, resume_dir)
            for candidate, lr in enumerate(cfg.lr_candidates)
        ]
        chosen = _choose(summaries, selection=f"val_{method.training['select_on']}")

        # ---- checkpoint: the chosen candidate's best weights -> encoder (heads dropped), rows, log, curve ----
        model = build_model(chosen["candidate"])
        model.load_state_dict(load_weights(_best_path(resume_dir, chosen)))
        _save_encoder(model.eval(), backbone_cfg["family"], out_dir)
        row_identity = {**identity, "fold": fold, "tune_seed": seed, "n_train": len(data.train_idx)}
        head = _write_rows_log_curve(model, data, summaries, chosen, row_identity, (fold, val_offset), cfg,
                                     run_device, out_dir)  # fmt: skip
        meta = {"identity": identity, "fold": fold, "seed": seed, "val_offset": val_offset,
                "config": {"backbone": backbone_cfg, "method": method_cfg, "tune": cfg.to_dict()},
                "loss": {"name": method.name, **method.params}, "fingerprint": fingerprint,
                "git_commit": git_commit(), "device": str(run_device), "parameters": sizes,
                **_run_facts(data, method.training, budget, summaries, chosen),
                "head": head, "model_sha256": file_sha256(out_dir / "model.safetensors")}  # fmt: skip
        write_json(out_dir / "meta.json", meta)
        shutil.rmtree(resume_dir)
        return meta


def _build_encoder(backbone_cfg: dict) -> nn.Module:
    from ..models import build_encoder  # imported here so tests and tools can inject their own encoder

    return build_encoder(backbone_cfg)


def _save_encoder(model: TuneModel, family: str, out_dir: Path) -> None:
    """The encoder's weights without the heads, and for hf backbones a ``save_pretrained`` export."""
    save_weights(model.encoder.state_dict(), out_dir / "model.safetensors")
    if family == "hf":
        with atomic_dir(out_dir / "pretrained") as tmp:
            model.encoder.save_pretrained(tmp)


@contextlib.contextmanager
def _pinned_torch(threads: int, deterministic: bool):
    """Run with ``threads`` torch threads (and deterministic algorithms on CPU); restore both afterwards."""
    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])


def _build_model(encoder_factory, backbone_cfg, cfg, heads, data: TuneData, seed, device, candidate: int):
    """A fresh pretrained encoder (frozen prefixes applied) plus the loss's heads, seeded per candidate."""
    encoder = encoder_factory(backbone_cfg)
    if encoder.sample_rate != data.cache.sample_rate:
        raise ValueError(
            f"encoder expects {encoder.sample_rate} Hz audio, cache {data.cache.directory} holds "
            f"{data.cache.sample_rate} Hz"
        )
    prefixes = [*backbone_cfg["freeze"], *cfg.freeze]
    if prefixes:
        encoder.freeze(prefixes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(seed, candidate, HEAD_INIT))
        model = TuneModel(encoder, heads, len(data.vocab), cfg)
    return model.to(device)


def _parameter_counts(model: nn.Module) -> dict:
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def _report_start(
    identity, fold, seed, method: Method, cfg: TuneConfig, device, sizes, data: TuneData
) -> dict:
    """Print the run, resolved config, git SHA, parameter count, effective batch and data; return the budget."""
    metric_name = "map" if data.multilabel else "accuracy"
    training = method.training
    print(f"[tune] {identity['dataset']}/{identity['backbone']}/{identity['method']} fold {fold} seed {seed}")
    print(f"[tune] method: {method.name} {method.params}; tune config: {cfg.to_dict()}")
    print(
        f"[tune] git {git_commit()}; device {device}, {cfg.threads} thread(s); parameters {sizes['total']:,} "
        f"({sizes['trainable']:,} trainable); effective batch {cfg.classes_per_batch} labels x {cfg.clips_per_class} "
        f"clips x {cfg.grad_accum} accumulation = {cfg.classes_per_batch * cfg.clips_per_class * cfg.grad_accum}"
    )
    budget = _budget(data, cfg, training)
    print(
        f"[tune] data: {len(data.train_idx)} train / {len(data.val_idx)} val clips, {len(data.vocab)} labels, "
        f"{'multi' if data.multilabel else 'single'}-label; {training['sampler']} batches, "
        f"{training['views']} view(s); selection metric {training['select_on']} {metric_name}; budget {budget}"
    )
    return budget


def _candidate_summary(data, cfg, method, build_model, candidate, lr, seed, device, resume_dir) -> dict:
    """Train candidate ``candidate``, or read its summary if an earlier run of this fingerprint finished it."""
    store = CandidateResume(resume_dir / f"lr{candidate}")
    done = store.done()
    if done is None:
        return _train_candidate(data, cfg, method, build_model, candidate, lr, seed, device, store)
    print(f"[tune] lr {lr:g}: finished in an earlier run (best epoch {done['best_epoch']}); skipped")
    return done


def _choose(summaries: list[dict], selection: str) -> dict:
    """The candidate with the highest val selection metric; ties go to the earlier candidate."""
    chosen = max(summaries, key=lambda s: (s["best_val"], -s["candidate"]))
    chosen["selected"] = selection
    print(
        f"[tune] chosen lr {chosen['lr']:g}, epoch {chosen['best_epoch']}: {selection} {chosen['best_val']:.4f}"
    )
    return chosen


def _best_path(resume_dir: Path, chosen: dict) -> Path:
    return CandidateResume(resume_dir / f"lr{chosen['candidate']}").best_path(chosen["best_epoch"])


def _write_rows_log_curve(
    model, data, summaries, chosen, identity, split, cfg, device, out_dir
) -> dict | None:
    """head.parquet (tuning choices, and the classifier's test scores), log.csv and curve.png.

    Returns:
        the head's test metrics {metric: value}, or None for a model without a classifier.
    """
    best_row = next(row for row in chosen["log"] if row["epoch"] == chosen["best_epoch"])
    rows, head = [_tune_rows(chosen, best_row, identity)], None
    if model.classifier is not None:
        head = _head_rows(model, data, *split, identity, cfg, device)
        rows.append(head)
    write_parquet(pd.concat(rows, ignore_index=True), out_dir / "head.parquet")
    write_csv(pd.DataFrame([row for summary in summaries for row in summary["log"]]), out_dir / "log.csv")
    metric_label = f"{chosen['selected']} ({'map' if data.multilabel else 'accuracy'})"
    plot_tune_curves(summaries, out_dir / "curve.png", metric_label, chosen)
    return None if head is None else dict(zip(head["metric"], head["value"].astype(float), strict=True))


def _check_data(data: TuneData, name: str, loss, where: str) -> None:
    """Refuse data the method cannot train on or report, before any training starts."""
    check_label_kind(name, loss, data.multilabel)
    if "projection" in loss.heads and not bool((data.train_labels.sum(dim=0) >= 2).any()):
        raise ValueError(f"method loss {name!r} needs train clips that share a label, but {where} has none")
    if "classifier" in loss.heads and data.n_test == 0:
        raise ValueError(
            f"method loss {name!r} reports its head on the test role, but {where.split(' of ')[0]} has none"
        )
    if data.multilabel and not bool(data.val_labels.any()):
        raise ValueError(f"the val role of {where} has no labels: its mAP is undefined")


def _run_facts(data: TuneData, training: dict, budget: dict, summaries: list, chosen: dict) -> dict:
    """meta.json's record of the data, the training recipe and budget, and what was chosen on val."""
    metric_name = "map" if data.multilabel else "accuracy"
    best_row = next(row for row in chosen["log"] if row["epoch"] == chosen["best_epoch"])
    chosen_log = pd.DataFrame(chosen["log"])
    return {
        "multilabel": data.multilabel,
        "n_labels": len(data.vocab),
        "n_train": int(len(data.train_idx)),
        "n_val": int(len(data.val_idx)),
        "val_metric": f"{training['select_on']}_{metric_name}",
        "training": training,
        "budget": budget,
        "chosen_lr": chosen["lr"],
        "best_epoch": chosen["best_epoch"],
        "candidates": [{k: v for k, v in s.items() if k != "log"} for s in summaries],
        "metrics": {
            "train_loss": best_row["train_loss"],
            "val_loss": best_row["val_loss"],
            f"val_knn_{metric_name}": best_row["val_knn"],
            f"val_head_{metric_name}": best_row["val_head"],
            "pretrained_val_knn": chosen["pretrained"]["val_knn"],
        },
        "sampler": {
            "kind": training["sampler"],
            "positive_share": float(chosen_log["positive_share"].mean()),
            "zero_positive_batches": int(chosen_log["zero_positive_batches"].sum()),
            "clips_seen_per_epoch": float(chosen_log["clips_seen"].mean()),
            "unique_clips_per_epoch": float(chosen_log["unique_clips"].mean()),
        },
    }


def _budget(data: TuneData, cfg: TuneConfig, training: dict) -> dict:
    """The per-epoch budget, equal for every method and sampler: batches, optimiser steps and clips."""
    batches = len(make_batch_sampler(training["sampler"], data.train_labels.numpy(), cfg.classes_per_batch,
                                     cfg.clips_per_class, 0))  # fmt: skip
    return {
        "epochs": cfg.epochs,
        "batches_per_epoch": batches,
        "optimizer_steps_per_epoch": math.ceil(batches / cfg.grad_accum),
        "clips_per_batch": math.ceil(len(data.train_idx) / batches),
        "views_per_clip": training["views"],
        "lr_candidates": list(cfg.lr_candidates),
    }


def _tune_rows(chosen: dict, best_row: dict, identity: dict) -> pd.DataFrame:
    """The tuning choices as result rows (probe "tune"), so tables can show the lr and epoch each run kept."""
    records = [
        {"metric": "chosen_lr", "value": float(chosen["lr"])},
        {"metric": "chosen_epoch", "value": float(chosen["best_epoch"])},
        {"metric": "epochs_run", "value": float(chosen["epochs_run"])},
        {"metric": "val_selection_metric", "value": float(best_row["val_metric"])},
    ]
    return make_rows(records, probe="tune", **identity)


def _head_rows(model, data: TuneData, fold, val_offset, identity: dict, cfg, device) -> pd.DataFrame:
    """Score the best checkpoint's classifier on the test role: the only read of test waveforms."""
    roles = roles_for_fold(data.cache.index, fold, val_offset)
    test_idx = np.flatnonzero(roles == "test")
    labels = torch.from_numpy(
        label_matrix(data.cache.index["labels"].iloc[test_idx].tolist(), data.vocab, data.multilabel)
    )
    val_emb = embed_clips(model.encoder, data.cache, data.val_idx, device, cfg.amp, "embed val")
    test_emb = embed_clips(model.encoder, data.cache, test_idx, device, cfg.amp, "embed test")
    with torch.inference_mode():
        val_logits, logits = (model.classifier(x.to(device)).float().cpu() for x in (val_emb, test_emb))
    records = head_metrics(logits, labels, data.multilabel, val_logits, data.val_labels)
    return make_rows(records, probe="head", n_test=len(test_idx), **identity)
