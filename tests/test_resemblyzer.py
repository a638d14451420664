"""The resemblyzer backbone: packaged weights load strictly, the front end matches librosa, the input contract
is resemblyzer's own, and the frozen encoder separates FSDD speakers.

References are independent of acft's module: resemblyzer's own architecture (one 3-layer nn.LSTM loaded with
the checkpoint's original keys, final hidden state -> Linear -> ReLU -> L2, as in its voice_encoder.py) fed
with librosa's mel spectrogram (as in its audio.py), the resemblyzer package itself (``preprocess_wav``,
``VoiceEncoder``) on real FSDD speech, and plain numpy cosine kNN.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from safetensors.torch import load_file

from acft.models import build_encoder
from acft.models.contract import normalize_level, voiced_samples
from acft.models.resemblyzer import (
    CHECKPOINT_EXTRA_KEYS,
    GE2ENetwork,
    MelFrontEnd,
    packaged_checkpoint,
    to_network_state,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from schema_defaults import backbone_config  # noqa: E402

torch.set_num_threads(1)
# resemblyzer 0.1.4's audio.py imports binary_dilation from a scipy namespace deprecated since scipy 1.8.
pytestmark = pytest.mark.filterwarnings("ignore:Please import `binary_dilation`:DeprecationWarning")


def librosa_mel(wav: np.ndarray) -> np.ndarray:
    """resemblyzer.audio.wav_to_mel_spectrogram: [T, 40] power mel (not log) at 16 kHz, 25 ms / 10 ms."""
    return (
        librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160, n_mels=40)
        .astype(np.float32)
        .T
    )


@pytest.fixture(scope="module")
def checkpoint_state() -> dict[str, torch.Tensor]:
    return torch.load(packaged_checkpoint(), map_location="cpu", weights_only=True)["model_state"]


@pytest.fixture(scope="module")
def reference_encoder(checkpoint_state):
    """resemblyzer's VoiceEncoder network, rebuilt with its own layout and keys."""
    lstm = torch.nn.LSTM(40, 256, 3, batch_first=True)
    linear = torch.nn.Linear(256, 256)
    lstm.load_state_dict(
        {k[5:]: v for k, v in checkpoint_state.items() if k.startswith("lstm.")}, strict=True
    )
    linear.load_state_dict(
        {k[7:]: v for k, v in checkpoint_state.items() if k.startswith("linear.")}, strict=True
    )

    def embed(mels: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            outputs, (hidden, _) = lstm(torch.from_numpy(mels)[None])
            raw = torch.relu(linear(hidden[-1]))
        return (raw / raw.norm(dim=1, keepdim=True))[0], outputs[0]

    return embed


def speech_like(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (
        0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(n)
    ).astype(np.float32)


def test_weights_come_from_the_wheel_without_importing_resemblyzer():
    assert packaged_checkpoint().name == "pretrained.pt"
    assert packaged_checkpoint().parent.name == "resemblyzer"
    # In a fresh interpreter: the reference tests below import resemblyzer into this one.
    check = f"""
import sys, torch
from acft.models import build_encoder
encoder = build_encoder({backbone_config("resemblyzer", trim_silence=True)!r})
encoder(torch.zeros(1, 8000), torch.tensor([8000]))
assert not [m for m in sys.modules if m.split(".")[0] == "resemblyzer"], "resemblyzer was imported"
"""
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_packaged_weights_load_strictly_and_all_are_used(checkpoint_state):
    assert set(CHECKPOINT_EXTRA_KEYS) <= set(checkpoint_state)
    renamed = to_network_state(checkpoint_state)
    assert len(renamed) == len(checkpoint_state) - len(CHECKPOINT_EXTRA_KEYS)
    network = GE2ENetwork()
    result = network.load_state_dict(renamed, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # Every checkpoint tensor ends up, unchanged, in the encoder the registry builds.
    encoder_state = build_encoder(backbone_config("resemblyzer")).state_dict()
    assert len(encoder_state) == len(renamed)
    for key, tensor in checkpoint_state.items():
        if key in CHECKPOINT_EXTRA_KEYS:
            continue
        assert any(torch.equal(tensor, value) for value in encoder_state.values()), key


@pytest.mark.parametrize("n", [16000, 7919, 400])
def test_mel_front_end_matches_librosa(n):
    wav = speech_like(n, seed=n)
    ours = MelFrontEnd()(torch.from_numpy(wav)[None])[0].numpy()
    reference = librosa_mel(wav)
    assert ours.shape == reference.shape
    # rtol 1e-4 per bin; the atol floor (1e-7 of the peak) only spares bins that are numerically zero.
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-7 * float(reference.max()))


def test_last_pooling_is_resemblyzers_embedding(reference_encoder):
    encoder = build_encoder(backbone_config("resemblyzer", pooling="last"))
    lengths = [12000, 25000, 5000]
    clips = [speech_like(n, seed=i) for i, n in enumerate(lengths)]
    batch = torch.zeros(3, max(lengths))
    for i, clip in enumerate(clips):
        batch[i, : len(clip)] = torch.from_numpy(clip)
    with torch.inference_mode():
        ours = encoder(batch, torch.tensor(lengths))
    for i, clip in enumerate(clips):
        expected, _ = reference_encoder(librosa_mel(clip))
        torch.testing.assert_close(ours[i], expected, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(3))


def test_lstm_layers_are_the_reference_lstm_outputs(reference_encoder):
    encoder = build_encoder(backbone_config("resemblyzer", layer=[1, 3], pooling="mean"))
    assert encoder.layer_names == ["1", "3"]
    clip = speech_like(9000, seed=5)
    with torch.inference_mode():
        layers = encoder.embed_layers(torch.from_numpy(clip)[None], torch.tensor([9000]))
    _, top_outputs = reference_encoder(librosa_mel(clip))
    torch.testing.assert_close(layers["3"][0], top_outputs.mean(dim=0), atol=2e-5, rtol=1e-4)
    assert not torch.allclose(layers["1"], layers["3"])
    assert abs(float(layers["3"].norm()) - 1) > 1e-3  # raw LSTM layers are not L2-normalised


def test_save_pretrained_writes_safetensors_and_config(tmp_path):
    encoder = build_encoder(backbone_config("resemblyzer"))
    encoder.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert saved.keys() == encoder.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in encoder.state_dict().items())
    assert '"family": "resemblyzer"' in (tmp_path / "config.json").read_text()


@pytest.fixture(scope="module")
def fsdd_16k(fsdd_dir):
    """Every FSDD clip resampled to 16 kHz, its speaker, and whether it is in the official test split."""
    paths = sorted((fsdd_dir / "recordings").glob("*.wav"))
    assert len(paths) == 2000
    clips, speakers, is_test = [], [], []
    for path in paths:
        _, speaker, index = path.stem.split("_")
        samples, rate = sf.read(path, dtype="float32")
        clips.append(torchaudio.functional.resample(torch.from_numpy(samples), rate, 16000))
        speakers.append(speaker)
        is_test.append(int(index) < 5)
    return clips, np.array(speakers), np.array(is_test)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_packaged_weights_identify_fsdd_speakers(fsdd_16k, pooling):
    """Speaker kNN@1 (cosine) on FSDD's official split: index 0-4 test, 5-49 train."""
    clips, speakers, is_test = fsdd_16k
    encoder = build_encoder(backbone_config("resemblyzer", pooling=pooling))
    embeddings = np.zeros((len(clips), encoder.embed_dim), np.float32)
    order = np.argsort([len(c) for c in clips], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(order), 100):
            chunk = order[start : start + 100]
            lengths = torch.tensor([len(clips[i]) for i in chunk])
            batch = torch.nn.utils.rnn.pad_sequence([clips[i] for i in chunk], batch_first=True)
            embeddings[chunk] = encoder(batch, lengths).numpy()

    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = unit[is_test] @ unit[~is_test].T
    predicted = speakers[~is_test][similarity.argmax(axis=1)]
    accuracy = float((predicted == speakers[is_test]).mean())
    print(f"FSDD speaker kNN@1 ({pooling} pooling): {accuracy:.3f} on {is_test.sum()} test clips")
    assert is_test.sum() == 200
    assert accuracy >= 0.95


# ------------------------------------------- the input contract against resemblyzer's own pipeline


@pytest.fixture(scope="module")
def authors():
    """resemblyzer's ``audio`` module (preprocess_wav, normalize_volume, ...) and its ``VoiceEncoder`` on CPU."""
    pytest.importorskip(
        "webrtcvad",
        reason="resemblyzer imports webrtcvad: pip install webrtcvad-wheels (pinned in requirements.txt)",
    )
    audio = importlib.import_module("resemblyzer.audio")
    voice_encoder = importlib.import_module("resemblyzer").VoiceEncoder("cpu", verbose=False)
    return audio, voice_encoder


def authors_embedding(authors, wav: np.ndarray) -> torch.Tensor:
    """``VoiceEncoder.forward`` on the mel of one whole preprocessed wav: its last LSTM step, L2-normalised."""
    audio, voice_encoder = authors
    with torch.no_grad():
        return voice_encoder(torch.from_numpy(audio.wav_to_mel_spectrogram(wav))[None])[0]


def fsdd_clip_16k(fsdd_dir, name: str) -> np.ndarray:
    samples, rate = sf.read(fsdd_dir / "recordings" / f"{name}.wav", dtype="float32")
    return torchaudio.functional.resample(torch.from_numpy(samples), rate, 16000).numpy()


def level_dbfs(wav: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(wav.astype(np.float64) ** 2))))


