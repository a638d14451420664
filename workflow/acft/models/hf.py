"""Any transformers audio encoder, by hub id or local directory, behind the ``Encoder`` contract.

Loading goes through AutoConfig / AutoFeatureExtractor / AutoModel, so the model's own feature extractor
prepares its input with the checkpoint's own settings (config ``extractor`` overrides named settings, e.g.
``{do_normalize: false}``). Two-part checkpoints keep only their audio tower (Whisper's encoder, CLAP's audio
model). An attention mask reaches the model only where its extractor says the model takes one
(``return_attention_mask``), in every adapter. How inputs become frames differs per architecture, so each kind
has a small adapter, each called as its model card calls the extractor on one clip:

- waveform models (wav2vec2, HuBERT, WavLM, data2vec-audio, ...): the extractor's ``do_normalize`` (zero mean,
  unit variance) runs per clip over its own samples, and batches are padded to the longest clip.
  Group-norm models such as wav2vec2-base get plain zero padding, as the transformers docs prescribe, and
  their outputs then depend slightly on how much padding a batch has (GroupNorm statistics and attention span
  the padding). data2vec-audio takes the mask but its stacked positional convs still see padding near a
  clip's end. Length-bucketed extraction keeps padding small.
- fixed-window models (AST, Whisper, CLAP): the feature extractor pads every clip to the model's fixed
  window (AST: Kaldi fbank standardised with the dataset mean/std, padded to max_length = 1024 frames;
  Whisper: log-mel of the 30 s frame; CLAP: 10 s by repetition, fusion or not as the model was trained), so a
  clip's input never depends on its batch; the frame mask is cropped to the frames that cover the clip.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, ClapAudioModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from .base import Encoder, LayerSpec
from .contract import InputContract

# fairseq's wav2vec 2.0 / HuBERT pre-training crop (max_sample_size 250k samples at 16 kHz): longer inputs
# are windowed rather than shown to a waveform model at lengths it never saw.
WAVEFORM_MAX_INPUT_S = 15.625

# Models whose positional conv embedding is a stack of convs: padding leaks into the last valid frames.
STACKED_POSITIONAL_CONV = {"data2vec-audio"}

# model_type of a two-part checkpoint -> attribute of the AutoModel holding its audio tower.
AUDIO_TOWERS = {"whisper": "encoder", "clap": "audio_model"}
# Towers saved on their own (save_pretrained of a tuned Whisper/CLAP) name their class in `architectures`.
TOWER_CLASSES = {"WhisperEncoder": WhisperEncoder, "ClapAudioModel": ClapAudioModel}


def _valid_frames(n_valid: Tensor, n_frames: int) -> Tensor:
    """[B] valid-frame counts -> [B, n_frames] bool prefix mask."""
    return torch.arange(n_frames, device=n_valid.device) < n_valid.unsqueeze(1)


class FrameAdapter:
    """How one kind of model turns clips into inputs and its outputs into frames and a frame mask."""

    n_special_tokens = 0  # leading tokens that are not audio frames (AST's CLS and distillation tokens)
    exact_batching = True  # a clip's frames do not depend on the rest of its batch
    min_input_samples = 1

    def __init__(self, model, extractor):
        self.model, self.extractor, self.config = model, extractor, model.config
        self.rate = int(extractor.sampling_rate)
        # The model card's contract: models trained without a mask (wav2vec2-base, Whisper, AST, CLAP) get none.
        self.passes_mask = bool(getattr(extractor, "return_attention_mask", False))

    @property
    def call_settings(self) -> dict:
        """Extractor arguments this adapter passes beyond the checkpoint's settings (recorded in metadata)."""
        return {}

    def inputs(self, clips: list[np.ndarray]) -> dict[str, Tensor]:
        """One clip per entry -> the extractor's tensors (the model card's call, batched)."""
        return dict(self.extractor(clips, sampling_rate=self.rate, return_tensors="pt"))

    def model_inputs(self, clips: list[np.ndarray]) -> dict[str, Tensor]:
        """``inputs`` without an attention mask unless the extractor says the model takes one."""
        inputs = self.inputs(clips)
        if not self.passes_mask:
            inputs.pop("attention_mask", None)
        return inputs

    @property
    def embed_dim(self) -> int:
        return int(self.config.hidden_size)

    def last_frames(self, outputs) -> Tensor:
        """Model outputs -> [B, T, D] frames of the final layer."""
        return outputs.last_hidden_state


