"""Vocos mel-to-wave decoding: loaded from a local dir or built untrained, decoded without host syncs.

We keep Vocos's own modules (backbone and the head's linear layer) but run the inverse STFT
ourselves: upstream's ``ISTFT.forward`` ends in ``assert (window_envelope > 1e-11).all()``,
which copies a flag to the host on every call and so breaks CUDA-graph capture (issue 8).  The
envelope is a fixed function of the frame count, never near zero inside the trimmed region.
The ISTFT always runs in fp32: cuFFT has no bf16 transform and fp16 only for powers of two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .presets import HOP_LENGTH, N_FFT, N_MELS, VocoderShape


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

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self._istft(self._spectrum(self.backbone(mel)))

    @property
    def decodes_windows(self) -> bool:
        """Whether :meth:`decode_window` can run: Vocos's "same" padding (its 24 kHz mel model)
        and no band conditioning."""
        return self.padding == "same" and not getattr(self.backbone, "adanorm", True)

    def decode_window(self, mel: Tensor, keep: Tensor) -> Tensor:
        """Decode one run of frames per row at a padded length, as :meth:`forward` decodes those
        frames alone.

        ``mel`` (B, n_mels, N); ``keep`` (B, N) bool, True on one contiguous run [a, b) per row.
        Returns (B, N * hop) whose samples [a * hop, b * hop) are ``forward(mel[..., a:b])`` (up
        to float rounding); the samples outside are not audio (the run's window tails), for the
        caller to cut away.  Frames outside the run are zeroed before every
        convolution, which is the zero padding the alone-decoding sees, and left out of the
        inverse STFT's overlap-add and its window envelope.  Fixed shapes and no host sync, so a
        CUDA graph captures it per length bucket (accel.py): eager, the vocoder is about 60 small
        kernel launches (bench/NOTES.md item 26).
        """
        backbone: Any = self.backbone  # vocos's VocosBackbone (untyped)
        weight = keep[:, None, :].to(mel.dtype)
        x = backbone.embed(mel * weight)
        x = backbone.norm(x.transpose(1, 2)).transpose(1, 2)
        for block in backbone.convnext:
            x = block(x * weight)
        spec = self._spectrum(backbone.final_layer_norm(x.transpose(1, 2)))
        return self._overlap_add(spec * weight, weight)

    def _spectrum(self, features: Tensor) -> Tensor:
        """The head: (B, N, dim) backbone features to the complex (B, n_fft / 2 + 1, N) spectrum."""
        x = self.out(features).transpose(1, 2).float()
        mag, phase = x.chunk(2, dim=1)
        # Same safeguard as Vocos: exp() of a bad logit must not reach infinity.
        mag = torch.clip(torch.exp(mag), max=1e2)
        return torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))

    def _istft(self, spec: torch.Tensor) -> torch.Tensor:
        if self.padding == "center":
            return torch.istft(spec, self.n_fft, self.hop_length, self.win_length, self.window, center=True)
        return self._overlap_add(spec, None)

    def _overlap_add(self, spec: Tensor, frame_weight: Tensor | None) -> Tensor:
        """Vocos's "same"-padding inverse STFT; ``frame_weight`` (B, 1, N) leaves frames out of
        the window envelope too (where no frame is left, 0 instead of 0 / 0)."""
        window = self.window
        pad = (self.win_length - self.hop_length) // 2
        frames = spec.shape[-1]
        ifft = torch.fft.irfft(spec, self.n_fft, dim=1, norm="backward") * window[None, :, None]
        size = (frames - 1) * self.hop_length + self.win_length
        y = nn.functional.fold(
            ifft, output_size=(1, size), kernel_size=(1, self.win_length), stride=(1, self.hop_length)
        )[:, 0, 0, pad:-pad]
        window_sq = window.square().expand(1, frames, -1).transpose(1, 2)
        if frame_weight is None:
            envelope = nn.functional.fold(
                window_sq, output_size=(1, size), kernel_size=(1, self.win_length), stride=(1, self.hop_length)
            ).reshape(-1)[pad:-pad]
            return y / envelope
        envelope = nn.functional.fold(
            window_sq * frame_weight.float(),
            output_size=(1, size),
            kernel_size=(1, self.win_length),
            stride=(1, self.hop_length),
        )[:, 0, 0, pad:-pad]
        return torch.where(envelope > 1e-11, y / envelope, 0.0)


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
