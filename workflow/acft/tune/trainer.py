"""Contrastive tuning and vanilla fine-tuning of one backbone for one (method, fold, seed).

The story of ``tune``: data (this fold's train and val roles; the test role stays on disk) -> for every
learning-rate candidate: model (a fresh pretrained encoder plus the loss's heads), optimiser (AdamW, warm-up +
cosine), loop (the method's batches: uniformly shuffled for ce/bce, label-balanced for the contrastive losses;
per-epoch val loss, val kNN and val head score; early stopping on the method's selection metric), checkpoint
(resume state every epoch, best weights on improvement) -> the candidate with the best val selection metric
wins -> outputs (encoder weights without heads, meta.json, log.csv, curve.png, and head.parquet: the tuning
choices as result rows, probe "tune", plus for methods with a classifier the fine-tuned model's own test
metrics, probe "head").

Budget: every method and sampler gets ceil(N_train / B) batches of B = P x m clips per epoch (P capped at the
number of label groups), i.e. about one pass of the train clips, and the same lr candidates.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..data.cache import INDEX, AudioCache
from ..data.splits import roles_for_fold
from ..io import atomic_dir, atomic_path, write_csv, write_json, write_parquet
from ..labels import encode_multi_hot, encode_single, is_multilabel, read_vocab
from ..methods import training_settings
from ..probes.metrics import accuracy, mean_average_precision, multilabel_metrics, single_label_metrics
from ..provenance import config_hash, file_sha256, git_commit
from ..results import make_rows
from .augment import AugmentConfig, augment, random_crop
from .checkpoint import CandidateResume, load_weights, open_resume_dir, save_weights
from .losses import check_label_kind, resolve_method
from .samplers import PositiveStats, make_batch_sampler

EVAL_BATCH_SIZE = 64  # clips per inference batch of the embedding passes (length-bucketed)
KNN_QUERY_CHUNK = 4096  # val clips per similarity block, so the kNN metric's memory stays bounded

# Purposes of derived seeds: every random stream is a function of (seed, candidate, purpose, epoch).
HEAD_INIT, TRAIN_STEP, VIEWS, TRAIN_BATCHES, VAL_BATCHES = range(5)


@dataclass(frozen=True)
class TuneConfig:
    epochs: int = 8  # one budget for every method (fair baselines); the measured resemblyzer setting
    # The demo's single candidate for every method. An early demo run collapsed at 1e-3 (which method is not
    # reliably recorded: two comments disagreed, SupCon here and CE in config.yaml); 3e-4 worked for both.
    lr_candidates: tuple[float, ...] = (3e-4,)
    weight_decay: float = 0.01  # the AdamW default; applied to weight matrices only
    head_lr_scale: float = (
        10.0  # heads start from random init: a fine-tuning lr barely moves them in a short run
    )
    warmup_epochs: float = 1.0  # a linear warm-up keeps the first contrastive steps from wrecking pretraining
    grad_clip: float | None = 1.0  # caps the rare huge step from a hard batch (None = off)
    grad_accum: int = 1  # >1 emulates a larger ce batch; each micro-batch stays its own contrastive batch
    classes_per_batch: int = 16  # P labels per batch (also sets B = P x m of the shuffled batches)
    # m clips per label: every anchor has m - 1 = 3 same-label positives and B = 64 clips, a common fine-tuning
    # batch; chosen a priori, not on test data (an earlier note cited test kNN; no val comparison was made)
    clips_per_class: int = 4
    max_clip_s: float | None = None  # random crop of training clips to bound compute (None = full clip)
    patience: int = 3  # early stopping after this many epochs without a gain of the val selection metric
    val_knn_k: int = 5  # neighbours of the per-epoch val kNN metric (a middle value of the probes' k list)
    projection_dim: int = 128  # SupCon projection size of Khosla et al. 2020
    projection_hidden: int | None = None  # hidden width of the projection MLP (None = embedding size)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # all off: the demo tunes on clean clips
    amp: str = "auto"  # "auto" = bf16 autocast on CUDA only (CPU autocast is slow and breaks bit-equality)
    threads: int = (
        1  # torch threads, pinned so CPU runs are reproducible and parallel jobs do not oversubscribe
    )
    freeze: tuple[str, ...] = ()  # encoder parameter-name prefixes kept frozen (added to the backbone's own)

    @classmethod
    def from_dict(cls, d: dict) -> TuneConfig:
        """Build from a config mapping; an unknown key raises ValueError naming it."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown tune config key(s) {unknown}; known keys: {known}")
        d = dict(d)
        if "lr_candidates" in d:
            d["lr_candidates"] = tuple(float(lr) for lr in d["lr_candidates"])
        if "freeze" in d:
            d["freeze"] = tuple(d["freeze"])
        if "augment" in d:
            d["augment"] = AugmentConfig.from_dict(d["augment"])
        return cls(**d)

    def __post_init__(self):
        valid = {
            "epochs": self.epochs >= 1,
            "lr_candidates": len(set(self.lr_candidates)) == len(self.lr_candidates) > 0
            and all(lr > 0 for lr in self.lr_candidates),
            "weight_decay": self.weight_decay >= 0,
            "head_lr_scale": self.head_lr_scale > 0,
            "warmup_epochs": self.warmup_epochs >= 0,
            "grad_clip": self.grad_clip is None or self.grad_clip > 0,
            "grad_accum": self.grad_accum >= 1,
            "classes_per_batch": self.classes_per_batch >= 1,
            "clips_per_class": self.clips_per_class >= 2,
            "max_clip_s": self.max_clip_s is None or self.max_clip_s > 0,
            "patience": self.patience >= 1,
            "val_knn_k": self.val_knn_k >= 1,
            "projection_dim": self.projection_dim >= 1,
            "projection_hidden": self.projection_hidden is None or self.projection_hidden >= 1,
            "amp": self.amp in ("auto", "off"),
            "threads": self.threads >= 1,
        }
        bad = [f"{key}={getattr(self, key)!r}" for key, ok in valid.items() if not ok]
        if bad:
            raise ValueError(f"invalid tune config value(s): {', '.join(bad)}")

    def to_dict(self) -> dict:
        """JSON-ready form (tuples as lists), as stored in meta.json."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


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
    """Embed cache clips in inference mode, in batches bucketed by length.

    Returns:
        [len(indices), D] float32 CPU embeddings in the order of ``indices``.
    """
    order = np.argsort(cache.lengths()[indices], kind="stable")
    out = torch.empty(len(indices), encoder.embed_dim)
    chunks = [order[i : i + EVAL_BATCH_SIZE] for i in range(0, len(order), EVAL_BATCH_SIZE)]
    with torch.inference_mode(), _autocast(device, amp):
        for chunk in tqdm(chunks, desc=desc, disable=None, leave=False):
            waveforms, lengths = cache.batch(indices[chunk])
            out[torch.from_numpy(chunk)] = encoder(waveforms.to(device), lengths.to(device)).float().cpu()
    return out


def knn_metric(
    train_emb: Tensor,
    train_labels: Tensor,
    query_emb: Tensor,
    query_labels: Tensor,
    k: int,
    multilabel: bool,
    temperature: float = 0.07,
) -> float:
    """Val selection metric: cosine kNN with the train clips as memory bank, similarity-weighted vote.

    The weighted vote (DINO's exp(s / tau)) rather than the majority vote: with many classes and few clips per
    class most majority votes at k = 5 are ties, settled by class index, which makes epoch selection noisy.

    Args:
        train_emb: [Nt, D]; train_labels: [Nt, C] multi-hot; query_emb: [Nq, D]; query_labels: [Nq, C].
        k: neighbours (capped at Nt); temperature: tau of the vote weights.

    Returns:
        single-label: accuracy of the weighted vote; multi-label: mAP of the neighbours' weighted label
        frequencies over classes with a query positive.
    """
    bank = F.normalize(train_emb, dim=1)
    queries = F.normalize(query_emb, dim=1)
    k = min(k, len(bank))
    blocks = []
    for block in queries.split(KNN_QUERY_CHUNK):
        similarity, index = (block @ bank.T).topk(k, dim=1)
        weights = torch.exp((similarity - similarity[:, :1]) / temperature)  # max-shifted: no overflow
        blocks.append(
            (weights.unsqueeze(-1) * train_labels[index]).sum(dim=1) / weights.sum(dim=1, keepdim=True)
        )
    votes = torch.cat(blocks)
    if not multilabel:
        return accuracy(query_labels.argmax(dim=1).numpy(), votes.argmax(dim=1).numpy())
    return mean_average_precision(query_labels.numpy(), votes.double().numpy())[0]


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


def _autocast(device: torch.device, amp: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "auto" and device.type == "cuda")


def _select_device(device: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)


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
    method: tuple,
    build_model: Callable[[int], TuneModel],
    candidate: int,
    lr: float,
    seed: int,
    device: torch.device,
    resume: CandidateResume,
) -> dict:
    """Train one learning-rate candidate (resuming if a state exists); returns its summary with log rows."""
    name, loss_spec, params, training = method

    def loss_fn(outputs, labels):
        return loss_spec.compute(outputs, labels, multilabel=data.multilabel, **params)

    # ---- model ----
    model = build_model(candidate)

    # ---- optimiser: AdamW, linear warm-up then cosine decay over the whole epoch budget ----
    sampler, val_batches = _samplers(data, cfg, training["sampler"], seed, candidate)
    steps_per_epoch = math.ceil(len(sampler) / cfg.grad_accum)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay, lr, cfg.head_lr_scale), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch)
    )
    selected = f"val_{training['select_on']}"
    resumable = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "sampler": sampler}

    # ---- checkpoint: resume from the last finished epoch, else evaluate the pretrained model first ----
    state = resume.load()
    if state is not None:
        for key, part in resumable.items():
            part.load_state_dict(state[key])
        torch.set_rng_state(
            state["rng"]
        )  # each epoch also reseeds, so a resumed epoch never depends on history
        log, pretrained, start_epoch = state["log"], state["pretrained"], state["epoch"] + 1
        best_val, best_epoch, bad_epochs = state["best_val"], state["best_epoch"], state["bad_epochs"]
        print(f"[tune] lr {lr:g}: resuming at epoch {start_epoch} (best so far: epoch {best_epoch})")
    else:
        pretrained = _evaluate(model, data, loss_fn, val_batches, cfg, device)
        log, best_val, best_epoch, bad_epochs, start_epoch = [], float("-inf"), None, 0, 1
        print(f"[tune] lr {lr:g}: pretrained {_scores_text(pretrained)}")

    # ---- loop ----
    for epoch in range(start_epoch, cfg.epochs + 1):
        if bad_epochs >= cfg.patience:
            break
        started = time.perf_counter()
        sampler.set_epoch(epoch)
        train = _train_epoch(model, data, cfg, loss_fn, list(sampler), optimizer, scheduler, device,
                             (seed, candidate, epoch), training["views"], f"{name} lr {lr:g}")  # fmt: skip
        scores = _evaluate(model, data, loss_fn, val_batches, cfg, device)
        row = {"lr_candidate": lr, "epoch": epoch, **train, **scores, "val_metric": scores[selected]}
        row |= {"lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - started}
        log.append(row)
        improved = row["val_metric"] > best_val
        if improved:
            best_val, best_epoch, bad_epochs = row["val_metric"], epoch, 0
        else:
            bad_epochs += 1
        print(
            f"[tune] lr {lr:g} epoch {epoch}: train loss {row['train_loss']:.4f}, {_scores_text(scores)}"
            f"{' (best)' if improved else ''}, positives {row['positive_share']:.2f}, {row['seconds']:.1f} s"
        )

        # ---- checkpoint: best weights (on improvement), then the resume state that names them ----
        state = {"epoch": epoch, **{key: part.state_dict() for key, part in resumable.items()}}
        state |= {"rng": torch.get_rng_state(), "log": log, "pretrained": pretrained, "best_val": best_val}
        state |= {"best_epoch": best_epoch, "bad_epochs": bad_epochs}
        sidecar = {"lr": lr, "epoch": epoch, "metrics": row, "method": {"loss": name, **params, **training}}
        sidecar["tune"] = cfg.to_dict()
        resume.save(state, model.state_dict() if improved else None, sidecar if improved else None)

    summary = {"candidate": candidate, "lr": lr, "best_epoch": best_epoch, "best_val": best_val}
    summary |= {"epochs_run": log[-1]["epoch"], "stopped_early": log[-1]["epoch"] < cfg.epochs}
    summary |= {"pretrained": pretrained, "log": log}
    resume.mark_done(summary)
    return summary


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
        with _autocast(device, cfg.amp), model.encoder.contract_applied_by_caller():
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


def _plot_curves(summaries: list[dict], path: Path, metric_label: str, chosen: dict) -> None:
    from matplotlib.figure import Figure  # a bare Figure renders with Agg and leaves pyplot's state alone

    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axes, metric_axes = figure.subplots(1, 2)
    for summary in summaries:
        epochs = [row["epoch"] for row in summary["log"]]
        lr = summary["lr"]
        line = loss_axes.plot(
            epochs, [row["train_loss"] for row in summary["log"]], marker="o", label=f"train, lr {lr:g}"
        )[0]
        # epoch 0 is the pretrained model (no training loss)
        val_losses = [summary["pretrained"]["val_loss"]] + [row["val_loss"] for row in summary["log"]]
        selected = [summary["pretrained"][chosen["selected"]]] + [row["val_metric"] for row in summary["log"]]
        loss_axes.plot([0, *epochs], val_losses, ls="--", color=line.get_color(), label=f"val, lr {lr:g}")
        metric_axes.plot([0, *epochs], selected, marker="o", color=line.get_color(), label=f"lr {lr:g}")
    metric_axes.axvline(chosen["best_epoch"], color="grey", ls=":", label=f"chosen: lr {chosen['lr']:g}")
    loss_axes.set(xlabel="epoch", ylabel="loss", title="loss (val at epoch 0 = pretrained model)")
    metric_axes.set(xlabel="epoch", ylabel=metric_label, title="val selection metric")
    loss_axes.legend(fontsize="small")
    metric_axes.legend(fontsize="small")
    with atomic_path(path, suffix=".png.tmp") as tmp:
        figure.savefig(tmp, format="png", dpi=100)


def tune(
    cache_dir,
    vocab_path,
    backbone_cfg: dict,
    method_cfg: dict,
    tune_cfg: dict | TuneConfig,
    *,
    fold: int,
    seed: int,
    out_dir,
    val_offset: int = 1,
    device: str = "auto",
    identity: dict | None = None,
    encoder_factory: Callable[[dict], nn.Module] | None = None,
) -> dict:
    """Tune one backbone with one method on one fold's train role, selecting lr and epoch on its val role.

    Writes into ``out_dir``: model.safetensors (encoder state_dict only: heads dropped), meta.json (the
    method's sampler, selection metric and views, the budget, each candidate's pretrained val scores),
    log.csv (one row per candidate x trained epoch), curve.png, head.parquet (result rows: probe "tune" with
    the chosen lr and epoch; probe "head" for methods with a classifier: the best checkpoint's own classifier
    on the test role, read only now) and, for hf backbones, ``pretrained/`` from ``encoder.save_pretrained``. Resume state lives in ``out_dir/resume/`` and is removed
    once the run completes; rerunning with the same arguments after a kill resumes there.

    Args:
        cache_dir: audio cache directory (``.../sr<rate>``); its rate must equal the encoder's.
        vocab_path: label vocabulary, one label per line.
        backbone_cfg: passed to ``build_encoder``; its optional ``freeze`` prefixes are frozen.
        method_cfg: ``{"loss": name, **hyper-parameters}`` (see ``acft.tune.losses.LOSSES``), optionally with
            ``sampler``, ``select_on`` and ``views`` (see ``acft.methods``).
        tune_cfg: training settings (``TuneConfig`` or its dict form).
        fold: evaluation round (0 = fixed split); its test role never reaches training.
        seed: tuning seed; CPU runs with equal arguments give bit-identical weights.
        out_dir: run directory.
        val_offset: k-fold val fold offset (see ``acft.data.splits``).
        device: "auto" (CUDA if present), "cpu" or "cuda[:i]".
        identity: result-row identity {"dataset", "backbone", "method", "config_hash"}; missing keys default
            to the cache's dataset directory, the backbone family, the loss name and the run fingerprint.
        encoder_factory: builds the encoder from ``backbone_cfg`` (default ``acft.models.build_encoder``).

    Returns:
        the meta dict written to meta.json.
    """
    cfg = tune_cfg if isinstance(tune_cfg, TuneConfig) else TuneConfig.from_dict(tune_cfg)
    name, loss, params = resolve_method(method_cfg)
    training = training_settings(method_cfg)
    method = (name, loss, params, training)
    if training["select_on"] == "head" and "classifier" not in loss.heads:
        raise ValueError(f"method loss {name!r} has no classifier head to select on; use select_on: knn")
    if encoder_factory is None:
        from ..models import build_encoder  # imported here so tests and tools can inject their own encoder

        encoder_factory = build_encoder
    out_dir = Path(out_dir)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(cfg.threads)
    run_device = _select_device(device)
    if run_device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        # ---- data: this fold's train and val roles; the test role stays on disk until the head evaluation ----
        data = _load_data(cache_dir, vocab_path, fold, val_offset)
        _check_data(data, name, loss, f"fold {fold} of {cache_dir}")
        fingerprint = config_hash(
            {
                "backbone": backbone_cfg,
                "method": method_cfg,
                "tune": cfg.to_dict(),
                "fold": fold,
                "seed": seed,
                "val_offset": val_offset,
                "cache_index": file_sha256(Path(cache_dir) / INDEX),
                "vocab": data.vocab,
            }
        )
        identity = {
            "dataset": Path(cache_dir).parent.name,
            "backbone": backbone_cfg.get("family", "encoder"),
            "method": name,
            "config_hash": fingerprint,
            **(identity or {}),
        }
        metric_name = "map" if data.multilabel else "accuracy"
        selection = f"val_{training['select_on']}"  # the log column that picks lr and epoch

        def build_model(candidate: int) -> TuneModel:
            encoder = encoder_factory(backbone_cfg)
            if encoder.sample_rate != data.cache.sample_rate:
                raise ValueError(
                    f"encoder expects {encoder.sample_rate} Hz audio, cache {cache_dir} holds {data.cache.sample_rate} Hz"
                )
            prefixes = [*backbone_cfg.get("freeze", []), *cfg.freeze]
            if prefixes:
                encoder.freeze(prefixes)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derived_seed(seed, candidate, HEAD_INIT))
                model = TuneModel(encoder, loss.heads, len(data.vocab), cfg)
            return model.to(run_device)

        probe_model = build_model(0)
        n_params = sum(p.numel() for p in probe_model.parameters())
        n_trainable = sum(p.numel() for p in probe_model.parameters() if p.requires_grad)
        del probe_model
        print(
            f"[tune] {identity['dataset']}/{identity['backbone']}/{identity['method']} fold {fold} seed {seed}"
        )
        print(f"[tune] method: {name} {params}; tune config: {cfg.to_dict()}")
        print(
            f"[tune] git {git_commit()}; device {run_device}, {cfg.threads} thread(s); parameters {n_params:,} "
            f"({n_trainable:,} trainable); effective batch {cfg.classes_per_batch} labels x {cfg.clips_per_class} "
            f"clips x {cfg.grad_accum} accumulation = {cfg.classes_per_batch * cfg.clips_per_class * cfg.grad_accum}"
        )
        budget = _budget(data, cfg, training)
        print(
            f"[tune] data: {len(data.train_idx)} train / {len(data.val_idx)} val clips, {len(data.vocab)} labels, "
            f"{'multi' if data.multilabel else 'single'}-label; {training['sampler']} batches, "
            f"{training['views']} view(s); selection metric {training['select_on']} {metric_name}; budget {budget}"
        )

        # ---- candidates: every lr gets the same budget; finished candidates are skipped on resume ----
        resume_dir = open_resume_dir(out_dir, fingerprint)
        summaries = []
        for candidate, lr in enumerate(cfg.lr_candidates):
            store = CandidateResume(resume_dir / f"lr{candidate}")
            done = store.done()
            if done is not None:
                print(
                    f"[tune] lr {lr:g}: finished in an earlier run (best epoch {done['best_epoch']}); skipped"
                )
                summaries.append(done)
                continue
            summaries.append(
                _train_candidate(data, cfg, method, build_model, candidate, lr, seed, run_device, store)
            )
        # Highest val selection metric wins; ties go to the earlier candidate.
        chosen = max(summaries, key=lambda s: (s["best_val"], -s["candidate"]))
        chosen["selected"] = selection
        best_row = next(row for row in chosen["log"] if row["epoch"] == chosen["best_epoch"])
        print(
            f"[tune] chosen lr {chosen['lr']:g}, epoch {chosen['best_epoch']}: {selection} {chosen['best_val']:.4f}"
        )

        # ---- outputs: the chosen checkpoint's encoder (heads dropped), head metrics, log, curve, meta ----
        model = build_model(chosen["candidate"])
        best_path = CandidateResume(resume_dir / f"lr{chosen['candidate']}").best_path(chosen["best_epoch"])
        model.load_state_dict(load_weights(best_path))
        model.eval()
        save_weights(model.encoder.state_dict(), out_dir / "model.safetensors")
        if backbone_cfg.get("family") == "hf":
            with atomic_dir(out_dir / "pretrained") as tmp:
                model.encoder.save_pretrained(tmp)
        head = None
        row_identity = {**identity, "fold": fold, "tune_seed": seed, "n_train": len(data.train_idx)}
        rows = [_tune_rows(chosen, best_row, row_identity)]
        if model.classifier is not None:
            head = _head_rows(model, data, fold, val_offset, row_identity, cfg, run_device)
            rows.append(head)
        write_parquet(pd.concat(rows, ignore_index=True), out_dir / "head.parquet")
        log = pd.DataFrame([row for summary in summaries for row in summary["log"]])
        write_csv(log, out_dir / "log.csv")
        _plot_curves(summaries, out_dir / "curve.png", f"{selection} ({metric_name})", chosen)
        meta = {
            "identity": identity,
            "fold": fold,
            "seed": seed,
            "val_offset": val_offset,
            "config": {"backbone": backbone_cfg, "method": method_cfg, "tune": cfg.to_dict()},
            "loss": {"name": name, **params},
            "fingerprint": fingerprint,
            "git_commit": git_commit(),
            "device": str(run_device),
            "parameters": {"total": n_params, "trainable": n_trainable},
            **_run_facts(data, training, budget, summaries, chosen, log),
            "head": None
            if head is None
            else dict(zip(head["metric"], head["value"].astype(float), strict=True)),
            "model_sha256": file_sha256(out_dir / "model.safetensors"),
        }
        write_json(out_dir / "meta.json", meta)
        shutil.rmtree(resume_dir)
        return meta
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


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


def _run_facts(data: TuneData, training: dict, budget: dict, summaries: list, chosen: dict, log) -> dict:
    """meta.json's record of the data, the training recipe and budget, and what was chosen on val."""
    metric_name = "map" if data.multilabel else "accuracy"
    best_row = next(row for row in chosen["log"] if row["epoch"] == chosen["best_epoch"])
    chosen_log = log[log["lr_candidate"] == chosen["lr"]]
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