class WaveformAdapter(FrameAdapter):
    """Raw-waveform CNN + transformer models (wav2vec2, HuBERT, WavLM, data2vec-audio, ...)."""

    max_input_s = WAVEFORM_MAX_INPUT_S

    def __init__(self, model, extractor):
        super().__init__(model, extractor)
        # Group-norm conv front ends normalise over the padded length; data2vec-audio's stacked positional convs
        # re-read padding after the first layer. Only the others batch exactly.
        self.exact_batching = (
            self.passes_mask
            and getattr(self.config, "feat_extract_norm", "layer") == "layer"
            and self.config.model_type not in STACKED_POSITIONAL_CONV
        )
        # Shortest input the model accepts: one frame through the conv receptive field, or in train mode
        # the mask_time_length frames that its SpecAugment masking needs.
        spec_augment = getattr(self.config, "apply_spec_augment", False) and self.config.mask_time_prob > 0
        needed = self.config.mask_time_length if spec_augment else 1
        for kernel, stride in reversed(
            list(zip(self.config.conv_kernel, self.config.conv_stride, strict=True))
        ):
            needed = (needed - 1) * stride + kernel
        self.min_input_samples = needed

    @property
    def call_settings(self) -> dict:
        return {"padding": "longest"}

    def inputs(self, clips: list[np.ndarray]) -> dict[str, Tensor]:
        # Always ask for the mask so the extractor normalises each clip over its own samples, not the padding:
        # each clip then gets exactly what the model card's one-clip call gives it (model_inputs drops the mask).
        return dict(
            self.extractor(
                clips, sampling_rate=self.rate, padding=True, return_attention_mask=True, return_tensors="pt"
            )
        )

    def frame_mask(self, lengths: Tensor, n_frames: int) -> Tensor:
        return _valid_frames(self.model._get_feat_extract_output_lengths(lengths), n_frames)


class ASTAdapter(FrameAdapter):
    """Audio Spectrogram Transformer: CLS + distillation token, then a frequency-major grid of patches."""

    n_special_tokens = 2

    def __init__(self, model, extractor):
        super().__init__(model, extractor)
        # The extractor's Kaldi fbank uses 25 ms frames every 10 ms (snip_edges) and pads to max_length frames.
        self.frame_length, self.frame_shift = round(0.025 * self.rate), round(0.010 * self.rate)
        self.min_input_samples = self.frame_length
        self.max_input_s = (self.frame_length + (extractor.max_length - 1) * self.frame_shift) / self.rate

    def frame_mask(self, lengths: Tensor, n_frames: int) -> Tensor:
        config = self.config
        n_freq = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
        n_time = (config.max_length - config.patch_size) // config.time_stride + 1
        fbank_frames = 1 + torch.div(lengths - self.frame_length, self.frame_shift, rounding_mode="floor")
        # A patch is valid when its first fbank frame is real audio; patch index = freq_row * n_time + time_col.
        time_valid = torch.arange(
            n_time, device=lengths.device
        ) * config.time_stride < fbank_frames.unsqueeze(1)
        special = torch.zeros(len(lengths), self.n_special_tokens, dtype=torch.bool, device=lengths.device)
        mask = torch.cat([special, time_valid.repeat(1, n_freq)], dim=1)
        if mask.shape[1] != n_frames:
            raise RuntimeError(f"AST produced {n_frames} tokens, its config implies {mask.shape[1]}")
        return mask


class WhisperAdapter(FrameAdapter):
    """Whisper's encoder: log-mel padded to its fixed window (30 s for released models), two conv layers."""

    def __init__(self, model, extractor):
        super().__init__(model, extractor)
        # The extractor's default padding="max_length" gives exactly the n_samples the encoder requires.
        self.max_input_s = extractor.n_samples / self.rate

    def frame_mask(self, lengths: Tensor, n_frames: int) -> Tensor:
        hop = self.extractor.hop_length
        mel_frames = torch.div(lengths + hop - 1, hop, rounding_mode="floor")
        return _valid_frames(self.model._get_feat_extract_output_lengths(mel_frames), n_frames)


