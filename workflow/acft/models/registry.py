"""Backbone registry: one entry per family, each building an ``Encoder`` from a backbone config.

What each family does with the schema's defaults (every key is set in the config's ``backbones`` section):

| family      | sample rate          | max input / default window                         | layer | pooling |
|-------------|----------------------|----------------------------------------------------|-------|---------|
| resemblyzer | 16 kHz               | 1.6 s (resemblyzer's partial utterance)            | last  | mean    |
| hf          | its feature extractor| wav2vec2/HuBERT/WavLM/data2vec-audio 15.625 s      | last  | mean    |
|             | (CLAP 48 kHz)        | (pre-training crop); AST 10.255 s (1024 frames);   |       |         |
|             |                      | Whisper 30 s; CLAP 10 s                            |       |         |

The window hop defaults to the window (no overlap). ``pooling: cls`` exists only for AST (mean of its CLS and
distillation tokens); ``pooling: last`` reads the last valid frame (resemblyzer's own embedding).

Input contracts (``contract.py``; every step has a config key): resemblyzer raises each clip to -30 dBFS RMS
(``normalize_level``, on unless set false) and can trim long silences (``trim_silence``, off); an ``hf`` model
gets what its feature extractor does with the checkpoint's settings (``extractor`` overrides named ones) and no
level step unless ``normalize_level: true``.
"""

from __future__ import annotations

from .base import Encoder, parse_layers
from .contract import InputContract, check_trim_available
from .hf import HFEncoder
from .resemblyzer import ResemblyzerEncoder

# The keys of a ``backbones`` entry, all filled by the schema (its defaults) before a backbone is built.
KEYS = (
    "family",
    "source",
    "sample_rate",
    "layer",
    "pooling",
    "window_s",
    "hop_s",
    "trust_remote_code",
    "revision",
    "freeze",
    "normalize_level",
    "trim_silence",
    "extractor",
)

# What `normalize_level: null` means per family: whether its authors' pipeline levels clips before the network.
# resemblyzer's preprocess_wav raises every wav to -30 dBFS; transformers extractors do their own normalising.
AUTHORS_LEVEL_NORMALISATION = {"resemblyzer": True, "hf": False}


def input_contract(family: str, cfg: dict) -> InputContract:
    """The config's ``normalize_level`` (null = the family's authors' choice) and ``trim_silence``, checked."""
    level = cfg["normalize_level"]
    contract = InputContract(
        normalize_level=AUTHORS_LEVEL_NORMALISATION[family] if level is None else bool(level),
        trim_silence=bool(cfg["trim_silence"]),
    )
    if contract.trim_silence:
        check_trim_available(int(cfg["sample_rate"]))
    return contract


def _resemblyzer(cfg: dict) -> Encoder:
    if int(cfg["sample_rate"]) != 16000:
        raise ValueError(f"backbone resemblyzer runs at 16000 Hz, config sample_rate is {cfg['sample_rate']}")
    if cfg["extractor"]:
        raise ValueError(
            f"backbone resemblyzer has no feature extractor; `extractor` {cfg['extractor']} is for hf backbones"
        )
    return ResemblyzerEncoder(
        layers=parse_layers(cfg["layer"]),
        pooling=cfg["pooling"],
        window_s=cfg["window_s"],
        hop_s=cfg["hop_s"],
        contract=input_contract("resemblyzer", cfg),
    )


def _hf(cfg: dict) -> Encoder:
    return HFEncoder(
        source=cfg["source"],
        sample_rate=int(cfg["sample_rate"]),
        layers=parse_layers(cfg["layer"]),
        pooling=cfg["pooling"],
        window_s=cfg["window_s"],
        hop_s=cfg["hop_s"],
        contract=input_contract("hf", cfg),
        extractor_overrides=dict(cfg["extractor"]),
        revision=cfg["revision"],
        trust_remote_code=bool(cfg["trust_remote_code"]),
    )


FAMILIES = {"resemblyzer": _resemblyzer, "hf": _hf}


def build_encoder(backbone_cfg: dict) -> Encoder:
    """Build the pretrained encoder a backbone config describes, in eval mode.

    Args:
        backbone_cfg: {"family": "resemblyzer" | "hf", "source", "sample_rate", "layer", "pooling", "window_s",
            "hop_s", "trust_remote_code", "revision", "freeze", "normalize_level", "trim_silence", "extractor"},
            every key set (the workflow passes the entry as the schema filled it). ``freeze`` is applied by the
            tuner through ``Encoder.freeze``.

    Returns:
        The ``Encoder``; a tuned checkpoint loads with ``encoder.load_state_dict(load_file(path))``.
    """
    family = backbone_cfg.get("family")
    if family not in FAMILIES:
        raise ValueError(f"unknown backbone family {family!r}; known families: {sorted(FAMILIES)}")
    missing = [key for key in KEYS if key not in backbone_cfg]
    if missing:
        raise ValueError(f"backbone config lacks {missing}; pass the entry as the config schema fills it")
    return FAMILIES[family](backbone_cfg).eval()
