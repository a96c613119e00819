"""Network shapes: the upstream F5-TTS architectures, a tiny one for tests, and their vocoders.

The three upstream entries copy the ``model.arch`` block of f5-tts's configs/*.yaml (1.1.22);
a checkpoint only loads into the architecture it was trained as, so these must not drift.
Only the fields the DiT constructor takes at inference time are kept (no training knobs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .spec import ARCHITECTURES

# Mel front end shared by every F5-TTS model and by Vocos mel-24khz.
N_MELS = 100
HOP_LENGTH = 256
N_FFT = 1024
WIN_LENGTH = 1024


@dataclass(frozen=True)
class VocoderShape:
    """A Vocos backbone (ConvNeXt) size; the ISTFT head is fixed by the mel front end."""

    dim: int = 512
    intermediate_dim: int = 1536
    num_layers: int = 8


@dataclass(frozen=True)
class Preset:
    name: str
    # Keyword arguments for f5_tts DiT, minus text_num_embeds/mel_dim (set from the vocab).
    dit: dict[str, Any] = field(default_factory=dict)
    # The vocoder built for untrained mode; a real one comes from its own config.yaml.
    vocoder: VocoderShape = VocoderShape()


_V1_COMMON: dict[str, Any] = {
    "ff_mult": 2,
    "text_dim": 512,
    "text_mask_padding": True,
    "qk_norm": None,
    "conv_layers": 4,
    "pe_attn_head": None,
    "attn_backend": "torch",
    "attn_mask_enabled": False,
}

PRESETS: dict[str, Preset] = {
    "F5TTS_v1_Base": Preset("F5TTS_v1_Base", {"dim": 1024, "depth": 22, "heads": 16, **_V1_COMMON}),
    "F5TTS_Base": Preset(
        "F5TTS_Base",
        {
            "dim": 1024,
            "depth": 22,
            "heads": 16,
            "ff_mult": 2,
            "text_dim": 512,
            "text_mask_padding": False,
            "conv_layers": 4,
            "pe_attn_head": 1,
            "attn_backend": "torch",
            "attn_mask_enabled": False,
        },
    ),
    "F5TTS_v1_Small": Preset("F5TTS_v1_Small", {"dim": 768, "depth": 18, "heads": 12, **_V1_COMMON}),
    # For tests and CI: the same code paths at a size that runs ~10 s of speech on one CPU
    # thread in a fraction of a second.  Its numbers mean nothing; its shapes exercise everything
    # (conv text blocks, RoPE, CFG batch, ConvNeXt vocoder, ISTFT).
    "tiny": Preset(
        "tiny",
        {
            "dim": 32,
            "depth": 1,
            "heads": 1,
            "dim_head": 16,
            "ff_mult": 2,
            "text_dim": 32,
            "text_mask_padding": True,
            "qk_norm": None,
            "conv_layers": 1,
            "pe_attn_head": None,
            "attn_backend": "torch",
            "attn_mask_enabled": False,
        },
        VocoderShape(dim=32, intermediate_dim=64, num_layers=1),
    ),
}

assert set(PRESETS) == set(ARCHITECTURES), "spec.ARCHITECTURES and PRESETS must agree"


def get_preset(architecture: str) -> Preset:
    try:
        return PRESETS[architecture]
    except KeyError:
        known = ", ".join(PRESETS)
        raise ValueError(f"unknown architecture {architecture!r} (known: {known})") from None
