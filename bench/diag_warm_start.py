#!/usr/bin/env python3
"""Where a restart's warm-up goes (issue 8: READY within 20 s with a warm compile cache).

Loads the full-size untrained engine with ``--cache-dir``, captures every bucket the default
voice needs, and prints the time of the first bucket (dynamo trace + compile or cache load),
of the other buckets, torch's compile-time breakdown and its cache hit/miss counters.  Run it
twice with the same cache dir: the second run is the warm restart.

Usage: python3 bench/diag_warm_start.py --cache-dir DIR
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
T0 = time.perf_counter()
import torch  # noqa: E402

from ishowttsd.engine.f5 import Engine  # noqa: E402
from ishowttsd.engine.spec import ModelSpec, VoiceSpec  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache-dir", required=True)
    args = ap.parse_args()
    imported = time.perf_counter() - T0
    t = time.perf_counter()
    spec = ModelSpec(architecture="F5TTS_v1_Base", weights="untrained", device="cuda", compile=True, cuda_graphs=True)
    eng = Engine.load(spec, vocoder="untrained", cache_dir=args.cache_dir)
    loaded = time.perf_counter() - t
    voice = eng.prepare_voice(VoiceSpec(id="default"))
    fast = eng.fast
    assert fast is not None
    frames = list(fast.warm_frames(voice.reference.frames + 1))
    with torch.inference_mode():
        t = time.perf_counter()
        fast.precapture(frames[:1])
        torch.cuda.synchronize()
        first = time.perf_counter() - t
        t = time.perf_counter()
        n = fast.precapture(frames[1:])
        torch.cuda.synchronize()
        rest = time.perf_counter() - t
    print(
        f"DIAG imports {imported:.1f} s, load {loaded:.1f} s, first bucket {first:.1f} s, "
        f"{n} more buckets {rest:.1f} s",
        flush=True,
    )
    from torch._dynamo.utils import compile_times, counters

    print("DIAG compile times:", compile_times(repr="str", aggregate=True)[:3000], flush=True)
    wanted = ("inductor", "aot_autograd", "stats", "recompiles")
    print("DIAG counters:", {k: dict(v) for k, v in counters.items() if k in wanted}, flush=True)


if __name__ == "__main__":
    main()
