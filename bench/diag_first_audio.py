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

With ``--timeline`` it adds, without the profiler (which slows the host), the first chunk's
host and GPU marks on one time axis: host marks with ``time.perf_counter``, GPU marks with CUDA
events recorded beside them (a GPU mark is when the GPU reached that point of the stream).

Usage: python3 bench/diag_first_audio.py [--trace out.json] [--timeline [--no-profile] [--worker-thread] [--old-tokens]]
(the trace is a Chrome trace, for Perfetto)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from torch.profiler import ProfilerActivity, profile

from ishowttsd.api import STREAM_FIRST_CHUNK_BYTES
from ishowttsd.engine.f5 import Engine
from ishowttsd.engine.spec import ModelSpec, SynthesisRequest, VoiceSpec
from ishowttsd.worker import Worker

TEXT = "Welcome back to the stream, everyone, thanks for the follows and the subs. Stay tuned, and tell your friends."


def _events(prof: Any) -> list[Any]:
    return [e for e in prof.events() if e.time_range is not None]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", type=Path)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timeline", action="store_true", help="the first chunk's host and GPU marks, no profiler")
    ap.add_argument("--no-profile", action="store_true", help="skip the profiled runs (with --timeline)")
    ap.add_argument("--worker-thread", action="store_true",
                    help="then the timeline again, each call run by a thread woken as the daemon's worker is")
    ap.add_argument("--old-tokens", action="store_true",
                    help="then the timeline again with the token ids made as upstream makes them (NOTES item 51)")
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
    if not args.no_profile:
        _profiled(eng, voice, req, run, args.trace)
    if args.timeline:  # after the plain runs: it wraps the engine's methods (and unwraps them)
        _timeline(eng, voice, req, args.runs)
    if args.worker_thread:
        print("DIAG == the same, each call on the daemon's worker thread (ishowttsd.worker.Worker)")
        worker = Worker(queue_size=1)
        worker.start()
        try:
            _timeline(eng, voice, req, args.runs, lambda fn: worker.call(lambda _slot: fn()).result())
        finally:
            worker.shutdown(5.0)
    if args.old_tokens:
        setattr(eng, "_tokens", partial(_upstream_tokens, eng))  # noqa: B010
        print("DIAG == the same, token ids made as upstream makes them")
        _timeline(eng, voice, req, args.runs)


def _upstream_tokens(eng: Any, ref_text: str, gen_text: str) -> torch.Tensor:
    """What ``Engine._tokens`` did before item 51: upstream's pad_sequence, then a pinned copy."""
    from ishowttsd.engine.upstream import convert_char_to_pinyin, list_str_to_idx

    ids = list_str_to_idx(convert_char_to_pinyin([ref_text + gen_text]), eng.vocab)
    return ids.pin_memory().to(eng.device, non_blocking=True)


def _profiled(eng: Any, voice: Any, req: SynthesisRequest, run: Any, trace: Path | None) -> None:
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof, torch.profiler.record_function(
        "request"
    ):
        first = run()
    if trace:
        prof.export_chrome_trace(str(trace))
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


def _timeline(eng: Any, voice: Any, req: SynthesisRequest, runs: int,
              call: Callable[[Callable[[], None]], None] = lambda fn: fn()) -> None:
    """Median over ``runs`` of each mark's first occurrence (the first chunk's), ms since the call
    (``call`` runs it: here, or on another thread)."""
    import statistics

    host: list[tuple[str, float]] = []
    gpu: list[tuple[str, Any]] = []

    def mark(name: str, on_gpu: bool = False) -> None:
        host.append((name, time.perf_counter()))
        if on_gpu:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            gpu.append((name, event))

    wrapped_attrs: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, name: str, before: str | None, after: str | None, on_gpu: bool = False) -> None:
        if not hasattr(owner, name):  # list_str_to_idx: only the old tokens path calls it
            return
        inner = getattr(owner, name)
        wrapped_attrs.append((owner, name, owner.__dict__.get(name)))

        def wrapped(*a: Any, **k: Any) -> Any:
            if before:
                mark(before, on_gpu)
            out = inner(*a, **k)
            if after:
                mark(after, on_gpu)
            return out

        setattr(owner, name, wrapped)

    from ishowttsd.engine import f5, sampler, text, upstream

    wrap(eng, "_tokens", "text prepared", "tokens on the device")
    wrap(f5, "convert_char_to_pinyin", "pinyin begins", "pinyin done")
    wrap(upstream, "list_str_to_idx", None, "ids made")
    wrap(text, "estimate_frames", "frame count begins", None)
    wrap(sampler, "initial_noise", "noise begins", "noise drawn")
    wrap(f5, "_peak", "vocoder queued, peak begins", None)
    wrap(f5, "_pcm16", "PCM begins", None)
    wrap(f5, "_to_pinned", "copies to the host begin", None)
    wrap(eng, "_launch", "chunk launch begins", "chunk queued (its end on the GPU)", on_gpu=True)
    wrap(eng.fast, "sample", None, "solve queued (its end on the GPU)", on_gpu=True)
    wrap(eng, "_collect", "wait for the chunk", "chunk on the host")
    rows: dict[str, list[float]] = {}
    for _ in range(runs):
        host.clear()
        gpu.clear()
        torch.cuda.synchronize()
        start = torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        call(lambda: eng.synthesize(voice, req, on_chunk=lambda _a: mark("on_chunk"),
                                    first_chunk_bytes=STREAM_FIRST_CHUNK_BYTES))
        torch.cuda.synchronize()
        seen: set[str] = set()
        for name, at in host:
            if "host " + name not in seen:
                seen.add("host " + name)
                rows.setdefault("host " + name, []).append((at - t0) * 1e3)
        for name, event in gpu:
            if "GPU " + name not in seen:
                seen.add("GPU " + name)
                rows.setdefault("GPU " + name, []).append(start.elapsed_time(event))
    print(f"DIAG == the first chunk, host and GPU marks (median of {runs}, ms since the call)")
    for name, times in sorted(rows.items(), key=lambda kv: statistics.median(kv[1])):
        print(f"DIAG   {statistics.median(times):7.3f}  {name}")
    for owner, name, own in reversed(wrapped_attrs):  # unwrapped, for a second timeline
        if own is None:
            delattr(owner, name)
        else:
            setattr(owner, name, own)


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
