"""Where and how encoders and probes run: the device, bf16 autocast, and length-bucketed inference over a cache.

One home for the three stages that run a network (tuning, extraction, the linear probe): they pick the device
the same way, autocast the same way, and embed cache clips in the same length-sorted batches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from .memory import release_free_heap


def select_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``, ``cuda`` or ``cuda:N`` -> that device.

    Raises:
        ValueError: a name torch does not know, or a CUDA device on a machine without CUDA.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (halves memory and time); CPU runs in float32 so its output is reproducible."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def length_buckets(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Positions sorted by length (stable) and chunked, so each batch pads little."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(lengths, kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def embed_cache_clips(
    forward: Callable[[Tensor, Tensor], dict[str, Tensor]],
    cache,
    indices: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool,
    desc: str,
) -> dict[str, np.ndarray]:
    """Run ``forward`` over cache clips in inference mode, in batches bucketed by length.

    Args:
        forward: ([B, N] waveforms, [B] lengths) on ``device`` -> {name: [B, D] embeddings}.
        cache: an ``acft.data.cache.AudioCache``; indices: [M] clip indices into it.
        batch_size: clips per forward pass. amp: bf16 autocast on CUDA (see ``autocast``).

    Returns:
        {name: float32 [M, D]} in the order of ``indices``.
    """
    out: dict[str, np.ndarray] = {}
    # Longest batch first: each later, smaller batch fits in the memory an earlier one freed (shortest first,
    # every batch outgrew the heap's holes and the heap grew with N; acft.memory), and a GPU out-of-memory
    # shows at the first batch rather than the last. Same batches either way, so the same embeddings.
    batches = length_buckets(cache.lengths()[indices], batch_size)[::-1]
    with torch.inference_mode(), autocast(device, amp):
        for positions in tqdm(batches, desc=desc, unit="batch", disable=None, leave=False):
            waveforms, lengths = cache.batch(indices[positions])
            for name, embeddings in forward(waveforms.to(device), lengths.to(device)).items():
                if name not in out:
                    out[name] = np.zeros((len(indices), embeddings.shape[1]), dtype=np.float32)
                out[name][positions] = embeddings.float().cpu().numpy()
            release_free_heap()  # safety net: rarely trims in this order (acft.memory)
    return out
