#!/usr/bin/env python3
"""The vocoder in half precision: how much GPU time does it save, and how far does its audio move?

The engine runs Vocos eagerly at each request's exact length, without cuDNN
(``sampler.exact_length_convs``).  This times the network as the engine runs it, in fp32 and
with its backbone and output layer in fp16 / bf16 (the inverse STFT stays fp32), and the fp16
network compiled (``Vocoder.compiled``), at the frame
counts of the bench's utterance (1030 generated frames) and of a stream's first chunk (289):

- ``events``: CUDA events around one eager call (what the host's launches allow);
- ``graph``: the same calls replayed from a CUDA graph (the GPU's own time, as when the
  vocoder's launches run ahead of the solve's last steps, which is how the engine runs it).

Quality: the half-precision waveform against fp32 from the same mel, as the relative L2
distance and the SNR in dB.  The mel is the reference clip's own (real speech), through the
untrained network built the way the engine builds it (``vocoder.build_untrained``).

Usage on the device: python3 bench/diag_vocoder.py
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from cuda_timing import cuda_ms, graph_ms

from ishowttsd.engine import sampler
from ishowttsd.engine.paths import default_ref_audio
from ishowttsd.engine.presets import HOP_LENGTH, N_FFT, N_MELS, WIN_LENGTH, get_preset
from ishowttsd.engine.upstream import MelSpec
from ishowttsd.engine.vocoder import Vocoder, build_untrained
from ishowttsd.engine.voices import ReferenceCache


def speech_mel(frames: int, device: torch.device) -> torch.Tensor:
    """(1, n_mels, frames) of real speech: the reference clip's mel, repeated to length."""
    ref = ReferenceCache().get(str(default_ref_audio()), "Some call me nature, others call me mother nature.")
    mel_spec = MelSpec(
        n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, n_mel_channels=N_MELS,
        target_sample_rate=24000, mel_spec_type="vocos",
    ).to(device)
    mel = mel_spec(torch.from_numpy(ref.audio).to(device)[None])
    reps = math.ceil(frames / mel.shape[-1])
    return mel.repeat(1, 1, reps)[..., :frames].contiguous()


def main() -> None:
    device = torch.device("cuda")
    print("DIAG", torch.cuda.get_device_name(0), torch.__version__)
    base = build_untrained(get_preset("F5TTS_v1_Base").vocoder, seed=0).to(device)
    variants: dict[str, tuple[Vocoder, torch.dtype]] = {"fp32": (base, torch.float32)}
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        half = copy.deepcopy(base)
        half.backbone.to(dtype)
        half.out.to(dtype)
        variants[name] = (half, dtype)
    # As the compiled engine decodes: the fp16 network through torch.compile, its length dynamic.
    variants["fp16 compiled"] = (variants["fp16"][0].compiled(), torch.float16)
    with torch.inference_mode(), sampler.exact_length_convs(device):
        for frames in (1030, 289):
            mel = speech_mel(frames, device)
            reference = base(mel).float()
            for name, (voc, dtype) in variants.items():
                x = mel.to(dtype)
                events = cuda_ms(lambda voc=voc, x=x: voc(x), repeats=30)
                graphed = graph_ms(lambda voc=voc, x=x: voc(x), calls=10)
                wave = voc(x).float()
                dist = float((wave - reference).norm() / reference.norm())
                snr = -20 * math.log10(max(dist, 1e-12))
                finite = bool(torch.isfinite(wave).all())
                print(
                    f"frames {frames:5d} {name}: events {events:.3f} ms, graph {graphed:.3f} ms, "
                    f"distance {dist:.2e} (SNR {snr:.1f} dB), finite {finite}"
                )


if __name__ == "__main__":
    main()
