#!/usr/bin/env python3
"""First request of a new text length, on the engine as the daemon runs it (compile + CUDA
graphs, fp16, full size): what does a length the engine has not seen cost, and where?

The solve runs in bucket-shaped graphs captured at warm-up; what still runs at each request's
exact length is the vocoder.  Per new length: the first and the second call, with their stage
times (text prep, ODE, vocoder); then a steady-state median of one text.

Earlier version (run 5, NOTES.md item 6): cuDNN on/off for the exact-length convolutions.
Usage on the device: python3 bench/diag_new_length.py [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch

from ishowttsd.engine.f5 import Engine
from ishowttsd.engine.spec import ModelSpec, SynthesisRequest, VoiceSpec

TEXT = (
    "welcome back to the stream everyone thanks for the follows and the subs today we try something new "
    "with the old mine at the bottom of the map so grab a drink this will take a while"
)
WORDS = TEXT.split(" ")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--lengths", type=int, default=6, help="new lengths per variant")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    print("DIAG", torch.cuda.get_device_name(0), torch.__version__)
    spec = ModelSpec(architecture="F5TTS_v1_Base", weights="untrained", device="cuda", compile=True, cuda_graphs=True)
    eng = Engine.load(spec, vocoder="untrained", cache_dir=args.cache_dir)
    voice = eng.prepare_voice(VoiceSpec(id="default"))
    eng.warm_up(voice, [7])

    def call(text: str) -> dict[str, float]:
        s = eng.synthesize(voice, SynthesisRequest(text=text, voice_id="default", nfe=7, seed=1))
        return {k: v * 1e3 for k, v in s.timings.items()}

    def fmt(t: dict[str, float]) -> str:
        return f"{t['total']:.1f} ms (text {t['text_prep']:.1f}, ode {t['ode']:.1f}, vocoder {t['vocoder']:.1f})"

    extras = []
    for n in range(1, args.lengths + 1):
        text = " ".join(WORDS[: 4 + 3 * n]) + "."
        first, second = call(text), call(text)
        extras.append(first["total"] - second["total"])
        print(f"DIAG {len(text)} bytes: first {fmt(first)}, second {fmt(second)}")
    print(f"DIAG a new length costs +{statistics.median(extras):.1f} ms (median of {len(extras)})")
    steady = [call("Welcome back to the stream, everyone. Today we try something new.")["total"] for _ in range(12)]
    print(f"DIAG steady median {statistics.median(steady[2:]):.1f} ms")

if __name__ == "__main__":
    main()
