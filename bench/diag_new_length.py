#!/usr/bin/env python3
"""First request of a new text length: cuDNN on vs off for the exact-length convolutions
(text embedding, vocoder), on the fast path the daemon uses (CUDA graphs), fp16, full size.

Prints, per variant: the first and second call at four new lengths, and the steady-state
median of one text.  Usage on the device: python3 bench/diag_new_length.py
"""
from __future__ import annotations

import contextlib
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch

from ishowttsd.engine import sampler
from ishowttsd.engine.f5 import Engine
from ishowttsd.engine.spec import ModelSpec, SynthesisRequest, VoiceSpec

WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen"]
original = sampler.exact_length_convs


def run(variant: str, offset: int) -> None:
    sampler.exact_length_convs = original if variant == "cudnn-off" else (lambda _d: contextlib.nullcontext())
    eng = Engine.load(ModelSpec(architecture="F5TTS_v1_Base", weights="untrained", device="cuda",
                                cuda_graphs=True), vocoder="untrained")
    voice = eng.prepare_voice(VoiceSpec(id="default"))
    eng.warm_up(voice, [7])

    def call(text: str) -> float:
        s = eng.synthesize(voice, SynthesisRequest(text=text, voice_id="default", nfe=7, seed=1))
        return s.timings["total"] * 1e3

    for k in range(4):
        text = " ".join(WORDS[: 3 + 2 * k + offset]) + "."
        first, second = call(text), call(text)
        print(f"DIAG {variant} len={len(text)} first={first:.1f} ms second={second:.1f} ms "
              f"extra={first - second:.1f} ms", flush=True)
    steady = [call("Welcome back to the stream, everyone. Today we try something new.") for _ in range(12)][2:]
    print(f"DIAG {variant} steady median={statistics.median(steady):.1f} ms "
          f"min={min(steady):.1f} max={max(steady):.1f}", flush=True)
    torch.cuda.empty_cache()


print("DIAG", torch.cuda.get_device_name(0), torch.__version__, flush=True)
run("cudnn-on", 0)
run("cudnn-off", 1)  # other lengths: nothing cached from the first variant
