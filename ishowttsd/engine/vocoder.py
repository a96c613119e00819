"""Vocos mel-to-wave decoding: loaded from a local dir or built untrained, decoded without host syncs.

We keep Vocos's own modules (backbone and the head's linear layer) but run the inverse STFT
ourselves: upstream's ``ISTFT.forward`` ends in ``assert (window_envelope > 1e-11).all()``,
which copies a flag to the host on every call and so breaks CUDA-graph capture (issue 8).  The
envelope is a fixed function of the frame count, never near zero inside the trimmed region.
The ISTFT always runs in fp32: cuFFT has no bf16 transform and fp16 only for powers of two.
The network before it (backbone and output layer) may run in half precision
(:meth:`Vocoder.at_precision`): on the H100 that takes its GPU time from 1.50 to 0.51 ms for ten
seconds of speech, at an SNR of 60 dB against fp32 (bench/NOTES.md item 34).

The inverse FFT runs on the frame count rounded up to :data:`FFT_FRAMES` (the extra frames are
zeros and are dropped): each frame's transform is independent, so the result is the same, but
cuFFT then needs one plan per 64 frames instead of one per request length.  A new plan cost up
to 39 ms of host time on the H100 (bench/NOTES.md item 32); the engine's warm-up makes them all.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .presets import HOP_LENGTH, N_FFT, N_MELS, VocoderShape

FFT_FRAMES = 64


class VocoderLoadError(Exception):
    """The local Vocos dir is missing, incomplete or holds something else."""


class Vocoder(nn.Module):
    """mel (B, n_mels, T) -> waveform (B, T * hop) at 24 kHz."""

    window: Tensor

    def __init__(self, vocos: Any) -> None:  # vocos.Vocos (untyped)
        super().__init__()
        head = vocos.head
        istft = getattr(head, "istft", None)
        if istft is None or not hasattr(head, "out"):
            raise VocoderLoadError(f"unsupported Vocos head {type(head).__name__} (need ISTFTHead)")
        self.backbone: nn.Module = vocos.backbone
        self.out: nn.Module = head.out
        self.n_fft: int = istft.n_fft
        self.hop_length: int = istft.hop_length
        self.win_length: int = istft.win_length
        self.padding: str = istft.padding
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        """What the network computes in (the inverse STFT is always fp32)."""
        return next(self.out.parameters()).dtype

    def at_precision(self, dtype: torch.dtype) -> Vocoder:
        """A copy whose backbone and output layer run in ``dtype``; this one is left as it is."""
        twin = copy.deepcopy(self)
        twin.backbone.to(dtype)
        twin.out.to(dtype)
        return twin

    def compiled(self, backend: str = "inductor") -> Vocoder:
        """A copy whose network (backbone, output layer and the spectrum's magnitude and phase)
        runs through ``torch.compile`` with the frame count dynamic: one compile serves every
        request's length.  Eager it is about 90 small kernels; the inverse STFT stays eager
        (complex FFTs)."""
        twin = copy.copy(self)
        twin._spectrum = torch.compile(self._spectrum, dynamic=None, backend=backend)  # type: ignore[method-assign]
        twin._mark_dynamic = True
        return twin

    _mark_dynamic = False

    def _spectrum(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The real and imaginary parts of the spectrum the network predicts, fp32."""
        x = self.backbone(mel.to(self.dtype))
        x = self.out(x).transpose(1, 2).float()
        mag, phase = x.chunk(2, dim=1)
        # Same safeguard as Vocos: exp() of a bad logit must not reach infinity.
        mag = torch.clip(torch.exp(mag), max=1e2)
        return mag * torch.cos(phase), mag * torch.sin(phase)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if self._mark_dynamic:
            torch._dynamo.maybe_mark_dynamic(mel, 2)
        real, imag = self._spectrum(mel)
        return self._istft(torch.complex(real, imag))

    def _istft(self, spec: torch.Tensor) -> torch.Tensor:
        window = self.window
        if self.padding == "center":
            return torch.istft(spec, self.n_fft, self.hop_length, self.win_length, window, center=True)
        pad = (self.win_length - self.hop_length) // 2
        frames = spec.shape[-1]
        planned = -(-frames // FFT_FRAMES) * FFT_FRAMES
        ifft = torch.fft.irfft(nn.functional.pad(spec, (0, planned - frames)), self.n_fft, dim=1, norm="backward")
        ifft = ifft[..., :frames] * window[None, :, None]
        size = (frames - 1) * self.hop_length + self.win_length
        y = nn.functional.fold(
            ifft, output_size=(1, size), kernel_size=(1, self.win_length), stride=(1, self.hop_length)
        )[:, 0, 0, pad:-pad]
        window_sq = window.square().expand(1, frames, -1).transpose(1, 2)
        envelope = nn.functional.fold(
            window_sq, output_size=(1, size), kernel_size=(1, self.win_length), stride=(1, self.hop_length)
        ).reshape(-1)[pad:-pad]
        return y / envelope


def _vocos_classes() -> tuple[type[nn.Module], type[nn.Module], type[nn.Module], type[nn.Module]]:
    from vocos import Vocos
    from vocos.feature_extractors import MelSpectrogramFeatures
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    return Vocos, MelSpectrogramFeatures, VocosBackbone, ISTFTHead


def build_untrained(shape: VocoderShape, seed: int) -> Vocoder:
    """A randomly initialised Vocos of the given size; the same seed gives the same weights."""
    return Vocoder(build_untrained_vocos(shape, seed)).eval()


def build_untrained_vocos(shape: VocoderShape, seed: int) -> Any:
    """Upstream's own ``vocos.Vocos`` object with the weights :func:`build_untrained` uses
    (the benchmark hands it to stock f5-tts, so both paths decode with the same network)."""
    vocos_cls, features_cls, backbone_cls, head_cls = _vocos_classes()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vocos = vocos_cls(
            feature_extractor=features_cls(sample_rate=24000, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS),
            backbone=backbone_cls(
                input_channels=N_MELS,
                dim=shape.dim,
                intermediate_dim=shape.intermediate_dim,
                num_layers=shape.num_layers,
            ),
            head=head_cls(dim=shape.dim, n_fft=N_FFT, hop_length=HOP_LENGTH, padding="same"),
        )
    return vocos.eval()


def load_local(directory: Path) -> Vocoder:
    """Vocos from a local dir holding config.yaml and pytorch_model.bin (as on the hub)."""
    config = directory / "config.yaml"
    weights = directory / "pytorch_model.bin"
    for path in (config, weights):
        if not path.is_file():
            raise VocoderLoadError(f"vocoder file {path} not found (run `ishowttsd fetch-model`?)")
    vocos_cls = _vocos_classes()[0]
    try:
        vocos = vocos_cls.from_hparams(str(config))  # type: ignore[attr-defined]
    except Exception as exc:
        raise VocoderLoadError(f"vocoder config {config} is not a Vocos config: {exc}") from exc
    features = getattr(vocos, "feature_extractor", None)
    if type(features).__name__ != "MelSpectrogramFeatures":
        raise VocoderLoadError(f"vocoder {directory} is not a mel Vocos (feature extractor {type(features).__name__})")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        vocos.load_state_dict(state)
    except Exception as exc:
        raise VocoderLoadError(f"vocoder weights {weights} do not load: {exc}") from exc
    return Vocoder(vocos).eval()
