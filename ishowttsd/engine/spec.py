"""Plain, torch-free descriptions of what the engine is asked to load and to say.

The config loader builds these from TOML, so they carry the validation metadata
(`meta`) that the loader enforces: ranges, choices and documentation live beside the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ARCHITECTURES = ("F5TTS_v1_Base", "F5TTS_Base", "F5TTS_v1_Small", "tiny")
PRECISIONS = ("auto", "fp16", "bf16", "fp32")
# The fast path's attention over padded keys: the fastest that runs here, or one by name.
ATTENTIONS = ("auto", "flash", "cudnn", "sdpa")
UNTRAINED = "untrained"
SAMPLE_RATE = 24000
MIN_NFE = 1
MAX_NFE = 64
# Step counts for which upstream f5-tts has an Empirically Pruned Step Sampling table.
EPSS_STEPS = (5, 6, 7, 10, 12, 16)
DEFAULT_VOICE_TEXT = "Some call me nature, others call me mother nature."


def meta(
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[Any, ...] | None = None,
    optional: bool = False,
) -> dict[str, Any]:
    """Validation rules for a config field, read by ``ishowttsd.config``."""
    return {"min": min, "max": max, "choices": choices, "optional": optional}


@dataclass(frozen=True)
class ModelSpec:
    """`[model]`: which network to build and where its files are."""

    architecture: str = field(default="F5TTS_v1_Base", metadata=meta(choices=ARCHITECTURES))
    # A .safetensors/.pt checkpoint path, or "untrained" for seeded random weights.
    weights: str = "/var/lib/ishowtts/models/F5TTS_v1_Base/model_1250000.safetensors"
    # vocab.txt path; "" means the vocab f5-tts ships.
    vocab: str = ""
    # A local Vocos directory (config.yaml + pytorch_model.bin); "untrained" for random weights.
    # "" means: untrained when weights are untrained, else <state_dir>/models/vocos-mel-24khz.
    vocoder: str = ""
    # "auto" (cuda when available, else cpu), "cpu", "cuda" or "cuda:N".
    device: str = "auto"
    precision: str = field(default="auto", metadata=meta(choices=PRECISIONS))
    # Seed for untrained weights, so that every run builds the same network.
    seed: int = field(default=0, metadata=meta(min=0, max=2**31 - 1))
    # Replay each ODE step as a CUDA graph (GPU only).
    cuda_graphs: bool = False
    # torch.compile the transformer step (GPU only; the first start compiles for minutes).
    compile: bool = False
    # The fast path's attention (with compile or cuda_graphs): "auto" takes the fastest that
    # runs here; "flash" (needs the flash-attn-4 package), "cudnn" or "sdpa" insist on one.
    attention: str = field(default="auto", metadata=meta(choices=ATTENTIONS))

    @property
    def untrained(self) -> bool:
        return self.weights == UNTRAINED


@dataclass(frozen=True)
class VoiceSpec:
    """One `[[voices]]` entry: a reference clip and its exact transcript."""

    id: str
    # Path to the reference clip; "" means the clip f5-tts ships (basic_ref_en.wav).
    reference_audio: str = ""
    # The exact transcript of the clip.  Required: there is no speech-recognition fallback.
    reference_text: str = ""
    language: str = "en"
    # Per-voice defaults; unset means the [synthesis] default.
    nfe: int | None = field(default=None, metadata=meta(min=MIN_NFE, max=MAX_NFE, optional=True))
    cfg_strength: float | None = field(default=None, metadata=meta(min=0.0, max=10.0, optional=True))
    speed: float | None = field(default=None, metadata=meta(min=0.25, max=4.0, optional=True))
    sway: float | None = field(default=None, metadata=meta(min=-1.0, max=1.0, optional=True))


@dataclass(frozen=True)
class SynthesisRequest:
    """What one request asks the engine to say; every knob already resolved."""

    text: str
    voice_id: str
    nfe: int = 7
    cfg_strength: float = 2.0
    sway: float = -1.0
    speed: float = 1.0
    seed: int | None = None
    cross_fade_s: float = 0.15
    target_rms: float = 0.1
    # Total output duration in seconds (reference included), as upstream's fix_duration.
    fix_duration: float | None = None
