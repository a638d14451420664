"""The backbone contract over every registry entry, pooling, layers, windowing and checkpoint round trips.

Every transformers family is a tiny random-init model saved with save_pretrained (model and feature extractor)
and loaded back through ``build_encoder``, the path a hub id takes. References are independent: the model called
directly through transformers (its extractor called as the model card calls it, on real FSDD speech),
brute-force loops, and frame counts of unpadded single clips.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
import transformers
import yaml
from safetensors.torch import load_file, save_file

from acft.models import FAMILIES, build_encoder
from acft.models.contract import check_trim_available
from acft.models.pooling import average_windows, cut_windows, last_valid, masked_mean, pool, window_starts
from acft.models.registry import KEYS

from conftest import REPO

sys.path.insert(0, str(Path(__file__).parent))
from schema_defaults import backbone_config  # noqa: E402

from tiny_models import TINY_BUILDERS, save_tiny_model  # noqa: E402

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")

ALL_BACKBONES = [*TINY_BUILDERS, "resemblyzer"]
# Models whose frames depend on batch padding (see acft.models.hf): group-norm wav2vec2 gets no mask,
# data2vec-audio's stacked positional convs re-read padding.
PADDING_SENSITIVE = {"wav2vec2_group", "data2vec_audio"}
# Models that pad every clip to a fixed window, so a lone clip's frame count is the window's, not the clip's.
FIXED_WINDOW = {"ast", "whisper", "clap"}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("tiny")
    return {name: save_tiny_model(name, root / name) for name in TINY_BUILDERS}


def backbone_cfg(tiny_dirs, name: str, **overrides) -> dict:
    """The full entry as the schema fills it; ``overrides`` replace keys afterwards, unvalidated, so a test
    reaches ``build_encoder``'s own refusals."""
    base = {"family": "resemblyzer"} if name == "resemblyzer" else dict(tiny_dirs[name])
    return {**backbone_config(**base), **overrides}


