#!/usr/bin/env python3
"""Where a restart's warm-up goes (issue 8: READY within 20 s with a warm compile cache).

Loads the full-size untrained engine with ``--cache-dir``, captures every bucket the default
voice needs, and prints the time of the first bucket (dynamo trace + compile or cache load),
of the other buckets, torch's compile-time breakdown and its cache hit/miss counters.  Run it
twice with the same cache dir: the second run is the warm restart.

``--profile N`` also prints cProfile's top N functions (by cumulative time) of the load and
of the first bucket.

Usage: python3 bench/diag_warm_start.py --cache-dir DIR [--profile 40]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
T0 = time.perf_counter()
import torch  # noqa: E402

from ishowttsd.engine.f5 import Engine  # noqa: E402
from ishowttsd.engine.spec import ModelSpec, VoiceSpec  # noqa: E402


@contextlib.contextmanager
def profiled(label: str, top: int) -> Iterator[None]:
    if not top:
        yield
        return
    prof = cProfile.Profile()
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
        print(f"DIAG profile of {label}:\n{buf.getvalue()}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--profile", type=int, default=0, help="print the top N functions of the load and first bucket")
    args = ap.parse_args()
    imported = time.perf_counter() - T0
    t = time.perf_counter()
    torch.empty(1, device="cuda")
    torch.cuda.synchronize()
    context = time.perf_counter() - t
    t = time.perf_counter()
    spec = ModelSpec(architecture="F5TTS_v1_Base", weights="untrained", device="cuda", compile=True, cuda_graphs=True)
    with profiled("Engine.load", args.profile):
        eng = Engine.load(spec, vocoder="untrained", cache_dir=args.cache_dir)
    loaded = time.perf_counter() - t
    voice = eng.prepare_voice(VoiceSpec(id="default"))
    fast = eng.fast
    assert fast is not None
    frames = list(fast.warm_frames(voice.reference.frames + 1))
    with torch.inference_mode():
        t = time.perf_counter()
        with profiled("the first bucket", args.profile):
            fast.precapture(frames[:1])
            torch.cuda.synchronize()
        first = time.perf_counter() - t
        t = time.perf_counter()
        n = fast.precapture(frames[1:])
        torch.cuda.synchronize()
        rest = time.perf_counter() - t
    print(
        f"DIAG imports {imported:.1f} s, CUDA context {context:.1f} s, load {loaded:.1f} s, "
        f"first bucket {first:.1f} s, {n} more buckets {rest:.1f} s",
        flush=True,
    )
    from torch._dynamo.utils import compile_times, counters

    print("DIAG compile times:", compile_times(repr="str", aggregate=True)[:3000], flush=True)
    wanted = ("inductor", "aot_autograd", "stats", "recompiles")
    print("DIAG counters:", {k: dict(v) for k, v in counters.items() if k in wanted}, flush=True)


if __name__ == "__main__":
    main()