# Quiet (below -30 dBFS, so raised) and loud (left as recorded) FSDD clips of four speakers, all under 1.6 s.
REFERENCE_CLIPS = ["3_nicolas_38", "6_lucas_33", "1_george_37", "0_jackson_0", "9_george_5", "4_lucas_10"]


def embed_batch(encoder, clips: list[np.ndarray]) -> torch.Tensor:
    """All clips in one zero-padded batch, as extraction runs them."""
    lengths = torch.tensor([len(clip) for clip in clips])
    batch = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(clip) for clip in clips], batch_first=True)
    with torch.inference_mode():
        return encoder(batch, lengths)


@pytest.mark.parametrize("trim", [False, True])
def test_embedding_is_voice_encoder_on_preprocess_wav(authors, fsdd_dir, trim):
    """Same 16 kHz clip, pooling ``last`` (VoiceEncoder reads the last LSTM step of what it is given), one
    window: our embedding is resemblyzer's on ``preprocess_wav``'s output (trim off: its level step alone)."""
    audio, _ = authors
    clips = [fsdd_clip_16k(fsdd_dir, name) for name in REFERENCE_CLIPS]
    levels = [level_dbfs(clip) for clip in clips]
    assert min(levels) < -30 < max(levels)  # both branches of increase-only are exercised
    assert max(len(clip) for clip in clips) <= 25600
    encoder = build_encoder(backbone_config("resemblyzer", pooling="last", trim_silence=trim))
    ours = embed_batch(encoder, clips)
    as_recorded = embed_batch(
        build_encoder(backbone_config("resemblyzer", pooling="last", normalize_level=False)), clips
    )
    for i, clip in enumerate(clips):
        wav = audio.normalize_volume(clip, -30, increase_only=True)
        if trim and len(audio.trim_long_silences(wav)):
            wav = audio.preprocess_wav(clip)
        # else (1_george_37, 0.17 s): resemblyzer's trim leaves nothing to embed; we keep the clip whole.
        torch.testing.assert_close(ours[i], authors_embedding(authors, wav), atol=2e-5, rtol=1e-4)
        if levels[i] < -30:  # the level step changed what the network saw
            assert float((ours[i] - as_recorded[i]).abs().max()) > 1e-3
        elif not trim:
            torch.testing.assert_close(ours[i], as_recorded[i], atol=0, rtol=0)


