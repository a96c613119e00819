#!/usr/bin/env python3
"""Diagnose compile cost per length bucket on the GPU: dynamic vs static compile, with and
without inductor freezing.  Prints capture seconds per bucket and the 7-step solve time."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch

from ishowttsd.engine import accel
from ishowttsd.engine.f5 import Engine
from ishowttsd.engine.spec import ModelSpec, VoiceSpec

mode = sys.argv[1]
buckets = [int(x) for x in sys.argv[2].split(",")]
if "freeze" in mode:
    import torch._inductor.config as ic

    ic.freezing = True
eng = Engine.load(ModelSpec(architecture="F5TTS_v1_Base", weights="untrained", device="cuda"), vocoder="untrained")
voice = eng.prepare_voice(VoiceSpec(id="default"))
ref = voice.reference
ref_mel = eng._reference_mel(ref, 0.1)
fast = accel.FastSolver(eng.dit, eng.device, compile=True, graphs=True, dynamic="dynamic" in mode)
eager = accel.FastSolver(eng.dit, eng.device, compile=False, graphs=True)
text = "Welcome back to the stream everyone, thanks for the follows and the subs today. " * 3
with torch.inference_mode():
    for n_b in buckets:
        t0 = time.perf_counter()
        fast.precapture([n_b])
        torch.cuda.synchronize()
        cap = time.perf_counter() - t0
        ids = eng._tokens(ref.text, text)
        frames = n_b - 5
        noise = torch.randn(1, frames, 100, device="cuda")
        res = {}
        for name, fs in (("fast", fast), ("eager_graph", eager)):
            for _ in range(2):
                x = fs.sample(ref_mel, ids, frames, nfe=7, cfg_strength=2.0, sway=-1.0, noise=noise)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(5):
                x = fs.sample(ref_mel, ids, frames, nfe=7, cfg_strength=2.0, sway=-1.0, noise=noise)
            torch.cuda.synchronize()
            res[name] = (time.perf_counter() - t) / 5 * 1e3
        print(
            f"DIAG {mode} bucket {n_b}: capture {cap:.1f} s, solve7 {res['fast']:.1f} ms "
            f"(eager graph {res['eager_graph']:.1f} ms)",
            flush=True,
        )
print(
    "DIAG",
    mode,
    "counters",
    {k: dict(v) for k, v in torch._dynamo.utils.counters.items() if k in ("stats", "recompiles", "graph_break")},
    flush=True,
)