def padded_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, max] noise clips (a tone plus noise, zero beyond each length) and [B] lengths."""
    generator = torch.Generator().manual_seed(seed)
    n = max(lengths)
    t = torch.arange(n) / 16000
    waveforms = 0.1 * torch.sin(2 * math.pi * 440 * t) + 0.05 * torch.randn(
        len(lengths), n, generator=generator
    )
    lengths_t = torch.tensor(lengths)
    return waveforms * (torch.arange(n) < lengths_t.unsqueeze(1)), lengths_t


def expected_fixed_window_frames(name: str, encoder, n: int, n_frames: int) -> int:
    """Valid frames of a fixed-window model, from its documented geometry."""
    if name == "ast":  # Kaldi fbank 25 ms / 10 ms; 16 x 16 patches every 10 frames; 2 frequency rows
        fbank = 1 + (n - 400) // 160
        return 2 * sum(1 for t in range(9) if t * 10 < fbank)
    if name == "whisper":  # log-mel frame every 160 samples, then a stride-2 conv
        return math.ceil(math.ceil(n / 160) / 2)
    # clap: "repeatpad" tiles the clip floor(window / n) times inside the 1 s window
    window = encoder.extractor.nb_max_samples
    return math.ceil(n * (window // n) * n_frames / window)


# ------------------------------------------------------------------------------------------ the contract


def test_registry_is_a_short_table_with_two_families():
    assert set(FAMILIES) == {"resemblyzer", "hf"}
    with pytest.raises(ValueError, match="unknown backbone family 'beats'"):
        build_encoder({"family": "beats"})


SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def test_registry_takes_the_schemas_keys_and_refuses_a_partial_entry():
    properties = yaml.safe_load(SCHEMA.read_text())["properties"]["backbones"]["additionalProperties"][
        "properties"
    ]
    assert set(KEYS) == set(properties)  # the schema holds the defaults; the registry only the key names
    with pytest.raises(ValueError, match=r"lacks \['source', 'sample_rate'"):
        build_encoder({"family": "resemblyzer"})


def test_schema_fills_the_contract_keys_and_refuses_extractor_settings_for_resemblyzer():
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = {"backbones": {"r": {"family": "resemblyzer"}, "w": {"family": "hf", "source": "x", "extractor": {"do_normalize": False}}}}  # fmt: skip
    validate(config, str(SCHEMA))
    assert (
        config["backbones"]["r"]["normalize_level"] is None
        and config["backbones"]["r"]["trim_silence"] is False
    )
    assert config["backbones"]["w"]["extractor"] == {"do_normalize": False}
    config = {"backbones": {"r": {"family": "resemblyzer", "extractor": {"do_normalize": False}}}}
    with pytest.raises(WorkflowError, match="expected to be empty"):
        validate(config, str(SCHEMA))


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_contract_shapes_mask_determinism_and_batching(tiny_dirs, name):
    encoder = build_encoder(backbone_cfg(tiny_dirs, name))
    rate = encoder.sample_rate
    assert rate == (48000 if name == "clap" else 16000)
    window = min(encoder.max_input_s, 1.0)
    lengths = [int(0.3 * rate), int(0.7 * rate), int(0.95 * window * rate)]
    waveforms, lengths_t = padded_batch(lengths)

    with torch.inference_mode():
        frames, mask = encoder.frame_features(waveforms, lengths_t)
        first = encoder.embed_layers(waveforms, lengths_t)
        second = encoder.embed_layers(waveforms, lengths_t)
        singles = [
            encoder.embed_layers(waveforms[i : i + 1, :n], lengths_t[i : i + 1])
            for i, n in enumerate(lengths)
        ]
        single_frames = [encoder.frame_features(waveforms[i : i + 1, :n], lengths_t[i : i + 1]) for i, n in enumerate(lengths)]  # fmt: skip

    (layer_frames,) = frames
    assert (
        layer_frames.ndim == 3 and layer_frames.shape[0] == 3 and layer_frames.shape[2] == encoder.embed_dim
    )
    assert mask.dtype == torch.bool and mask.shape == layer_frames.shape[:2]
    for i, n in enumerate(lengths):
        if name in FIXED_WINDOW:
            expected = expected_fixed_window_frames(name, encoder, n, mask.shape[1])
        else:  # an unpadded clip alone yields exactly its own frames
            expected = single_frames[i][0][0].shape[1]
        assert int(mask[i].sum()) == expected, (
            f"clip {i}: {int(mask[i].sum())} valid frames, expected {expected}"
        )
    assert first.keys() == {"last"} and first["last"].shape == (3, encoder.embed_dim)
    assert torch.equal(first["last"], second["last"])  # deterministic on CPU
    assert torch.isfinite(first["last"]).all()

    assert encoder.describe().get("exact_batching", True) == (name not in PADDING_SENSITIVE)
    batched = first["last"]
    alone = torch.cat([single["last"] for single in singles])
    if name in PADDING_SENSITIVE:
        assert not torch.allclose(batched, alone, atol=1e-5)  # the documented padding dependence is real
    else:
        torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_state_dict_is_backbone_only_and_round_trips_through_safetensors(tiny_dirs, name, tmp_path):
    cfg = backbone_cfg(tiny_dirs, name)
    tuned = build_encoder(cfg)
    state = tuned.state_dict()
    assert state and all(key.startswith("model.") for key in state)  # no heads, no front-end constants
    with torch.no_grad():
        for param in tuned.parameters():
            param.add_(0.01 * torch.randn_like(param))
    save_file(tuned.state_dict(), tmp_path / "model.safetensors")

    reloaded = build_encoder(cfg)
    reloaded.load_state_dict(load_file(tmp_path / "model.safetensors"))
    pretrained = build_encoder(cfg)
    waveforms, lengths = padded_batch([int(0.4 * tuned.sample_rate)] * 2)
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(waveforms, lengths), tuned(waveforms, lengths), atol=0, rtol=0)
        assert not torch.allclose(pretrained(waveforms, lengths), tuned(waveforms, lengths))


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_training_path_is_differentiable(tiny_dirs, name):
    encoder = build_encoder(backbone_cfg(tiny_dirs, name)).train()
    waveforms, lengths = padded_batch([int(0.5 * encoder.sample_rate), int(0.3 * encoder.sample_rate)])
    embeddings = encoder(waveforms, lengths)
    assert embeddings.shape == (2, encoder.embed_dim) and embeddings.requires_grad
    # A loss on direction: resemblyzer's embedding is L2-normalised, so |e|^2 is constant (zero true gradient).
    direction = torch.randn(encoder.embed_dim, generator=torch.Generator().manual_seed(0))
    (embeddings @ direction).sum().backward()
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("name", ["wav2vec2_layer", "ast", "whisper", "clap"])
def test_hf_save_pretrained_reloads_as_a_source(tiny_dirs, name, tmp_path):
    encoder = build_encoder(backbone_cfg(tiny_dirs, name))
    with torch.no_grad():
        for param in encoder.parameters():
            param.mul_(1.5)
    encoder.save_pretrained(tmp_path / "export")
    again = build_encoder({**backbone_cfg(tiny_dirs, name), "source": str(tmp_path / "export")})
    waveforms, lengths = padded_batch([int(0.4 * encoder.sample_rate)])
    with torch.inference_mode():
        torch.testing.assert_close(again(waveforms, lengths), encoder(waveforms, lengths), atol=0, rtol=0)
    assert type(again.model) is type(encoder.model)  # the audio tower, not the full two-part model


# ------------------------------------------------------------------------ against transformers directly


def test_hf_layers_match_the_model_called_directly(tiny_dirs):
    cfg = backbone_cfg(tiny_dirs, "wav2vec2_layer", layer=[0, 1, -1])
    encoder = build_encoder(cfg)
    assert encoder.layer_names == ["0", "1", "-1"]
    model = transformers.AutoModel.from_pretrained(cfg["source"]).eval()
    extractor = transformers.AutoFeatureExtractor.from_pretrained(cfg["source"])
    waveforms, lengths = padded_batch([7000])
    with torch.inference_mode():
        ours = encoder.embed_layers(waveforms, lengths)
        inputs = extractor(waveforms[0].numpy(), sampling_rate=16000, return_tensors="pt")
        hidden = model(**inputs, output_hidden_states=True).hidden_states
    for name, index in [("0", 0), ("1", 1), ("-1", -1)]:
        torch.testing.assert_close(ours[name][0], hidden[index][0].mean(dim=0), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours["0"], ours["-1"])


def test_ast_cls_pooling_is_the_models_own_pooled_output(tiny_dirs):
    cfg = backbone_cfg(tiny_dirs, "ast", pooling="cls")
    encoder = build_encoder(cfg)
    model = transformers.ASTModel.from_pretrained(cfg["source"]).eval()
    extractor = transformers.ASTFeatureExtractor.from_pretrained(cfg["source"])
    waveforms, lengths = padded_batch([9000, 12000])
    with torch.inference_mode():
        ours = encoder(waveforms, lengths)
        clips = [waveforms[i, :n].numpy() for i, n in enumerate(lengths.tolist())]
        reference = model(**extractor(clips, sampling_rate=16000, return_tensors="pt")).pooler_output
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_clap_mean_over_a_filled_window_is_the_models_pooled_output(tiny_dirs):
    # 0.5 s tiles the 1 s window exactly twice, so every frame is valid and the masked mean is CLAP's avgpool.
    cfg = backbone_cfg(tiny_dirs, "clap")
    encoder = build_encoder(cfg)
    model = transformers.ClapModel.from_pretrained(cfg["source"]).audio_model.eval()
    extractor = transformers.ClapFeatureExtractor.from_pretrained(cfg["source"])
    waveforms, lengths = padded_batch([24000])
    with torch.inference_mode():
        ours = encoder(waveforms, lengths)
        inputs = extractor(
            [waveforms[0].numpy()], sampling_rate=48000, truncation="rand_trunc", return_tensors="pt"
        )
        reference = model(input_features=inputs["input_features"]).pooler_output
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


# -------------------------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("wav2vec2_layer", {"sample_rate": 8000}, "sampling_rate 16000"),
        ("wav2vec2_layer", {"pooling": "cls"}, "CLS token"),
        ("wav2vec2_layer", {"pooling": "max"}, "pooling must be one of"),
        ("wav2vec2_layer", {"layer": 3}, "layer 3 outside"),
        ("wav2vec2_layer", {"layer": [1, 1]}, "repeats"),
        ("wav2vec2_layer", {"window_s": 20.0}, "window_s=20.0"),
        ("wav2vec2_layer", {"source": None}, "needs `source`"),
        ("clap", {"layer": 1}, "only layer 'last'"),
        ("resemblyzer", {"layer": 0}, "layer 0 does not exist"),
        ("resemblyzer", {"sample_rate": 22050}, "16000 Hz"),
    ],
)
def test_bad_config_is_refused_naming_the_value(tiny_dirs, name, overrides, message):
    with pytest.raises(ValueError, match=message):
        build_encoder(backbone_cfg(tiny_dirs, name, **overrides))


def test_freeze_stops_gradients_and_rejects_unknown_prefixes(tiny_dirs):
    encoder = build_encoder(backbone_cfg(tiny_dirs, "wav2vec2_group"))
    encoder.freeze(["model.feature_extractor"])
    frozen = {n for n, p in encoder.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("model.feature_extractor") for n in frozen)
    assert any(p.requires_grad for n, p in encoder.named_parameters() if n.startswith("model.encoder"))
    with pytest.raises(ValueError, match="'model.decoder' matches no parameter"):
        encoder.freeze(["model.decoder"])


def test_short_clips_are_padded_to_the_receptive_field(tiny_dirs):
    encoder = build_encoder(backbone_cfg(tiny_dirs, "wav2vec2_layer"))
    waveforms, lengths = padded_batch([30, 6000])
    with torch.inference_mode():
        embeddings = encoder(waveforms, lengths)
        padded = torch.zeros(1, encoder.min_input_samples)
        padded[0, :30] = waveforms[0, :30]
        alone = encoder(padded, torch.tensor([encoder.min_input_samples]))
    torch.testing.assert_close(embeddings[0], alone[0], atol=1e-5, rtol=1e-4)


# -------------------------------------------------------------------------------------- long clips


def test_long_clips_are_the_mean_of_their_windows(tiny_dirs):
    encoder = build_encoder(backbone_cfg(tiny_dirs, "wav2vec2_layer", window_s=0.25, hop_s=0.2))
    n = 11000  # 0.6875 s: windows start at 0, 0.2, 0.4 s and one aligned to the end (0.4375 s)
    waveforms, lengths = padded_batch([n, 3000])
    starts = [0, 3200, 6400, n - 4000]
    with torch.inference_mode():
        embeddings = encoder(waveforms, lengths)
        pieces = torch.stack([waveforms[0, s : s + 4000] for s in starts])
        per_window = encoder(pieces, torch.full((4,), 4000))
    torch.testing.assert_close(embeddings[0], per_window.mean(dim=0), atol=1e-5, rtol=1e-4)
    assert encoder.describe()["window_s"] == 0.25 and encoder.describe()["hop_s"] == 0.2


def test_window_starts_cover_the_clip_with_full_windows():
    assert window_starts(100, 100, 50) == [0]
    assert window_starts(250, 100, 100) == [0, 100, 150]
    for length, window, hop in [(1000, 160, 80), (999, 160, 160), (161, 160, 500)]:
        starts = window_starts(length, window, hop)
        covered = np.zeros(length, bool)
        for start in starts:
            assert 0 <= start and start + window <= length
            covered[start : start + window] = True
        assert covered.all() if hop <= window else covered[-window:].all()


def test_cut_and_average_windows_round_trip():
    waveforms = torch.arange(2 * 10, dtype=torch.float32).reshape(2, 10)
    lengths = torch.tensor([10, 3])
    windows, window_lengths, counts = cut_windows(waveforms, lengths, window=4, hop=3)
    assert counts == [3, 1]
    assert windows.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [10, 11, 12, 0]]
    assert window_lengths.tolist() == [4, 4, 4, 3]
    means = average_windows(windows, counts)
    torch.testing.assert_close(means[0], windows[:3].mean(dim=0))
    torch.testing.assert_close(means[1], windows[3])


# -------------------------------------------------------------------------------------------- pooling


def test_pooling_matches_brute_force_loops():
    generator = torch.Generator().manual_seed(1)
    frames = torch.randn(4, 7, 5, generator=generator)
    mask = torch.rand(4, 7, generator=generator) > 0.4
    mask[:, 2] = True  # every row keeps a valid frame
    for b in range(4):
        valid = [frames[b, t] for t in range(7) if mask[b, t]]
        torch.testing.assert_close(masked_mean(frames, mask)[b], sum(valid) / len(valid))
        torch.testing.assert_close(last_valid(frames, mask)[b], valid[-1])
    torch.testing.assert_close(pool(frames, mask, "cls", n_special=2), (frames[:, 0] + frames[:, 1]) / 2)
    with pytest.raises(ValueError, match="no valid frames"):
        masked_mean(frames, torch.zeros(4, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool(frames, mask, "max")


def test_train_mode_keeps_batchnorm_statistics(tiny_dirs):
    encoder = build_encoder(backbone_cfg(tiny_dirs, "clap")).train()
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.training for m in norms)
    assert any(m.training for m in encoder.modules() if isinstance(m, torch.nn.Dropout))
    before = [m.running_mean.clone() for m in norms]
    encoder(*padded_batch([24000, 30000]))
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before, strict=True))


@pytest.mark.parametrize("name", ["resemblyzer", "wav2vec2_layer"])
def test_samples_beyond_a_clips_length_are_ignored(tiny_dirs, name):
    encoder = build_encoder(backbone_cfg(tiny_dirs, name))
    waveforms, lengths = padded_batch([5000, 9000])
    noisy = waveforms.clone()
    noisy[0, 5000:] = 0.5  # e.g. what an augmentation left in the padding
    with torch.inference_mode():
        torch.testing.assert_close(encoder(noisy, lengths), encoder(waveforms, lengths), atol=0, rtol=0)


# ------------------------------------------------------------------------------------- input contracts


@pytest.mark.parametrize(
    ("name", "setting", "expected"),
    [
        ("resemblyzer", None, True),
        ("resemblyzer", False, False),
        ("wav2vec2_layer", None, False),
        ("ast", True, True),
    ],
)
def test_normalize_level_is_the_familys_unless_set(tiny_dirs, name, setting, expected):
    encoder = build_encoder(backbone_cfg(tiny_dirs, name, normalize_level=setting))
    contract = encoder.describe()["input_contract"]
    assert encoder.contract.normalize_level is expected
    assert contract["normalize_level"] == ("-30 dBFS RMS, increase only" if expected else None)
    assert contract["sample_rate"] == encoder.sample_rate and contract["trim_silence"] is None


@pytest.mark.parametrize("name", ["resemblyzer", "ast"])
def test_level_step_makes_quiet_copies_embed_alike(tiny_dirs, name):
    # Copies 20 and 40 dB quieter than a -21 dBFS clip: both are raised to -30 dBFS, so they embed alike.
    waveforms, lengths = padded_batch([12000])
    quiet = torch.cat([0.1 * waveforms, 0.01 * waveforms])
    with torch.inference_mode():
        on = build_encoder(backbone_cfg(tiny_dirs, name, normalize_level=True))(quiet, lengths.repeat(2))
        off = build_encoder(backbone_cfg(tiny_dirs, name, normalize_level=False))(quiet, lengths.repeat(2))
    torch.testing.assert_close(on[0], on[1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(off[0], off[1], atol=1e-3)


def test_trim_silence_needs_a_rate_webrtcvad_takes():
    with pytest.raises(ValueError, match="webrtcvad accepts"):
        check_trim_available(22050)


@pytest.mark.parametrize("name", list(TINY_BUILDERS))
def test_attention_mask_only_where_the_extractor_returns_one(tiny_dirs, name):
    encoder = build_encoder(backbone_cfg(tiny_dirs, name))
    seen = {}
    forward = encoder.model.forward

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return forward(*args, **kwargs)

    encoder.model.forward = spy
    with torch.inference_mode():
        encoder(*padded_batch([int(0.3 * encoder.sample_rate), int(0.5 * encoder.sample_rate)]))
    takes_mask = bool(encoder.extractor.return_attention_mask)
    assert takes_mask == (name in {"wav2vec2_layer", "hubert", "wavlm", "data2vec_audio"})
    assert ("attention_mask" in seen) == takes_mask
    assert encoder.describe()["input_contract"]["extractor"]["return_attention_mask"] == takes_mask


def test_extractor_settings_override_the_checkpoints_and_unknown_ones_are_refused(tiny_dirs):
    plain = build_encoder(backbone_cfg(tiny_dirs, "wav2vec2_layer", extractor={"do_normalize": False}))
    assert plain.extractor.do_normalize is False
    assert plain.describe()["input_contract"]["extractor"]["do_normalize"] is False
    clip = padded_batch([8000])[0][0].numpy()
    raw = plain.adapter.model_inputs([clip])["input_values"][0]
    torch.testing.assert_close(raw, torch.from_numpy(clip))  # un-normalised: the clip itself
    normalised = build_encoder(backbone_cfg(tiny_dirs, "wav2vec2_layer")).adapter.model_inputs([clip])
    assert abs(float(normalised["input_values"].std()) - 1) < 1e-2
    with pytest.raises(
        ValueError, match=r"\['do_normalise'\] are not settings of its Wav2Vec2FeatureExtractor"
    ):
        build_encoder(backbone_cfg(tiny_dirs, "wav2vec2_layer", extractor={"do_normalise": False}))
    with pytest.raises(ValueError, match="resemblyzer has no feature extractor"):
        build_encoder(backbone_cfg(tiny_dirs, "resemblyzer", extractor={"do_normalize": False}))


# Real speech for the reference tests: FSDD clips (8 kHz) of three speakers, of different lengths and levels.
REFERENCE_CLIPS = ["3_nicolas_38", "0_jackson_0", "6_lucas_33"]
# Pooling compared per family: AST's own pooled output (CLS and distillation tokens); the others are compared
# as the mean over the frames that cover the clip.
REFERENCE_POOLING = {"ast": "cls"}


def reference_model(name: str, source: str):
    """The model as a transformers user loads it: the audio tower of two-part checkpoints."""
    if name == "whisper":
        return transformers.WhisperModel.from_pretrained(source).encoder.eval()
    if name == "clap":
        return transformers.ClapModel.from_pretrained(source).audio_model.eval()
    return transformers.AutoModel.from_pretrained(source).eval()


@pytest.mark.parametrize("name", list(TINY_BUILDERS))
def test_hf_embedding_is_the_model_card_pipeline_on_real_speech(tiny_dirs, fsdd_dir, name):
    cfg = backbone_cfg(tiny_dirs, name, pooling=REFERENCE_POOLING.get(name, "mean"))
    encoder = build_encoder(cfg)
    extractor = transformers.AutoFeatureExtractor.from_pretrained(cfg["source"])
    model = reference_model(name, cfg["source"])
    rate = encoder.sample_rate
    for clip_name in REFERENCE_CLIPS:
        samples, source_rate = sf.read(fsdd_dir / "recordings" / f"{clip_name}.wav", dtype="float32")
        clip = torchaudio.functional.resample(torch.from_numpy(samples), source_rate, rate)
        n = len(clip)
        assert n <= encoder.max_input_s * rate  # one window: the model sees the clip as its authors feed it
        with torch.inference_mode():
            ours = encoder(clip[None], torch.tensor([n]))[0]
            inputs = extractor(clip.numpy(), sampling_rate=rate, return_tensors="pt")  # the model card's call
            outputs = model(**inputs)
        if name == "ast":
            expected = outputs.pooler_output[0]
        elif name == "clap":  # HTSAT's final map [1, C, F, T] -> mean over F, then over the covered frames
            frames = outputs.last_hidden_state.mean(dim=2)[0]
            expected = frames[:, : expected_fixed_window_frames(name, encoder, n, frames.shape[1])].mean(
                dim=1
            )
        elif name == "whisper":
            frames = outputs.last_hidden_state[0]
            expected = frames[: expected_fixed_window_frames(name, encoder, n, frames.shape[0])].mean(dim=0)
        else:  # one unpadded clip: every frame is the clip's
            expected = outputs.last_hidden_state[0].mean(dim=0)
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4, msg=f"{name} on {clip_name}")