def test_trimmed_pause_matches_preprocess_wav(authors, fsdd_dir):
    """Two digits with 0.6 s of silence between them: trimming cuts most of the pause, as resemblyzer's does."""
    audio, _ = authors
    first, second = fsdd_clip_16k(fsdd_dir, "0_jackson_0"), fsdd_clip_16k(fsdd_dir, "7_george_3")
    clip = np.concatenate([first, np.zeros(9600, np.float32), second])
    reference = audio.preprocess_wav(clip)
    assert len(reference) < len(clip) - 3200  # at least 0.2 s of the pause went
    kept = voiced_samples(
        normalize_level(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))[0].numpy(), 16000
    )
    assert len(kept) == len(reference)
    ours = embed_batch(
        build_encoder(backbone_config("resemblyzer", pooling="last", trim_silence=True)), [clip]
    )
    torch.testing.assert_close(ours[0], authors_embedding(authors, reference), atol=2e-5, rtol=1e-4)


def test_voiced_samples_are_trim_long_silences_except_where_it_returns_nothing(authors, fsdd_dir):
    audio, _ = authors
    emptied = []
    for name in REFERENCE_CLIPS:
        wav = audio.normalize_volume(fsdd_clip_16k(fsdd_dir, name), -30, increase_only=True)
        reference = audio.trim_long_silences(wav)
        if len(reference) == 0:
            emptied.append(name)
            reference = wav
        np.testing.assert_array_equal(wav[voiced_samples(wav, 16000)], reference)
    # A 0.17 s digit: too few windows for the 8-window smoothing to call any of them voiced.
    assert emptied == ["1_george_37"]
    # resemblyzer returns an empty wav for silence and for clips under one 30 ms window; we keep them whole.
    for wav in (np.zeros(16000, np.float32), speech_like(300, seed=1)):
        assert len(audio.trim_long_silences(wav)) == 0
        np.testing.assert_array_equal(voiced_samples(wav, 16000), np.arange(len(wav)))


