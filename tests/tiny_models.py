"""Tiny random-init transformers audio models, saved like hub checkpoints (model AND feature extractor).

Each builder writes a directory that ``build_encoder`` (given the entry ``save_tiny_model`` returns, filled by
``schema_defaults.backbone_config``) loads through the same AutoConfig/AutoFeatureExtractor/AutoModel path a hub id takes, so the hub path is exercised offline.
Sizes are the smallest that keep each architecture's shape rules satisfied; everything runs in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as tf

# Shared transformer sizes: small enough to be fast, odd intermediate size to catch shape mix-ups.
_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
_TINY_CONV = dict(
    conv_dim=(16, 16, 16),
    conv_kernel=(10, 4, 4),
    conv_stride=(5, 4, 4),  # 80 samples per frame (200 frames/s): short sequences, fast attention
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    vocab_size=12,
)


def _waveform_extractor(return_attention_mask: bool) -> tf.Wav2Vec2FeatureExtractor:
    return tf.Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=return_attention_mask,
    )


def _wav2vec2_group():
    # Like facebook/wav2vec2-base: group-norm conv front end, the extractor returns no attention mask.
    config = tf.Wav2Vec2Config(**_TINY, **_TINY_CONV, feat_extract_norm="group", do_stable_layer_norm=False)
    return tf.Wav2Vec2Model(config), _waveform_extractor(False)


def _wav2vec2_layer():
    # Like facebook/wav2vec2-large-lv60: layer-norm conv front end that honours the attention mask.
    config = tf.Wav2Vec2Config(**_TINY, **_TINY_CONV, feat_extract_norm="layer", do_stable_layer_norm=True)
    return tf.Wav2Vec2Model(config), _waveform_extractor(True)


def _hubert():
    config = tf.HubertConfig(**_TINY, **_TINY_CONV, feat_extract_norm="layer", do_stable_layer_norm=True)
    return tf.HubertModel(config), _waveform_extractor(True)


def _wavlm():
    config = tf.WavLMConfig(
        **_TINY, **_TINY_CONV, feat_extract_norm="layer", num_buckets=16, max_bucket_distance=20
    )
    return tf.WavLMModel(config), _waveform_extractor(True)


def _data2vec_audio():
    config = tf.Data2VecAudioConfig(
        **{**_TINY_CONV, "num_conv_pos_embeddings": 5}, **_TINY, conv_pos_kernel_size=5
    )
    return tf.Data2VecAudioModel(config), _waveform_extractor(True)


def _ast():
    # 32 mel bins x 100 frames (about 1 s) -> 2 x 9 patches of 16 x 16 plus the CLS and distillation tokens.
    config = tf.ASTConfig(
        **_TINY, patch_size=16, frequency_stride=16, time_stride=10, max_length=100, num_mel_bins=32
    )
    extractor = tf.ASTFeatureExtractor(num_mel_bins=32, max_length=100, sampling_rate=16000)
    return tf.ASTModel(config), extractor


def _whisper():
    # A 1 s window instead of 30 s: 100 log-mel frames -> 50 encoder positions.
    config = tf.WhisperConfig(
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=37,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=37,
        num_mel_bins=16,
        max_source_positions=50,
        max_target_positions=8,
        vocab_size=60,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )
    extractor = tf.WhisperFeatureExtractor(feature_size=16, chunk_length=1, sampling_rate=16000)
    return tf.WhisperModel(config), extractor


def _clap():
    # The full two-tower ClapModel, as laion/clap-* checkpoints ship it; the encoder keeps the audio tower.
    audio = dict(
        spec_size=64,
        num_mel_bins=16,
        patch_size=4,
        patch_stride=(4, 4),
        window_size=4,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        patch_embeds_hidden_size=16,
        hidden_size=32,
        projection_dim=16,
        enable_fusion=False,
    )
    text = dict(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20
    )
    config = tf.ClapConfig(audio_config=audio, text_config=text, projection_dim=16)
    # truncation="rand_trunc": the mel variant an unfused model takes (the fusion variant stacks four channels).
    extractor = tf.ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=48000,
        hop_length=480,
        max_length_s=1,
        fft_window_size=1024,
        truncation="rand_trunc",
    )
    return tf.ClapModel(config), extractor


TINY_BUILDERS = {
    "wav2vec2_group": _wav2vec2_group,
    "wav2vec2_layer": _wav2vec2_layer,
    "hubert": _hubert,
    "wavlm": _wavlm,
    "data2vec_audio": _data2vec_audio,
    "ast": _ast,
    "whisper": _whisper,
    "clap": _clap,
}


def save_tiny_model(family_name: str, directory: str | Path, seed: int = 0) -> dict:
    """Save a tiny random-init model and its feature extractor; return a backbone config that loads it.

    Args:
        family_name: a key of ``TINY_BUILDERS`` (e.g. "wav2vec2_group").
        directory: where ``save_pretrained`` writes the model and the feature extractor.
        seed: torch seed for the random initialisation.

    Returns:
        the ``backbones`` entry a user writes (family "hf", source = directory, matching sample_rate); fill it
        with ``schema_defaults.backbone_config(**entry)`` before calling ``acft.models.build_encoder``.
    """
    if family_name not in TINY_BUILDERS:
        raise ValueError(f"unknown tiny model {family_name!r}; known: {sorted(TINY_BUILDERS)}")
    torch.manual_seed(seed)
    model, extractor = TINY_BUILDERS[family_name]()
    directory = Path(directory)
    model.save_pretrained(directory)
    extractor.save_pretrained(directory)
    return {"family": "hf", "source": str(directory), "sample_rate": int(extractor.sampling_rate)}