class ClapAdapter(FrameAdapter):
    """CLAP's HTSAT audio tower. Frames: its final [B, C, F, T] map averaged over F (the mean over all frames is
    CLAP's own pooled output). Intermediate Swin stages are 2-D maps of other sizes, so only "last" is offered."""

    def __init__(self, model, extractor):
        super().__init__(model, extractor)
        self.max_input_s = extractor.nb_max_samples / self.rate

    @property
    def embed_dim(self) -> int:
        return int(self.model.audio_encoder.num_features)

    @property
    def call_settings(self) -> dict:
        # Clips never exceed the window, so truncation only picks the mel variant the model was trained on
        # (fusion: HTK filters, four stacked copies; rand_trunc: Slaney filters, one channel).
        return {"truncation": "fusion" if self.config.enable_fusion else "rand_trunc", "is_longer": False}

    def inputs(self, clips: list[np.ndarray]) -> dict[str, Tensor]:
        # The extractor draws from numpy's global RNG (it marks a random clip "longer" for fusion training):
        # its state is restored and is_longer cleared, which is what LAION-CLAP's HTSAT does in eval mode when
        # no clip exceeds the window (htsat.py: forward_features(x, longer_idx=[])), so results depend neither
        # on the batch nor on chance.
        state = np.random.get_state()
        try:
            inputs = self.extractor(
                clips,
                sampling_rate=self.rate,
                truncation=self.call_settings["truncation"],
                return_tensors="pt",
            )
        finally:
            np.random.set_state(state)
        inputs["is_longer"] = torch.zeros_like(inputs["is_longer"])
        return dict(inputs)

    def frame_mask(self, lengths: Tensor, n_frames: int) -> Tensor:
        window = self.extractor.nb_max_samples
        # "repeatpad" tiles the clip as often as it fits, then zero-pads; "repeat" fills the whole window.
        covered = {
            "repeatpad": lengths * torch.div(window, lengths, rounding_mode="floor"),
            "repeat": torch.full_like(lengths, window),
        }.get(self.extractor.padding, lengths)
        return _valid_frames(torch.ceil(covered * n_frames / window).long(), n_frames)

    def last_frames(self, outputs) -> Tensor:
        return outputs.last_hidden_state.mean(dim=2).transpose(1, 2)


ADAPTERS = {
    "wav2vec2": WaveformAdapter,
    "hubert": WaveformAdapter,
    "wavlm": WaveformAdapter,
    "data2vec-audio": WaveformAdapter,
    "audio-spectrogram-transformer": ASTAdapter,
    "whisper": WhisperAdapter,
    "clap_audio_model": ClapAdapter,
}


def load_audio_model(source: str, *, revision: str | None, trust_remote_code: bool):
    """The audio encoder of ``source`` in float32: the AutoModel, or its audio tower for two-part models."""
    hub = dict(revision=revision, trust_remote_code=trust_remote_code)
    config = AutoConfig.from_pretrained(source, **hub)
    tower_class = TOWER_CLASSES.get((config.architectures or [None])[0])
    if tower_class is not None:
        return tower_class.from_pretrained(source, revision=revision, dtype=torch.float32)
    model = AutoModel.from_pretrained(source, dtype=torch.float32, **hub)
    tower = AUDIO_TOWERS.get(config.model_type)
    return getattr(model, tower) if tower else model


def load_extractor(source: str, overrides: dict, *, revision: str | None, trust_remote_code: bool):
    """The checkpoint's feature extractor with ``overrides`` (settings it already has) replacing its own."""
    hub = dict(revision=revision, trust_remote_code=trust_remote_code)
    extractor = AutoFeatureExtractor.from_pretrained(source, **hub)
    if not overrides:
        return extractor
    settings = extractor.to_dict()
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        known = sorted(key for key, value in settings.items() if isinstance(value, (bool, int, float, str)))
        raise ValueError(
            f"backbone {source}: extractor setting(s) {unknown} are not settings of its "
            f"{type(extractor).__name__}; it has {known}"
        )
    # Passed to from_pretrained, the overrides replace saved values before __init__, so derived values
    # (Whisper's n_samples from chunk_length, mel filters from feature_size) follow them.
    return AutoFeatureExtractor.from_pretrained(source, **hub, **overrides)


def extractor_settings(extractor, adapter: FrameAdapter) -> dict:
    """The scalar settings the extractor runs with, plus the adapter's call arguments (JSON-ready)."""
    settings = {
        key: value
        for key, value in extractor.to_dict().items()
        if isinstance(value, (bool, int, float, str)) and not key.startswith("_")
    }
    return {**settings, **adapter.call_settings, "return_attention_mask": adapter.passes_mask}


