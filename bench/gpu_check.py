"""The prepared GPU check (issue 17 §4): one run of at most ~8 minutes on a lent CUDA machine.

1. the tests marked ``gpu`` (tests/test_gpu.py), in a pytest subprocess;
2. tuning of a full-size, randomly initialised AST (``ASTConfig()``: the architecture of
   MIT/ast-finetuned-audioset-10-10-0.4593, checked against its published config below) and wav2vec2-base
   (``Wav2Vec2Config()``), built from their configs (no download), for a few hundred steps with bf16 autocast:
   the project's SupCon loss (``acft.tune.losses``), label-balanced P x m batches (``acft.tune.samplers``), the
   trainer's projection head, parameter groups and warm-up + cosine schedule (``acft.tune.trainer``, when it
   ), on synthetic class-patterned inputs kept on the device. Reports clips/s,
   peak memory and the achieved TFLOP/s of a training step;
3. embedding extraction (inference mode, bf16 autocast, batch >= 64): clips/s and TFLOP/s against the FLOPs
   counted by ``torch.utils.flop_counter.FlopCounterMode`` on one batch and against the device's dense bf16
   peak (``PEAK_BF16_TFLOPS``; goal >= 40 % for AST); plus the project's own encoder path
   (``acft.models.build_encoder`` on the same random weights, feature extractor on the CPU included);
4. the kNN probe (``acft.probes.knn_search``: CPU only, it has no device argument) and the linear probe
   (``acft.probes.linear`` on the GPU, and on the CPU) against scikit-learn on synthetic embeddings
   (bench_knn.py's generator): agreement of predictions, accuracy difference, times; plus a float32
   matmul + top-k search on the GPU as the reference a GPU kNN search could reach;
5. one JSON (``--out``, default bench/results/gpu_check.json) with the device, the versions and every number,
   and a short summary on stdout.

``--size reduced`` runs the same code paths on the CPU with tiny configs in seconds (tests/test_gpu.py runs it
so the script cannot rot). Only torch, transformers and numpy are assumed on the GPU machine; tqdm (imported by
the project), scikit-learn (baselines) and pytest travel as wheels (bench/gpu_wheels.sh). Usage: see
bench/README.md, "GPU check".
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "workflow"))  # the acft package, as bench/common.py does

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' data sheets, matched as substrings of
# torch.cuda.get_device_name in this order (longest names first: "H100 PCIe" before "H100"). Unknown: null.
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,  # SXM5 (H100 80GB HBM3)
    "GH200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 70.0,
    "L4": 121.0,
}

# MIT/ast-finetuned-audioset-10-10-0.4593's config.json, architecture keys (as published on the hub; 86.6M
# parameters with its 527-class head). transformers' ASTConfig() defaults must equal these.
PUBLISHED_AST = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "layer_norm_eps": 1e-12,
    "patch_size": 16,
    "qkv_bias": True,
    "frequency_stride": 10,
    "time_stride": 10,
    "max_length": 1024,
    "num_mel_bins": 128,
}
# facebook/wav2vec2-base's architecture keys (its config.json): Wav2Vec2Config() defaults must equal these.
PUBLISHED_WAV2VEC2_BASE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "feat_extract_norm": "group",
    "do_stable_layer_norm": False,
    "conv_dim": [512] * 7,
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_bias": False,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
}

_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
SIZES = {
    "full": {
        "ast": {},
        "wav2vec2": {},
        "clip_s": 10.0,  # wav2vec2 input; AST always sees its 1024-frame window (10.24 s)
        "classes": 16,
        "pool_clips": 256,  # synthetic clips kept on the device, batches drawn from them
        "classes_per_batch": 8,
        "clips_per_class": 4,  # B = 32, the project's default P x m ballpark
        "train_steps": 300,
        "warmup_steps": 5,
        "phase_s": 75.0,  # each model's tuning stops early past this (steps_done says how far it got)
        "extract_batches": (64, 128),
        "extract_reps": 10,
        "encoder_batch": 64,
        "encoder_reps": 2,
        "knn": dict(n_train=20000, n_query=5000, dim=768, n_classes=50, noise=5.0, k=5),
        "linear": dict(n_train=20000, n_query=5000, dim=768, n_classes=50, noise=10.0, max_iter=100),
        "pytest_timeout_s": 150,
    },
    "reduced": {
        "ast": dict(_TINY, frequency_stride=16, time_stride=10, max_length=100, num_mel_bins=32),
        "wav2vec2": dict(
            _TINY,
            conv_dim=(32, 32),
            conv_stride=(5, 4),
            conv_kernel=(10, 4),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
        ),
        "clip_s": 0.5,
        "classes": 4,
        "pool_clips": 16,
        "classes_per_batch": 2,
        "clips_per_class": 2,
        "train_steps": 3,
        "warmup_steps": 1,
        "phase_s": 20.0,
        "extract_batches": (8,),
        "extract_reps": 2,
        "encoder_batch": 4,
        "encoder_reps": 1,
        "knn": dict(n_train=600, n_query=100, dim=32, n_classes=5, noise=2.0, k=5),
        "linear": dict(n_train=600, n_query=100, dim=32, n_classes=5, noise=3.0, max_iter=30),
        "pytest_timeout_s": 60,
    },
}
SAMPLE_RATE = 16000
TEMPERATURE = 0.1  # SupCon tau (the config schema's default)
LR = 5e-5


# ---------------------------------------------------------------------------------------------- helpers


def project_module(name: str):
    """Import ``acft.<package>.<module>``; if the package's __init__ needs what is missing here (pandas,
    matplotlib, ... imported by ``acft.tune``'s trainer), import the module alone under a bare package."""
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - ImportError, or a package version the image has that breaks the import
        parent = name.rsplit(".", 1)[0]
        if parent not in sys.modules:
            package = types.ModuleType(parent)
            package.__path__ = [str(REPO / "workflow" / Path(*parent.split(".")))]
            sys.modules[parent] = package
        return importlib.import_module(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_tflops(device_name: str | None) -> float | None:
    if not device_name:
        return None
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return value
    return None


def peak_memory_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def count_flops(fn) -> tuple[int, object]:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        result = fn()
    return int(counter.get_total_flops()), result


def rate(flops: float | None, seconds: float, peak: float | None) -> dict:
    tflops = None if not flops or seconds <= 0 else flops / seconds / 1e12
    return {
        "tflops": tflops,
        "fraction_of_peak": None if tflops is None or not peak else tflops / peak,
    }


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    for name in ("transformers", "numpy", "sklearn", "scipy", "tqdm", "pytest"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is reported, not fatal
            out[name] = None
    return out


def device_facts(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"type": "cpu", "name": None, "peak_bf16_tflops": None}
    props = torch.cuda.get_device_properties(device)
    name = torch.cuda.get_device_name(device)
    return {
        "type": "cuda",
        "name": name,
        "capability": ".".join(map(str, torch.cuda.get_device_capability(device))),
        "multiprocessors": props.multi_processor_count,
        "memory_gib": props.total_memory / 2**30,
        "peak_bf16_tflops": peak_tflops(name),
    }


# ---------------------------------------------------------------------------------------------- models


def build_models(size: dict) -> dict:
    """Randomly initialised ASTModel and Wav2Vec2Model from their configs (size's overrides), float32, CPU."""
    from transformers import ASTConfig, ASTModel, Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    ast_cfg, w2v_cfg = ASTConfig(**size["ast"]), Wav2Vec2Config(**size["wav2vec2"])
    return {"ast": ASTModel(ast_cfg), "wav2vec2": Wav2Vec2Model(w2v_cfg)}


def config_check(size_name: str) -> dict:
    """Whether transformers' default configs still equal the published checkpoints' architectures."""
    from transformers import ASTConfig, Wav2Vec2Config

    out = {}
    for name, config, published in (
        ("ast", ASTConfig(), PUBLISHED_AST),
        ("wav2vec2", Wav2Vec2Config(), PUBLISHED_WAV2VEC2_BASE),
    ):
        actual = {k: list(v) if isinstance(v, tuple) else v for k, v in config.to_dict().items()}
        diff = {k: [actual.get(k), v] for k, v in published.items() if actual.get(k) != v}
        out[name] = {"defaults_equal_published": not diff, "differences_default_vs_published": diff}
    out["size"] = size_name
    return out


class PooledEncoder(nn.Module):
    """A transformers audio model -> mean of its last frames (AST: after the CLS and distillation tokens), the
    ``Encoder`` interface the trainer's ``TuneModel`` wraps (``embed_dim``, forward(inputs, lengths))."""

    def __init__(self, model: nn.Module, n_special: int):
        super().__init__()
        self.model, self.n_special = model, n_special
        self.embed_dim = int(model.config.hidden_size)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        frames = self.model(inputs).last_hidden_state
        return frames[:, self.n_special :].mean(dim=1)


def trainer_pieces() -> dict:
    """TuneModel, _param_groups and warmup_cosine from acft.tune.trainer (the GPU image has its imports:
    pandas, pyarrow, matplotlib; a failed import fails the tuning phases, recorded in the JSON)."""
    trainer = importlib.import_module("acft.tune.trainer")
    return {
        "source": "acft.tune.trainer",
        "TuneModel": trainer.TuneModel,
        "param_groups": trainer._param_groups,
        "warmup_cosine": trainer.warmup_cosine,
    }


def synthetic_pool(name: str, model: nn.Module, size: dict, device: torch.device, seed: int = 0):
    """[N, ...] class-patterned inputs on ``device`` plus their int labels (N = pool_clips, ``classes``)."""
    generator = torch.Generator().manual_seed(seed)
    n, classes = size["pool_clips"], size["classes"]
    labels = torch.arange(n) % classes
    if name == "ast":  # standardised fbank-like frames [N, max_length, num_mel_bins]
        shape = (model.config.max_length, model.config.num_mel_bins)
        patterns = torch.randn(classes, *shape, generator=generator)
        inputs = 0.5 * patterns[labels] + torch.randn(n, *shape, generator=generator)
    else:  # waveforms [N, clip_s * 16 kHz]: a class tone under noise
        samples = int(size["clip_s"] * SAMPLE_RATE)
        t = torch.arange(samples) / SAMPLE_RATE
        tones = torch.sin(2 * math.pi * (200.0 + 150.0 * torch.arange(classes))[:, None] * t)
        inputs = 0.3 * tones[labels] + 0.3 * torch.randn(n, samples, generator=generator)
    return inputs.to(device), labels


# ---------------------------------------------------------------------------------------------- phases


def tune_phase(name: str, model: nn.Module, size: dict, device: torch.device, pieces: dict, peak) -> dict:
    """Few hundred SupCon steps with bf16 autocast; clips/s, peak memory, TFLOP/s of a step, the loss curve."""
    from acft.device import autocast

    losses_mod = project_module("acft.tune.losses")
    samplers = project_module("acft.tune.samplers")
    supcon = losses_mod.LOSSES["supcon"]

    inputs, labels = synthetic_pool(name, model, size, device)
    one_hot = np.eye(size["classes"], dtype=np.float32)[labels.numpy()]
    targets = torch.from_numpy(one_hot).to(device)
    cfg = types.SimpleNamespace(projection_dim=128, projection_hidden=None)
    encoder = PooledEncoder(model, 2 if name == "ast" else 0)
    tune_model = pieces["TuneModel"](encoder, ("projection",), size["classes"], cfg).to(device)
    optimiser = torch.optim.AdamW(pieces["param_groups"](tune_model, 0.01, LR, 10.0), lr=LR)
    total = size["warmup_steps"] + size["train_steps"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, pieces["warmup_cosine"](max(1, total // 10), total)
    )
    sampler = samplers.make_batch_sampler(
        "balanced", one_hot, size["classes_per_batch"], size["clips_per_class"], 0
    )
    trainable = [p for p in tune_model.parameters() if p.requires_grad]

    def batches():
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            yield from sampler
            epoch += 1

    stream = batches()

    def step():
        positions = torch.as_tensor(np.asarray(next(stream)), device=device)
        with autocast(device):
            outputs = tune_model(inputs[positions], None)  # (inputs, lengths): fixed-length inputs
        loss = supcon.compute(
            {k: v.float() for k, v in outputs.items()},
            targets[positions],
            multilabel=False,
            temperature=TEMPERATURE,
        )
        loss.backward()
        nn.utils.clip_grad_norm_(trainable, 1.0)
        optimiser.step()
        scheduler.step()
        optimiser.zero_grad(set_to_none=True)
        return loss

    tune_model.train()
    reset_peak(device)
    step_flops, _ = count_flops(step)  # one real step (forward, backward, optimiser), also a warm-up
    losses = []
    for _ in range(size["warmup_steps"] - 1):
        losses.append(step().item())
    sync(device)
    started, done = time.perf_counter(), 0
    pending = []
    while done < size["train_steps"] and time.perf_counter() - started < size["phase_s"]:
        pending.append(step().detach())
        done += 1
        if len(pending) >= 20:  # fetch losses in groups: one host sync per 20 steps
            losses += torch.stack(pending).tolist()
            pending = []
    sync(device)
    seconds = time.perf_counter() - started
    losses += torch.stack(pending).tolist() if pending else []
    batch = size["classes_per_batch"] * size["clips_per_class"]
    head = losses[: min(10, len(losses))]
    tail = losses[-min(10, len(losses)) :]
    result = {
        "steps_done": done,
        "steps_asked": size["train_steps"],
        "batch_size": batch,
        "seconds": seconds,
        "clips_per_s": done * batch / seconds if seconds > 0 else None,
        "steps_per_s": done / seconds if seconds > 0 else None,
        "peak_memory_mib": peak_memory_mib(device),
        "step_flops": step_flops,
        **rate(step_flops * done, seconds, peak),
        "loss_first10_mean": float(np.mean(head)),
        "loss_last10_mean": float(np.mean(tail)),
        "loss_finite": bool(np.all(np.isfinite(losses))),
        "parameters": sum(p.numel() for p in model.parameters()),
        "input_shape": list(inputs.shape[1:]),
    }
    return result


def extract_phase(name: str, model: nn.Module, size: dict, device: torch.device, peak) -> dict:
    """Inference-mode bf16 embedding extraction at each batch size: clips/s, TFLOP/s, fraction of peak."""
    from acft.device import autocast

    encoder = PooledEncoder(model, 2 if name == "ast" else 0).to(device).eval()
    out = {"batches": []}
    embeddings = None
    for batch in size["extract_batches"]:
        pool_size = dict(size, pool_clips=batch)
        inputs, _ = synthetic_pool(name, model, pool_size, device, seed=1)
        reset_peak(device)
        # FLOPs counted under no_grad: under inference_mode FlopCounterMode breaks wav2vec2's weight-normed
        # positional conv (the parametrization's weight raises AttributeError); the FLOPs are the same.
        with torch.no_grad(), autocast(device):
            flops, embeddings = count_flops(lambda inputs=inputs: encoder(inputs))
        with torch.inference_mode(), autocast(device):
            for _ in range(2):
                encoder(inputs)
            sync(device)
            started = time.perf_counter()
            for _ in range(size["extract_reps"]):
                embeddings = encoder(inputs)
            sync(device)
            seconds = time.perf_counter() - started
        out["batches"].append(
            {
                "batch_size": batch,
                "flops_per_batch": flops,
                "seconds_per_batch": seconds / size["extract_reps"],
                "clips_per_s": batch * size["extract_reps"] / seconds,
                "peak_memory_mib": peak_memory_mib(device),
                **rate(flops * size["extract_reps"], seconds, peak),
            }
        )
        del inputs
    out["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    out["embedding_dim"] = int(embeddings.shape[1])
    out["embeddings_finite"] = bool(torch.isfinite(embeddings.float()).all())
    fractions = [b["fraction_of_peak"] for b in out["batches"] if b["fraction_of_peak"] is not None]
    out["best_fraction_of_peak"] = max(fractions) if fractions else None
    return out


def project_encoder_phase(name: str, model: nn.Module, size: dict, device: torch.device, work: Path) -> dict:
    """The project's own path on the same weights: save_pretrained -> acft.models.build_encoder ->
    embed_layers on raw waveforms (its feature extractor runs on the CPU), bf16 autocast; clips/s."""
    from transformers import ASTFeatureExtractor, Wav2Vec2FeatureExtractor

    from acft.device import autocast
    from acft.models import build_encoder

    directory = work / f"{name}_random"
    model.save_pretrained(directory)
    if name == "ast":
        extractor = ASTFeatureExtractor(
            num_mel_bins=model.config.num_mel_bins,
            max_length=model.config.max_length,
            sampling_rate=SAMPLE_RATE,
        )
    else:
        extractor = Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE, return_attention_mask=False)
    extractor.save_pretrained(directory)
    cfg = {
        "family": "hf", "source": str(directory), "sample_rate": SAMPLE_RATE, "layer": "last", "pooling": "mean",
        "window_s": None, "hop_s": None, "trust_remote_code": False, "revision": None, "freeze": [],
        "normalize_level": None, "trim_silence": False, "extractor": {},
    }  # fmt: skip
    encoder = build_encoder(cfg).to(device)
    batch = size["encoder_batch"]
    samples = int(min(size["clip_s"], encoder.max_input_s) * SAMPLE_RATE)
    generator = torch.Generator().manual_seed(2)
    waveforms = 0.1 * torch.randn(batch, samples, generator=generator)
    lengths = torch.full((batch,), samples, dtype=torch.long)
    with torch.inference_mode(), autocast(device):
        encoder.embed_layers(waveforms.to(device), lengths.to(device))  # warm-up
        sync(device)
        started = time.perf_counter()
        for _ in range(size["encoder_reps"]):
            embeddings = encoder.embed_layers(waveforms.to(device), lengths.to(device))["last"]
        sync(device)
        seconds = time.perf_counter() - started
    return {
        "batch_size": batch,
        "clip_s": samples / SAMPLE_RATE,
        "clips_per_s": batch * size["encoder_reps"] / seconds,
        "embedding_dim": int(embeddings.shape[1]),
        "embeddings_finite": bool(torch.isfinite(embeddings.float()).all()),
    }


def make_embeddings(n_train, n_query, dim, n_classes, noise, seed=0, **_):
    """bench_knn.py's generator: class centres plus a shared offset plus noise (mostly positive cosines)."""
    sys.path.insert(0, str(BENCH_DIR))
    from bench_knn import make_data

    return make_data(n_train, n_query, dim=dim, n_classes=n_classes, noise=noise, seed=seed)


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def knn_phase(size: dict, device: torch.device) -> dict:
    """The project's kNN probe (CPU search) vs sklearn brute-force cosine; a GPU float32 matmul + top-k too."""
    from acft.probes.knn import predict_single
    from acft.probes.knn_search import nearest_neighbours

    spec = size["knn"]
    train, train_labels, query, query_labels = make_embeddings(**spec)
    k, n_classes = spec["k"], spec["n_classes"]

    def ours():
        found = nearest_neighbours(train, query, [k])
        return predict_single(found, k, train_labels, n_classes, weighted=False, temperature=1.0)

    def torch_reference():  # unit rows, float32 product, top-k, majority vote (ties: smallest class)
        bank = torch.nn.functional.normalize(torch.as_tensor(train, device=device), dim=1)
        queries = torch.nn.functional.normalize(torch.as_tensor(query, device=device), dim=1)
        index = (queries @ bank.T).topk(k, dim=1).indices
        votes = torch.zeros(len(query), n_classes, device=device)
        votes.scatter_add_(
            1, torch.as_tensor(train_labels, device=device)[index], torch.ones_like(index, dtype=votes.dtype)
        )
        result = votes.argmax(1).cpu().numpy()
        return result

    ours()  # warm-up (fastest_screen's one-off timing, page faults)
    ours_s, ours_pred = timed(ours)
    torch_reference()
    sync(device)
    ref_s, ref_pred = timed(torch_reference)
    out = {
        **{key: spec[key] for key in ("n_train", "n_query", "dim", "n_classes", "k")},
        "ours_device": "cpu",  # nearest_neighbours has no device argument
        "ours_s": ours_s,
        "ours_accuracy": float(np.mean(ours_pred == query_labels)),
        "torch_float32_topk_device": device.type,
        "torch_float32_topk_s": ref_s,
        "torch_float32_topk_agreement_with_ours": float(np.mean(ref_pred == ours_pred)),
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        from sklearn.neighbors import KNeighborsClassifier
    except ImportError as error:
        return out | {"sklearn": None, "sklearn_error": str(error)}
    sk_s, sk_pred = timed(
        lambda: (
            KNeighborsClassifier(k, algorithm="brute", metric="cosine")
            .fit(train, train_labels)
            .predict(query)
        )
    )
    return out | {
        "sklearn_s": sk_s,
        "sklearn_accuracy": float(np.mean(sk_pred == query_labels)),
        "agreement_with_sklearn": float(np.mean(sk_pred == ours_pred)),
        "speedup_vs_sklearn": sk_s / ours_s,
    }


def linear_phase(size: dict, device: torch.device) -> dict:
    """The project's linear probe fit (standardise + L-BFGS) on ``device`` and on the CPU vs LogisticRegression."""
    from acft.probes.linear import fit_linear, standardise

    spec = size["linear"]
    train, train_labels, test, test_labels = make_embeddings(**spec)
    weight_decay = 1.0 / (1.0 * len(train))  # sklearn's C = 1

    def ours(target: torch.device):
        def run():
            train_x, test_x = standardise(train, test, device=target)
            targets = torch.as_tensor(train_labels, dtype=torch.long, device=target)
            weight, bias = fit_linear(
                train_x, targets, spec["n_classes"], multilabel=False, weight_decay=weight_decay,
                max_iter=spec["max_iter"], seed=0,
            )  # fmt: skip
            predicted = (test_x @ weight + bias).argmax(1).cpu().numpy()
            sync(target)
            return predicted

        return run

    out = {key: spec[key] for key in ("n_train", "n_query", "dim", "n_classes", "max_iter")}
    runs = {}
    for target in dict.fromkeys([device, torch.device("cpu")]):
        ours(target)()  # warm-up
        seconds, predicted = timed(ours(target))
        runs[target.type] = predicted
        out[f"ours_{target.type}_s"] = seconds
        out[f"ours_{target.type}_accuracy"] = float(np.mean(predicted == test_labels))
    if device.type == "cuda":
        out["cuda_cpu_prediction_agreement"] = float(np.mean(runs["cuda"] == runs["cpu"]))
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as error:
        return out | {"sklearn": None, "sklearn_error": str(error)}
    train_x, test_x = (t.numpy() for t in standardise(train, test, device=torch.device("cpu")))
    sk_s, sk_pred = timed(
        lambda: (
            LogisticRegression(C=1.0, max_iter=spec["max_iter"]).fit(train_x, train_labels).predict(test_x)
        )
    )
    sk_acc = float(np.mean(sk_pred == test_labels))
    ours_acc = out[f"ours_{device.type}_accuracy"]
    return out | {
        "sklearn_s": sk_s,
        "sklearn_accuracy": sk_acc,
        "accuracy_difference_points": 100 * (ours_acc - sk_acc),
        "agreement_with_sklearn": float(np.mean(runs[device.type] == sk_pred)),
        "speedup_vs_sklearn": sk_s / out[f"ours_{device.type}_s"],
    }


def pytest_phase(size: dict) -> dict:
    """The tests marked gpu, in a subprocess (they skip without CUDA)."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "gpu",
        "-p",
        "no:cacheprovider",
        "tests/test_gpu.py",
    ]
    started = time.perf_counter()
    try:
        # acft is not installed on a lent GPU machine: the tests import it from workflow/, as this script does
        paths = [str(REPO / "workflow"), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=size["pytest_timeout_s"]
        )
    except subprocess.TimeoutExpired as error:
        return {"returncode": None, "timed_out": True, "output_tail": str(error.stdout or "")[-2000:]}
    output = done.stdout + done.stderr
    last = output.strip().splitlines()[-1] if output.strip() else ""
    counts = {
        word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)\b", last)
    }
    return {
        "returncode": done.returncode,
        "seconds": time.perf_counter() - started,
        **counts,
        "output_tail": output[-2000:],
    }


# ---------------------------------------------------------------------------------------------- main


def run_phase(record: dict, key: str, fn) -> None:
    """Run one phase; a failure is recorded (with its traceback) and the check goes on."""
    started = time.perf_counter()
    try:
        record[key] = fn()
    except Exception as error:  # noqa: BLE001 - every phase reports what it can
        record[key] = {
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc()[-3000:],
        }
    print(f"[gpu_check] {key}: {time.perf_counter() - started:.1f} s", flush=True)


def summary_lines(record: dict) -> list[str]:
    def fmt(value, spec=".1f"):
        return "null" if value is None else format(value, spec)

    lines = [
        f"device: {record['device'].get('name') or 'cpu'} ({record['size']} size), {record['seconds']:.0f} s"
    ]
    tests = record.get("gpu_tests", {})
    lines.append(
        f"gpu tests: rc {tests.get('returncode')}, {tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
        f"{tests.get('skipped', 0)} skipped"
    )
    for name in ("ast", "wav2vec2"):
        tune = record.get(f"tune_{name}", {})
        if "error" in tune:
            lines.append(f"tune {name}: ERROR {tune['error']}")
        else:
            lines.append(
                f"tune {name}: {tune['steps_done']} steps x {tune['batch_size']}, {fmt(tune['clips_per_s'])} clips/s, "
                f"peak {fmt(tune['peak_memory_mib'], ',.0f')} MiB, {fmt(tune['tflops'])} TFLOP/s, loss "
                f"{tune['loss_first10_mean']:.3f} -> {tune['loss_last10_mean']:.3f}"
            )
        extract = record.get(f"extract_{name}", {})
        if "error" in extract:
            lines.append(f"extract {name}: ERROR {extract['error']}")
        else:
            for b in extract["batches"]:
                lines.append(
                    f"extract {name} batch {b['batch_size']}: {fmt(b['clips_per_s'])} clips/s, {fmt(b['tflops'])} "
                    f"TFLOP/s, {fmt(None if b['fraction_of_peak'] is None else 100 * b['fraction_of_peak'])} % of peak"
                )
        encoder = record.get(f"project_encoder_{name}", {})
        lines.append(
            f"project encoder {name}: "
            + (
                f"ERROR {encoder['error']}"
                if "error" in encoder
                else f"{fmt(encoder.get('clips_per_s'))} clips/s"
            )
        )
    for key in ("knn", "linear"):
        probe = record.get(key, {})
        if "error" in probe:
            lines.append(f"{key}: ERROR {probe['error']}")
            continue
        device = "cpu" if key == "knn" else record["device"]["type"]
        lines.append(
            f"{key}: ours {fmt(probe.get('ours_s', probe.get(f'ours_{device}_s')), '.3f')} s, sklearn "
            f"{fmt(probe.get('sklearn_s'), '.3f')} s, agreement {fmt(probe.get('agreement_with_sklearn'), '.4f')}"
        )
    goal = record.get("goal_ast_40pct_of_peak_at_batch_64")
    lines.append(f"goal AST >= 40 % of bf16 peak at batch >= 64: {goal}")
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument(
        "--reduced", action="store_const", const="reduced", dest="size", help="= --size reduced"
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "gpu_check.json")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda[:i]")
    parser.add_argument("--skip-tests", action="store_true", help="do not run the tests marked gpu")
    parser.add_argument(
        "--allow-cpu", action="store_true", help="run the full size on the CPU anyway (hours)"
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from acft.device import select_device

    device = select_device(args.device)
    if args.size == "full" and device.type != "cuda" and not args.allow_cpu:
        parser.error("the full size needs CUDA (use --size reduced, or --allow-cpu to wait hours)")
    size = SIZES[args.size]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 leftovers (the kNN reference) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    started = time.perf_counter()
    facts = device_facts(device)
    record = {
        "check": "gpu_check",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "size": args.size,
        "device": facts,
        "versions": versions(),
        "host": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "configs": config_check(args.size),
    }
    if not args.skip_tests:
        run_phase(record, "gpu_tests", lambda: pytest_phase(size))
    try:
        pieces = trainer_pieces()
        record["trainer_pieces"] = pieces["source"]
    except Exception as error:  # noqa: BLE001 - the tuning phases then fail and are recorded; the rest runs
        pieces, record["trainer_pieces"] = None, f"import failed: {type(error).__name__}: {error}"
    peak = facts["peak_bf16_tflops"]
    models = build_models(size)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"gpu_check_{os.getpid()}"
    for name, model in models.items():
        model.to(device)
        run_phase(
            record,
            f"tune_{name}",
            lambda name=name, model=model: tune_phase(name, model, size, device, pieces, peak),
        )
        run_phase(
            record,
            f"extract_{name}",
            lambda name=name, model=model: extract_phase(name, model, size, device, peak),
        )
        run_phase(record, f"project_encoder_{name}",
                  lambda name=name, model=model: project_encoder_phase(name, model, size, device, work))  # fmt: skip
        model.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    run_phase(record, "knn", lambda: knn_phase(size, device))
    run_phase(record, "linear", lambda: linear_phase(size, device))
    with contextlib.suppress(OSError):
        import shutil

        shutil.rmtree(work)
    ast_extract = record.get("extract_ast", {})
    fractions = [
        b["fraction_of_peak"]
        for b in ast_extract.get("batches", [])
        if b["batch_size"] >= 64 and b["fraction_of_peak"]
    ]
    record["goal_ast_40pct_of_peak_at_batch_64"] = None if not fractions else max(fractions) >= 0.40
    record["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    for line in summary_lines(record):
        print(line)
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
