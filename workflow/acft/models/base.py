"""The one contract every backbone meets, and the pooling/windowing/layer logic they all share.

A backbone implements ``frame_features``: waveforms ``[B, N]`` at its sample rate plus lengths ``[B]`` ->
one ``[B, T, D]`` frame-feature tensor per selected layer plus a ``[B, T]`` frame mask. ``Encoder`` turns that
into pooled clip embeddings, cutting clips longer than the window into windows whose pooled embeddings are
averaged. Before that, the family's input contract (``contract.py``: level normalisation, silence trimming) is
applied to each whole clip, as its authors apply it to a whole utterance. Tuning (``forward``) and extraction
(``embed_layers``) run the same code, so they share contract, pooling, layer and windowing by construction;
``describe`` records them in the metadata.
"""

from __future__ import annotations

import abc
import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .contract import InputContract
from .pooling import POOLERS, average_windows, cut_windows, pool

LayerSpec = str | int


def parse_layers(layer) -> list[LayerSpec]:
    """Config ``layer`` ("last", an int, or a non-empty list of ints) -> list of layer selectors."""
    if layer == "last":
        return ["last"]
    if isinstance(layer, int) and not isinstance(layer, bool):
        return [layer]
    if (
        isinstance(layer, (list, tuple))
        and layer
        and all(isinstance(i, int) and not isinstance(i, bool) for i in layer)
    ):
        if len(set(layer)) != len(layer):
            raise ValueError(f"backbone layer list {list(layer)} repeats a layer")
        return list(layer)
    raise ValueError(f"backbone layer must be 'last', an int or a non-empty list of ints, got {layer!r}")


