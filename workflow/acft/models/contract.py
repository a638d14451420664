"""A backbone's input contract: what its authors do to a clip before their network sees it.

Sample rate and channels are settled by the audio cache (mono = channel mean, resampled to the backbone's
``sample_rate``); the two waveform steps below run inside ``Encoder.embed_layers`` on the whole clip, before long
clips are cut into windows, so tuning and extraction apply them identically. They follow resemblyzer's
``preprocess_wav`` (resemblyzer 0.1.4, ``audio.py``): ``normalize_volume(wav, -30, increase_only=True)`` and then
``trim_long_silences``. Feature-extractor settings (hf) are applied by the extractor itself and only recorded here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.ndimage import binary_dilation
from torch import Tensor

TARGET_DBFS = -30.0  # resemblyzer's audio_norm_target_dBFS
INT16_MAX = 2**15 - 1  # resemblyzer measures level and feeds webrtcvad on this 16-bit scale
VAD_WINDOW_MS = 30  # resemblyzer's vad_window_length (webrtcvad takes 10, 20 or 30 ms frames)
VAD_SMOOTHING = 8  # vad_moving_average_width: windows averaged before thresholding at 0.5
VAD_MAX_SILENCE = 6  # vad_max_silence_length: voiced regions are dilated by this many windows
VAD_MODE = 3  # webrtcvad's most aggressive mode, as resemblyzer uses
VAD_RATES = (8000, 16000, 32000, 48000)  # the only rates webrtcvad accepts


def normalize_level(waveforms: Tensor, lengths: Tensor) -> Tensor:
    """Raise each clip to -30 dBFS RMS over its real samples; never lower it (resemblyzer's ``increase_only``).

    The GE2E front end is a power (not log) mel, so recording level reaches the network unchanged; resemblyzer
    removes it this way before every utterance. A silent clip stays silent (resemblyzer would divide by zero).

    Args:
        waveforms: [B, N] float32, anything beyond a clip's length is left scaled but never measured.
        lengths: [B] int64 real samples per clip.

    Returns:
        [B, N] the clips times their gain (>= 1).
    """
    inside = torch.arange(waveforms.shape[1], device=waveforms.device) < lengths.unsqueeze(1)
    mean_square = (waveforms.float().square() * inside).sum(dim=1) / lengths.clamp_min(1)
    rms = mean_square.sqrt()  # [B], full scale = 1.0
    target = 10.0 ** (TARGET_DBFS / 20.0)
    gain = torch.where(rms > 0, (target / rms).clamp_min(1.0), torch.ones_like(rms))
    return waveforms * gain.unsqueeze(1).to(waveforms.dtype)


def voiced_samples(clip: np.ndarray, sample_rate: int) -> np.ndarray:
    """Indices of the samples resemblyzer's ``trim_long_silences`` keeps: webrtcvad on 30 ms windows, smoothed,
    dilated, so silences longer than about 0.2 s are cut and the tail beyond the last whole window is dropped.

    Two departures, both where resemblyzer would fail: a clip shorter than one window, or one in which no window
    is voiced (music, noise), is kept whole instead of becoming empty; and 16-bit conversion saturates instead
    of wrapping around.

    Args:
        clip: [n] float32 at ``sample_rate`` (one of ``VAD_RATES``).

    Returns:
        int64 [m] increasing sample indices, m <= n.
    """
    import webrtcvad  # only needed when trim_silence is on; checked when the encoder is built

    window = VAD_WINDOW_MS * sample_rate // 1000
    n_windows = len(clip) // window
    if n_windows == 0:
        return np.arange(len(clip))
    pcm = np.clip(np.round(clip[: n_windows * window] * INT16_MAX), -INT16_MAX - 1, INT16_MAX).astype(
        np.int16
    )
    vad = webrtcvad.Vad(VAD_MODE)
    flags = np.array(
        [vad.is_speech(pcm[i * window : (i + 1) * window].tobytes(), sample_rate) for i in range(n_windows)],
        dtype=np.float64,
    )
    # resemblyzer's moving average: zero padding of (w - 1) // 2 before and w // 2 after, then a box filter.
    padded = np.pad(flags, ((VAD_SMOOTHING - 1) // 2, VAD_SMOOTHING // 2))
    smoothed = np.convolve(padded, np.ones(VAD_SMOOTHING), mode="valid") / VAD_SMOOTHING
    voiced = binary_dilation(np.round(smoothed).astype(bool), np.ones(VAD_MAX_SILENCE + 1))
    if not voiced.any():
        return np.arange(len(clip))
    return np.flatnonzero(np.repeat(voiced, window))


def trim_silences(waveforms: Tensor, lengths: Tensor, sample_rate: int) -> tuple[Tensor, Tensor]:
    """``voiced_samples`` for every clip of a batch; the kept samples are gathered on the batch's device.

    Args:
        waveforms: [B, N] float32; lengths: [B] int64.

    Returns:
        [B, N'] zero-padded trimmed clips (N' <= N) and their [B] new lengths.
    """
    host = waveforms.detach().float().cpu().numpy()
    pieces = [
        waveforms[row, torch.from_numpy(voiced_samples(host[row, :n], sample_rate)).to(waveforms.device)]
        for row, n in enumerate(lengths.tolist())
    ]
    new_lengths = torch.tensor([len(piece) for piece in pieces], dtype=lengths.dtype, device=lengths.device)
    return torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True), new_lengths


def check_trim_available(sample_rate: int) -> None:
    """Fail when the encoder is built, not in the middle of a run, if silence trimming cannot work."""
    if sample_rate not in VAD_RATES:
        raise ValueError(f"trim_silence needs a sample rate webrtcvad accepts {VAD_RATES}, got {sample_rate}")
    try:
        import webrtcvad  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "trim_silence uses webrtcvad (as resemblyzer does): pip install webrtcvad-wheels (see requirements.txt)"
        ) from error


@dataclass(frozen=True)
class InputContract:
    """The steps a backbone's input goes through before its network, as resolved from the config.

    Silence trimming uses webrtcvad rather than an energy threshold: it is what resemblyzer's authors ran, so a
    trimmed clip is sample for sample the one their ``preprocess_wav`` returns, and webrtcvad-wheels is a small
    self-contained binary wheel. It is off unless asked for: it changes a clip's length and timing, which tasks
    other than speaker identity (word, rhythm, environmental sounds) may depend on.
    """

    normalize_level: bool  # raise every clip to -30 dBFS RMS, increase only (resemblyzer's preprocess_wav)
    trim_silence: bool  # cut silences longer than ~0.2 s with webrtcvad (resemblyzer's trim_long_silences)
    extractor: dict = field(default_factory=dict)  # hf: feature-extractor settings in force (applied by it)

    def apply(self, waveforms: Tensor, lengths: Tensor, sample_rate: int) -> tuple[Tensor, Tensor]:
        """[B, N] + [B] -> the clips after the enabled steps, in resemblyzer's order (level, then trim)."""
        if self.normalize_level:
            waveforms = normalize_level(waveforms, lengths)
        if self.trim_silence:
            waveforms, lengths = trim_silences(waveforms, lengths, sample_rate)
        return waveforms, lengths

    def describe(self, sample_rate: int) -> dict:
        """JSON-ready contract for metadata."""
        return {
            "sample_rate": sample_rate,
            "channels": "mono (channel mean, in the audio cache)",
            "normalize_level": f"{TARGET_DBFS:g} dBFS RMS, increase only" if self.normalize_level else None,
            "trim_silence": "webrtcvad, resemblyzer's trim_long_silences" if self.trim_silence else None,
            "extractor": dict(self.extractor),
        }
