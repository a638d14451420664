"""Waveform-side augmentation of training views: random crop, gain, additive noise and time masking.

Every op acts on a zero-padded batch [B, N] with its valid lengths [B] and touches only valid samples; all
randomness comes from an explicit ``torch.Generator`` so a resumed epoch replays the same views.

SpecAugment: the Encoder contract exposes no spectrogram hook (it maps waveforms to embeddings), so torchaudio's
FrequencyMasking / TimeMasking cannot be applied to its features. We therefore do the honest subset: time
masking on the waveform (a random span of each clip zeroed), and no frequency masking.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass(frozen=True)
class AugmentConfig:
    """The config's ``tune.augment`` section (defaults and ranges: the config schema); None turns an op off."""

    random_crop_s: float | None  # crop each view to this many seconds at a random offset
    gain_db: float | None  # random gain drawn uniformly in [-gain_db, +gain_db] dB
    noise_snr_db: float | None  # white noise at this signal-to-noise ratio
    time_mask_s: float | None  # zero a random span of up to this many seconds

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        """Build from the validated section; a missing or unknown key raises ValueError naming it."""
        known = [f.name for f in fields(cls)]
        unknown, missing = sorted(set(d) - set(known)), sorted(set(known) - set(d))
        if unknown or missing:
            raise ValueError(f"tune.augment: unknown key(s) {unknown}, missing key(s) {missing}")
        return cls(**d)


def random_crop(waveforms: Tensor, lengths: Tensor, n_samples: int, generator: torch.Generator):
    """Cut every clip longer than ``n_samples`` to a window of that size at a uniform random offset.

    Args:
        waveforms: [B, N] zero-padded batch; lengths: [B] valid samples per clip.
        n_samples: window length; shorter clips are kept whole.
        generator: CPU generator for the offsets.

    Returns:
        ([B, min(N, n_samples)] cropped batch, [B] new lengths).
    """
    new_lengths = lengths.clamp(max=n_samples)
    slack = lengths - new_lengths
    starts = (torch.rand(len(lengths), generator=generator) * (slack + 1)).long().clamp(max=slack)
    width = int(new_lengths.max()) if len(lengths) else 0
    offsets = torch.arange(width)
    index = (starts[:, None] + offsets[None, :]).clamp(max=max(waveforms.shape[1] - 1, 0))
    cropped = waveforms.gather(1, index) * (offsets[None, :] < new_lengths[:, None])
    return cropped, new_lengths


def augment(
    waveforms: Tensor, lengths: Tensor, cfg: AugmentConfig, sample_rate: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Apply the enabled ops in order crop -> gain -> noise -> time mask.

    Args:
        waveforms: [B, N] float32 zero-padded batch (CPU); lengths: [B] int64.
        cfg: which ops run, with their strengths.
        sample_rate: samples per second, to convert the config's seconds.
        generator: CPU generator for every random draw.

    Returns:
        ([B, N'] augmented batch, [B] lengths).
    """
    if cfg.random_crop_s is not None:
        waveforms, lengths = random_crop(
            waveforms, lengths, max(1, round(cfg.random_crop_s * sample_rate)), generator
        )
    batch = len(lengths)
    valid = (torch.arange(waveforms.shape[1])[None, :] < lengths[:, None]).to(waveforms.dtype)
    if cfg.gain_db is not None:
        gain_db = (torch.rand(batch, generator=generator) * 2 - 1) * cfg.gain_db
        waveforms = waveforms * (10.0 ** (gain_db / 20.0))[:, None]
    if cfg.noise_snr_db is not None:
        signal_power = (waveforms.square() * valid).sum(dim=1) / lengths.clamp_min(1)
        noise_std = (signal_power / 10.0 ** (cfg.noise_snr_db / 10.0)).sqrt()
        noise = torch.randn(waveforms.shape, generator=generator) * noise_std[:, None]
        waveforms = waveforms + noise * valid
    if cfg.time_mask_s is not None:
        span = (torch.rand(batch, generator=generator) * cfg.time_mask_s * sample_rate).long()
        span = torch.minimum(span, lengths)
        start = (
            (torch.rand(batch, generator=generator) * (lengths - span + 1)).long().clamp(max=lengths - span)
        )
        positions = torch.arange(waveforms.shape[1])[None, :]
        masked = (positions >= start[:, None]) & (positions < (start + span)[:, None])
        waveforms = waveforms.masked_fill(masked, 0.0)
    return waveforms, lengths