class Encoder(nn.Module, abc.ABC):
    """Waveforms -> pooled clip embeddings, the same way for tuning and extraction.

    Attributes:
        sample_rate: Hz the backbone expects.
        max_input_s: longest input the backbone takes in one pass (its window or pre-training crop).
        embed_dim: D of the pooled embedding.
        layer_names: one name per selected layer ("last" or the index as a string), in config order.
        contract: the input steps applied to each whole clip before windowing.
    """

    def __init__(
        self,
        *,
        family: str,
        source: str | None,
        sample_rate: int,
        max_input_s: float,
        embed_dim: int,
        layers: list[LayerSpec],
        pooling: str,
        window_s: float | None,
        hop_s: float | None,
        contract: InputContract,
        n_special_tokens: int = 0,
        min_input_samples: int = 1,
    ):
        super().__init__()
        self.family, self.source, self.contract = family, source, contract
        self._caller_applied_contract = False  # see contract_applied_by_caller
        self.sample_rate, self.max_input_s, self.embed_dim = (
            int(sample_rate),
            float(max_input_s),
            int(embed_dim),
        )
        self.layers = layers
        self.layer_names = [str(layer) for layer in layers]
        if pooling not in POOLERS:
            raise ValueError(f"backbone pooling must be one of {sorted(POOLERS)}, got {pooling!r}")
        if pooling == "cls" and n_special_tokens == 0:
            raise ValueError(f"pooling 'cls' needs a model with a CLS token; {family}:{source} has none")
        self.pooling, self.n_special_tokens = pooling, n_special_tokens
        window_s = self.max_input_s if window_s is None else float(window_s)
        if not 0 < window_s <= self.max_input_s:
            raise ValueError(
                f"backbone window_s={window_s} must be in (0, {self.max_input_s}] (the backbone's maximum input)"
            )
        hop_s = window_s if hop_s is None else float(hop_s)
        if hop_s <= 0:
            raise ValueError(f"backbone hop_s must be positive, got {hop_s}")
        self.window_s, self.hop_s = window_s, hop_s
        self.window = int(round(window_s * self.sample_rate))
        self.hop = max(1, int(round(hop_s * self.sample_rate)))
        self.min_input_samples = min(int(min_input_samples), self.window)

    @abc.abstractmethod
    def frame_features(self, waveforms: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor]:
        """The backbone contract: one pass over clips no longer than ``max_input_s``.

        Args:
            waveforms: [B, N] float32 at ``sample_rate``, zero beyond each clip's length.
            lengths: [B] int64 valid samples per clip (each >= ``min_input_samples``).

        Returns:
            frames: one [B, T, D] tensor per selected layer (``layer_names`` order), special tokens first;
            mask: [B, T] bool, True on frames of real audio.
        """

    def finish(self, layer_name: str, pooled: Tensor) -> Tensor:
        """Per-layer step after pooling (identity here; resemblyzer L2-normalises its speaker embedding)."""
        return pooled

    def embed_layers(self, waveforms: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Pooled embeddings of every selected layer.

        Args:
            waveforms: [B, N] float32 zero-padded clips at ``sample_rate``.
            lengths: [B] int64 valid samples per clip.

        Returns:
            {layer_name: [B, D] float32}, windows of long clips averaged.
        """
        # The contract sees whole clips: resemblyzer levels a whole utterance before cutting its partials, so a
        # quiet window of a long clip keeps its level relative to the rest.
        if not self._caller_applied_contract:
            waveforms, lengths = self.contract.apply(waveforms, lengths, self.sample_rate)
        waveforms, lengths = self._prepare(waveforms, lengths)
        windows, window_lengths, counts = cut_windows(waveforms, lengths, self.window, self.hop)
        frames, mask = self.frame_features(windows, window_lengths)
        embeddings = {}
        for name, layer_frames in zip(self.layer_names, frames, strict=True):
            pooled = self.finish(name, pool(layer_frames, mask, self.pooling, self.n_special_tokens))
            embeddings[name] = self.finish(name, average_windows(pooled, counts))
        return embeddings

    @contextlib.contextmanager
    def contract_applied_by_caller(self):
        """Inside this block ``embed_layers`` skips the input contract: the caller applied it to whole clips
        before cutting training crops from them (a crop must not be levelled again on its own)."""
        previous, self._caller_applied_contract = self._caller_applied_contract, True
        try:
            yield
        finally:
            self._caller_applied_contract = previous

    def forward(self, waveforms: Tensor, lengths: Tensor) -> Tensor:
        """[B, N] float32 + [B] int64 -> [B, D] pooled embedding of the first selected layer (differentiable)."""
        return self.embed_layers(waveforms, lengths)[self.layer_names[0]]

    def _prepare(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        # Zero everything beyond each clip (frames near a clip's end must not see augmented padding) and
        # zero-pad clips shorter than the backbone's receptive field up to it (those zeros count as audio).
        width = max(waveforms.shape[1], self.min_input_samples)
        inside = torch.arange(width, device=waveforms.device) < lengths.unsqueeze(1)
        return F.pad(waveforms, (0, width - waveforms.shape[1])) * inside, lengths.clamp_min(
            self.min_input_samples
        )

    def freeze(self, prefixes: list[str]) -> None:
        """Stop gradients to every parameter whose name starts with one of ``prefixes`` (e.g. "model.lstm")."""
        names = [name for name, _ in self.named_parameters()]
        for prefix in prefixes:
            matched = [name for name in names if name.startswith(prefix)]
            if not matched:
                raise ValueError(
                    f"freeze prefix {prefix!r} matches no parameter; names start like {names[:5]}"
                )
            for name, param in self.named_parameters():
                if name.startswith(prefix):
                    param.requires_grad_(False)

    def train(self, mode: bool = True) -> Encoder:
        """Train mode, except BatchNorm layers keep their pretrained statistics (tuning batches are small and
        label-balanced, so their statistics would drift the pretrained ones and make outputs batch-dependent)."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                module.eval()
        return self

    def describe(self) -> dict:
        """JSON-ready facts for metadata: family, source, layers, pooling, windowing, input contract, size."""
        return {
            "family": self.family,
            "source": self.source,
            "layer": self.layers[0] if len(self.layers) == 1 else list(self.layers),
            "layer_names": list(self.layer_names),
            "pooling": self.pooling,
            "sample_rate": self.sample_rate,
            "max_input_s": self.max_input_s,
            "window_s": self.window_s,
            "hop_s": self.hop_s,
            "embed_dim": self.embed_dim,
            "input_contract": self.contract.describe(self.sample_rate),
            "parameters": sum(p.numel() for p in self.parameters()),
        }

    @abc.abstractmethod
    def save_pretrained(self, directory: str | Path) -> None:
        """Write the backbone in its family's own loadable format."""
