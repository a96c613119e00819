#!/usr/bin/env python3
"""Where a stream's first audio spends its time on the GPU and the host (issue 8 diagnostics).

Loads the engine as the daemon runs it (compile + CUDA graphs, warmed up), then synthesises
the bench's text as a stream does (the API's short first chunk) a few times, and profiles the
last one with torch.profiler (host and device activity on one clock).  It prints, in
milliseconds since the call began:

- when the host first launched work on the GPU, and when the first kernel started;
- when the first chunk's samples had reached the host (the end of its device-to-host copy) and
  when ``on_chunk`` got them;
- the GPU's busy time in that window, and its idle gaps (how many, how long in all, the longest
  with what ran before them);
- the same for a whole one-chunk request (the bench's WAV), to its last copy to the host.

Usage: python3 bench/diag_first_audio.py [--trace out.json]  (a Chrome trace, for Perfetto)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from torch.profiler import ProfilerActivity, profile

from ishowttsd.api import STREAM_FIRST_CHUNK_BYTES
from ishowttsd.engine.f5 import Engine
from ishowttsd.engine.spec import ModelSpec, SynthesisRequest, VoiceSpec

TEXT = "Welcome back to the stream, everyone, thanks for the follows and the subs. Stay tuned, and tell your friends."


def _events(prof: Any) -> list[Any]:
    return [e for e in prof.events() if e.time_range is not None]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", type=Path)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    spec = ModelSpec(architecture="F5TTS_v1_Base", weights="untrained", device="cuda", compile=True, cuda_graphs=True)
    eng = Engine.load(spec, vocoder="untrained")
    voice = eng.prepare_voice(VoiceSpec(id="default"))
    eng.warm_up(voice, [7])
    req = SynthesisRequest(text=TEXT, voice_id="default", nfe=7, seed=1234)
    marks: list[float] = []

    def run() -> float:
        marks.clear()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        eng.synthesize(
            voice,
            req,
            on_chunk=lambda _a: marks.append(time.perf_counter()) if not marks else None,
            first_chunk_bytes=STREAM_FIRST_CHUNK_BYTES,
        )
        return (marks[0] - t0) * 1e3

    firsts = [run() for _ in range(args.runs)]
    print(f"DIAG first audio, engine direct: {', '.join(f'{t:.2f}' for t in firsts)} ms", flush=True)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof, torch.profiler.record_function(
        "request"
    ):
        first = run()
    if args.trace:
        prof.export_chrome_trace(str(args.trace))
    print(f"DIAG profiled first audio {first:.2f} ms (on_chunk, host clock)")
    _report("stream, to the first chunk's samples on the host", _events(prof), last_copy=False)
    # A whole one-chunk request (the bench's WAV): how much of its GPU time is idle.
    for _ in range(3):
        eng.synthesize(voice, req)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof, torch.profiler.record_function(
        "request"
    ):
        t = time.perf_counter()
        eng.synthesize(voice, req)
        whole = (time.perf_counter() - t) * 1e3
    print(f"DIAG profiled whole request {whole:.2f} ms (host clock)")
    _report("whole request, to its samples on the host", _events(prof), last_copy=True)


def _report(label: str, events: list[Any], last_copy: bool) -> None:
    request = next(e for e in events if e.name == "request")
    t0 = request.time_range.start  # microseconds, the profiler's clock
    device = sorted(
        (e for e in events if e.device_type == torch.autograd.DeviceType.CUDA),
        key=lambda e: e.time_range.start,
    )
    launches = sorted(
        (e for e in events if e.name in ("cudaGraphLaunch", "cudaLaunchKernel", "cuLaunchKernel", "cudaMemcpyAsync")),
        key=lambda e: e.time_range.start,
    )
    copies = [e for e in device if "DtoH" in e.name or "Device -> Pinned" in e.name]
    print(f"DIAG == {label}")
    if launches:
        at = (launches[0].time_range.start - t0) / 1e3
        print(f"DIAG first launch on the host at {at:.2f} ms ({launches[0].name})")
    print(f"DIAG first kernel on the GPU at {(device[0].time_range.start - t0) / 1e3:.2f} ms ({device[0].name[:60]})")
    if not copies:
        print("DIAG no device-to-host copy found; device event names: " + ", ".join({e.name[:30] for e in device}))
        return
    copy_end = (copies[-1] if last_copy else copies[0]).time_range.end
    print(f"DIAG samples on the host at {(copy_end - t0) / 1e3:.2f} ms ({len(copies)} copies to the host in all)")
    window = [e for e in device if e.time_range.end <= copy_end]
    busy = 0.0
    gaps: list[tuple[float, str, str]] = []
    end = window[0].time_range.start
    for prev, e in zip([None, *window[:-1]], window, strict=True):
        start = e.time_range.start
        if start > end:
            gaps.append((start - end, prev.name[:50] if prev else "-", e.name[:50]))
        busy += max(0.0, e.time_range.end - max(start, end))
        end = max(end, e.time_range.end)
    total_gap = sum(g for g, _, _ in gaps)
    print(
        f"DIAG GPU from its first kernel to then: {len(window)} kernels/copies, busy {busy / 1e3:.2f} ms, "
        f"idle {total_gap / 1e3:.2f} ms in {len(gaps)} gaps"
    )
    for gap, before, after in sorted(gaps, reverse=True)[:10]:
        print(f"DIAG   gap {gap:8.1f} us after {before!r} before {after!r}")


if __name__ == "__main__":
    main()
