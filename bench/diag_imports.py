#!/usr/bin/env python3
"""What a start spends before the model is built: imports and the CUDA context (issue 8, restart).

Each round runs a fresh interpreter that imports torch, creates the CUDA context and imports
the engine (``engine.f5``, which pulls f5-tts), and prints each part's seconds and the median
total.  ``--importtime N`` also prints the N slowest modules (cumulative) of one engine
import, from ``python -X importtime``.

Python writes no bytecode cache when PYTHONDONTWRITEBYTECODE is set (the lent GPU machines set
it, and their torch has none): then every module is compiled from source at every start.

Usage: python3 bench/diag_imports.py [--rounds 4] [--device cuda] [--importtime 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
device = sys.argv[1]
import torch
t_torch = time.perf_counter()
torch.empty(1, device=device)
if device != "cpu":
    torch.cuda.synchronize()
t_ctx = time.perf_counter()
import ishowttsd.engine.f5
t_end = time.perf_counter()
out = {"torch": t_torch - t0, "context": t_ctx - t_torch, "engine": t_end - t_ctx, "total": t_end - t0}
print(json.dumps(out))
"""


def child(device: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", CHILD, device], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def importtime(top: int) -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import ishowttsd.engine.f5"],
                          capture_output=True, text=True, cwd=REPO, timeout=300, check=True)
    rows = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            self_us, cum_us, name = line.split(":", 1)[1].split("|")
            rows.append((int(cum_us), int(self_us), name.rstrip()))
    print(f"DIAG importtime, top {top} by cumulative s (self s, module):")
    for cum, own, name in sorted(rows, reverse=True)[:top]:
        print(f"  {cum / 1e6:7.3f} {own / 1e6:7.3f} {name}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--importtime", type=int, default=0)
    args = ap.parse_args()
    child(args.device)  # writes the bytecode cache first, where Python may: not timed
    if args.importtime:
        importtime(args.importtime)
    totals = []
    for i in range(args.rounds):
        r = child(args.device)
        totals.append(r["total"])
        print(f"DIAG round {i}: " + ", ".join(f"{k} {v:.2f} s" for k, v in r.items()), flush=True)
    print(f"DIAG median total {statistics.median(totals):.2f} s "
          f"(bytecode cache {'off' if os.environ.get('PYTHONDONTWRITEBYTECODE') else 'on'})")


if __name__ == "__main__":
    main()