def adapter_for(model, extractor) -> FrameAdapter:
    model_type = model.config.model_type
    if model_type in ADAPTERS:
        return ADAPTERS[model_type](model, extractor)
    # Other raw-waveform models (UniSpeech, SEW, ...) share wav2vec2's interface.
    if model.main_input_name == "input_values" and hasattr(model, "_get_feat_extract_output_lengths"):
        return WaveformAdapter(model, extractor)
    raise ValueError(f"backbone model_type {model_type!r} is not supported; known: {sorted(ADAPTERS)}")


class HFEncoder(Encoder):
    """A transformers audio model behind the ``Encoder`` contract.

    Layers: "last" = the model's final output (``last_hidden_state``, after any final norm); an int ``i``
    indexes ``hidden_states`` (0 = input to the first transformer block, negative counts from the end).
    """

    def __init__(
        self,
        *,
        source: str,
        sample_rate: int,
        layers: list[LayerSpec],
        pooling: str,
        window_s: float | None,
        hop_s: float | None,
        contract: InputContract,
        extractor_overrides: dict,
        revision: str | None = None,
        trust_remote_code: bool = False,
    ):
        if not source:
            raise ValueError("backbone family 'hf' needs `source` (a hub id or a local model directory)")
        hub = dict(revision=revision, trust_remote_code=trust_remote_code)
        extractor = load_extractor(source, extractor_overrides, **hub)
        if int(extractor.sampling_rate) != int(sample_rate):
            raise ValueError(
                f"backbone {source}: config sample_rate {sample_rate} != its feature extractor's "
                f"sampling_rate {extractor.sampling_rate}"
            )
        model = load_audio_model(source, **hub)
        adapter = adapter_for(model, extractor)
        self._check_layers(source, adapter, layers)
        super().__init__(
            family="hf",
            source=str(source),
            sample_rate=sample_rate,
            max_input_s=adapter.max_input_s,
            embed_dim=adapter.embed_dim,
            layers=layers,
            pooling=pooling,
            window_s=window_s,
            hop_s=hop_s,
            contract=replace(contract, extractor=extractor_settings(extractor, adapter)),
            n_special_tokens=adapter.n_special_tokens,
            min_input_samples=adapter.min_input_samples,
        )
        self.model, self.extractor, self.adapter = model, extractor, adapter
        self.revision, self.trust_remote_code = revision, trust_remote_code

    @staticmethod
    def _check_layers(source: str, adapter: FrameAdapter, layers: list[LayerSpec]) -> None:
        indices = [layer for layer in layers if layer != "last"]
        if indices and isinstance(adapter, ClapAdapter):
            raise ValueError(f"backbone {source}: CLAP offers only layer 'last', got {indices}")
        n_states = adapter.config.num_hidden_layers + 1
        for index in indices:
            if not -n_states <= index < n_states:
                raise ValueError(
                    f"backbone {source}: layer {index} outside hidden_states [-{n_states}, {n_states})"
                )

    def frame_features(self, waveforms: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor]:
        host = waveforms.detach().float().cpu().numpy()
        clips = [clip[:n] for clip, n in zip(host, lengths.tolist(), strict=True)]
        device = waveforms.device
        inputs = {
            key: value.to(device, torch.float32 if value.is_floating_point() else value.dtype)
            for key, value in self.adapter.model_inputs(clips).items()
        }
        wants_hidden = any(layer != "last" for layer in self.layers)
        outputs = self.model(**inputs, output_hidden_states=wants_hidden)
        last = self.adapter.last_frames(outputs)
        frames = [last if layer == "last" else outputs.hidden_states[layer] for layer in self.layers]
        return frames, self.adapter.frame_mask(lengths.to(device), last.shape[1])

    def describe(self) -> dict:
        return {
            **super().describe(),
            "model_type": self.model.config.model_type,
            "model_class": type(self.model).__name__,
            "revision": self.revision,
            "trust_remote_code": self.trust_remote_code,
            "exact_batching": self.adapter.exact_batching,
        }

    def save_pretrained(self, directory: str | Path) -> None:
        """The model (or its audio tower) and its feature extractor, loadable as ``source`` again."""
        self.model.save_pretrained(directory)
        self.extractor.save_pretrained(directory)
