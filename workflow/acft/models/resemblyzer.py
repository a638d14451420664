"""Resemblyzer's GE2E speaker encoder, rebuilt here around the weights its PyPI wheel ships.

resemblyzer==0.1.4 is installed without its dependencies, and this module never imports it: we only locate its
``pretrained.pt`` (Apache-2.0) and load the tensors into our own module (the tests import it as a reference). Architecture and front end
follow resemblyzer's ``voice_encoder.py`` and ``audio.py`` (Wan et al. 2018, "Generalized End-to-End Loss for
Speaker Verification"): a power (not log) 40-band Slaney mel spectrogram at 16 kHz with a 25 ms window and a
10 ms hop, a 3-layer LSTM(40 -> 256), Linear(256 -> 256), ReLU and L2 normalisation. resemblyzer reads the last
LSTM step of 1.6 s partial utterances; ``pooling: last`` with the default 1.6 s window does the same, and
``pooling: mean`` (the default) averages the per-frame embeddings instead.

Input contract (``contract.py``), as resemblyzer's ``preprocess_wav`` prepares a wav: 16 kHz mono (the audio
cache), raised to -30 dBFS RMS and never lowered (config ``normalize_level``, on by default: the mel is power,
not log, so level would otherwise reach the network as a speaker cue or a nuisance), then long silences cut with
webrtcvad (``trim_silence``, off by default). Both run on the whole clip before it is cut into 1.6 s windows,
as resemblyzer levels the whole wav before ``embed_utterance`` cuts its partials. With the same 16 kHz clip,
``pooling: last`` and a clip of at most 1.6 s, the embedding equals ``VoiceEncoder`` on ``preprocess_wav``'s
output (tests/test_resemblyzer.py). Not reproduced: for clips shorter than 1.6 s, the zero padding
``embed_utterance`` adds before its single partial (we read the clip's last real frame instead), and its
overlapping partials of longer clips (windows here are ``window_s``/``hop_s``, each with its own mel edges).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import torch
import torchaudio
from safetensors.torch import save_file
from torch import Tensor, nn

from .base import Encoder, LayerSpec
from .contract import InputContract

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms window
HOP = 160  # 10 ms hop
N_MELS = 40
HIDDEN = 256
LSTM_LAYERS = 3
PARTIAL_S = 1.6  # resemblyzer's partial utterance: 160 frames
CHECKPOINT_EXTRA_KEYS = ("similarity_weight", "similarity_bias")  # GE2E loss scalars, not part of the encoder


class MelFrontEnd(nn.Module):
    """librosa-style power mel spectrogram (``librosa.feature.melspectrogram`` defaults, as resemblyzer calls it).

    Centered frames with zero padding, periodic Hann window, |STFT|^2, Slaney-scale filters with Slaney norm.
    The window and filter bank are non-persistent buffers: fixed constants, rebuilt here, never checkpointed.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        filters = torchaudio.functional.melscale_fbanks(
            n_freqs=N_FFT // 2 + 1,
            f_min=0.0,
            f_max=SAMPLE_RATE / 2,
            n_mels=N_MELS,
            sample_rate=SAMPLE_RATE,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("filters", filters, persistent=False)

    @staticmethod
    def n_frames(lengths: Tensor) -> Tensor:
        """Frames of centered STFT for clips of ``lengths`` samples: 1 + n // hop."""
        return 1 + torch.div(lengths, HOP, rounding_mode="floor")

    def forward(self, waveforms: Tensor) -> Tensor:
        """[B, N] float32 at 16 kHz -> [B, 1 + N // 160, 40] power mel frames."""
        spectrum = torch.stft(
            waveforms.float(),
            n_fft=N_FFT,
            hop_length=HOP,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spectrum.real.square() + spectrum.imag.square()  # [B, F, T]
        return power.transpose(1, 2) @ self.filters


class GE2ENetwork(nn.Module):
    """The trainable part: three stacked LSTM layers (kept separate so every layer's output is reachable)
    and the projection to the speaker-embedding space."""

    def __init__(self):
        super().__init__()
        self.lstm_layers = nn.ModuleList(
            nn.LSTM(N_MELS if i == 0 else HIDDEN, HIDDEN, num_layers=1, batch_first=True)
            for i in range(LSTM_LAYERS)
        )
        self.linear = nn.Linear(HIDDEN, HIDDEN)

    def lstm_outputs(self, mels: Tensor, upto: int) -> list[Tensor]:
        """[B, T, 40] mels -> outputs of LSTM layers 1..upto, each [B, T, 256]."""
        outputs, hidden = [], mels
        for lstm in self.lstm_layers[:upto]:
            hidden, _ = lstm(hidden)
            outputs.append(hidden)
        return outputs

    def embedding_frames(self, last_lstm: Tensor) -> Tensor:
        """[B, T, 256] last-LSTM outputs -> [B, T, 256] per-frame ReLU(Linear(.)) (before L2 norm)."""
        return torch.relu(self.linear(last_lstm))


def packaged_version() -> str:
    """Installed resemblyzer version, read from its distribution metadata (no import)."""
    return importlib.metadata.version("resemblyzer")


def packaged_checkpoint() -> Path:
    """Path of ``pretrained.pt`` inside the installed resemblyzer wheel, found without importing resemblyzer."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "resemblyzer is not installed; its packaged weights come from `pip install --no-deps resemblyzer==0.1.4`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise FileNotFoundError(f"resemblyzer is installed but {path} is missing")
    return path


def to_network_state(model_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """resemblyzer's ``model_state`` (one 3-layer ``lstm``) -> ``GE2ENetwork`` keys (one LSTM per layer).

    The two ``similarity_*`` scalars belong to the GE2E loss and are dropped; every other tensor is renamed.
    """
    state = {}
    for key, tensor in model_state.items():
        if key in CHECKPOINT_EXTRA_KEYS:
            continue
        if key.startswith("lstm."):
            name, layer = key.removeprefix("lstm.").rsplit("_l", 1)
            key = f"lstm_layers.{layer}.{name}_l0"
        state[key] = tensor
    return state


def load_packaged_network() -> GE2ENetwork:
    """A ``GE2ENetwork`` holding the packaged weights, loaded strictly (every tensor used, none missing)."""
    checkpoint = torch.load(packaged_checkpoint(), map_location="cpu", weights_only=True)
    network = GE2ENetwork()
    network.load_state_dict(to_network_state(checkpoint["model_state"]), strict=True)
    return network


class ResemblyzerEncoder(Encoder):
    """GE2E speaker encoder as an ``Encoder``.

    Layers: "last" = the per-frame speaker embedding ReLU(Linear(LSTM_3)), L2-normalised after pooling as
    resemblyzer does; 1..3 (or -3..-1) = the raw output of that LSTM layer (0, the mel input, is refused).
    Batching is exact: the front end pads with zeros like a single clip and the LSTM is causal, so padding
    never reaches a valid frame.
    """

    def __init__(
        self,
        *,
        layers: list[LayerSpec],
        pooling: str,
        window_s: float | None,
        hop_s: float | None,
        contract: InputContract,
    ):
        for layer in layers:
            if layer != "last" and not (1 <= abs(layer) <= LSTM_LAYERS):
                raise ValueError(
                    f"resemblyzer layer {layer} does not exist: use 'last' or an LSTM layer 1..{LSTM_LAYERS} "
                    f"(or -{LSTM_LAYERS}..-1)"
                )
        super().__init__(
            family="resemblyzer",
            source=f"resemblyzer=={packaged_version()}/{packaged_checkpoint().name}",
            sample_rate=SAMPLE_RATE,
            max_input_s=PARTIAL_S,
            embed_dim=HIDDEN,
            layers=layers,
            pooling=pooling,
            window_s=window_s,
            hop_s=hop_s,
            contract=contract,
        )
        self.front_end = MelFrontEnd()
        self.model = load_packaged_network()

    def _lstm_index(self, layer: LayerSpec) -> int:
        """0-based LSTM layer feeding ``layer``."""
        return LSTM_LAYERS - 1 if layer == "last" else (layer - 1 if layer > 0 else LSTM_LAYERS + layer)

    def frame_features(self, waveforms: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor]:
        mels = self.front_end(waveforms)
        mask = torch.arange(mels.shape[1], device=mels.device) < MelFrontEnd.n_frames(lengths).unsqueeze(1)
        outputs = self.model.lstm_outputs(
            mels, upto=1 + max(self._lstm_index(layer) for layer in self.layers)
        )
        frames = [
            self.model.embedding_frames(outputs[-1]) if layer == "last" else outputs[self._lstm_index(layer)]
            for layer in self.layers
        ]
        return frames, mask

    def finish(self, layer_name: str, pooled: Tensor) -> Tensor:
        # resemblyzer's embeddings live on the unit sphere (ReLU then L2); raw LSTM layers are left as they are.
        return torch.nn.functional.normalize(pooled, dim=-1) if layer_name == "last" else pooled

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``model.safetensors`` (this encoder's state dict) and ``config.json`` (its description)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / "model.safetensors")
        (directory / "config.json").write_text(json.dumps(self.describe(), indent=2, sort_keys=True) + "\n")