def test_level_is_normalised_over_the_whole_clip_before_windowing(authors, fsdd_dir):
    """resemblyzer levels the whole wav before cutting partials. A 3.2 s clip whose first 1.6 s window is at
    -32 dBFS and second at -50 dBFS (whole clip about -35 dBFS) embeds as the whole-clip-normalised clip does,
    not as its two windows normalised one by one."""
    audio, _ = authors

    def speech_at(names: list[str], dbfs: float) -> np.ndarray:
        speech = np.tile(np.concatenate([fsdd_clip_16k(fsdd_dir, name) for name in names]), 4)[:25600]
        return speech * np.float32(10 ** ((dbfs - level_dbfs(speech)) / 20))

    windows = [speech_at(REFERENCE_CLIPS[:2], -32.0), speech_at(REFERENCE_CLIPS[3:], -50.0)]
    clip = np.concatenate(windows)
    ours = embed_batch(build_encoder(backbone_config("resemblyzer")), [clip])
    plain = build_encoder(backbone_config("resemblyzer", normalize_level=False))
    whole = embed_batch(plain, [audio.normalize_volume(clip, -30, increase_only=True)])
    torch.testing.assert_close(ours, whole, atol=1e-6, rtol=1e-5)
    one_by_one = embed_batch(plain, [audio.normalize_volume(w, -30, increase_only=True) for w in windows])
    per_window = torch.nn.functional.normalize(one_by_one.mean(dim=0, keepdim=True), dim=1)
    assert float((ours - per_window).abs().max()) > 1e-3


def test_normalize_level_is_increase_only_and_leaves_silence_alone():
    loud = torch.from_numpy(speech_like(16000, seed=2))[None]  # about -20 dBFS
    quiet = 0.01 * loud
    lengths = torch.tensor([16000])
    assert torch.equal(normalize_level(loud, lengths), loud)
    raised = normalize_level(quiet, lengths)
    assert abs(level_dbfs(raised[0].numpy()) + 30) < 1e-3
    torch.testing.assert_close(raised, normalize_level(0.1 * quiet, lengths), atol=1e-7, rtol=1e-5)
    silent = torch.zeros(2, 100)
    assert torch.equal(normalize_level(silent, torch.tensor([100, 40])), silent)
    # Samples past a clip's length do not count towards its level.
    padded = torch.cat([quiet, torch.ones(1, 500)], dim=1)
    torch.testing.assert_close(normalize_level(padded, lengths)[:, :16000], raised)
