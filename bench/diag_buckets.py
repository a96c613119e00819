#!/usr/bin/env python3
"""The GPU time of one Euler step at every bucket length (issue 8 diagnostics).

Requests are padded up to a bucket (``accel.bucket``).  If a step's time grew with the padded
length alone, the bucket size would only trade padding against the number of graphs.  But
matrix-product tiles and attention blocks fill the card's SMs in waves, so some lengths may
cost more than a longer one.  This prints, for lengths ``--start`` to ``--stop`` in steps of
``--step`` frames (default: a 4.96 s reference plus up to 18 s of speech, 16-frame steps), the
median GPU time of one step graph replay and its time per frame, in one process on one card.

Usage: python3 bench/diag_buckets.py [--start 480] [--stop 2160] [--step 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from cuda_timing import cuda_ms

from ishowttsd.engine import accel
from ishowttsd.engine.f5 import Engine
from ishowttsd.engine.spec import ModelSpec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--start", type=int, default=480)
    ap.add_argument("--stop", type=int, default=2160)
    ap.add_argument("--step", type=int, default=16)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    eng = Engine.load(ModelSpec(architecture="F5TTS_v1_Base", weights="untrained", device="cuda"), vocoder="untrained")
    solver = accel.FastSolver(eng.dit, eng.device, compile=True, graphs=True, granularity=args.step)
    epilogue = solver.weights.qkv_rope is not None
    print(f"DIAG attention {solver.weights.attention}, q/k/v epilogue {epilogue}", flush=True)
    rows = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for n in range(args.start, args.stop + 1, args.step):
            solver.precapture([n])
            graph = solver._buckets[(n, 1, True)].step_graph
            assert graph is not None
            ms = cuda_ms(graph.replay, repeats=15, warmup=3)
            rows.append({"frames": n, "step_ms": ms, "us_per_frame": 1000 * ms / n})
            print(f"DIAG bucket {n:5d}: step {ms:.3f} ms, {1000 * ms / n:.2f} us/frame", flush=True)
    print(f"DIAG {len(rows)} buckets in {time.perf_counter() - t0:.1f} s")
    # Lengths that cost more than some longer one: a request there would be better off padded.
    worse = [r["frames"] for i, r in enumerate(rows) if any(o["step_ms"] < r["step_ms"] for o in rows[i + 1 :])]
    print(f"DIAG dominated lengths (a longer bucket is faster): {worse}")
    if args.json:
        args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
