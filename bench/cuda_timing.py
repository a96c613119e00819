"""GPU-side timing for the diagnostics: CUDA events around a call, after warm-up calls.

Events time what the GPU did between them, so a call that only enqueues work (CUDA graph
replays) is timed by its kernels, not by when the host returned.  Scripts in bench/ import
this as ``cuda_timing`` (their own folder is on ``sys.path`` when run as ``python3 bench/x.py``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch


def cuda_ms(fn: Callable[[], object], repeats: int = 20, warmup: int = 5) -> float:
    """Median milliseconds of ``fn`` over ``repeats`` timed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def graph_ms(fn: Callable[[], object], calls: int = 20, repeats: int = 20) -> float:
    """Median GPU milliseconds per call of ``fn``, replayed from one CUDA graph of ``calls`` calls.

    For kernels of a tenth of a millisecond, timing single calls counts the host's launch
    latency too (the start event fires before the host has launched the kernel); a graph
    replay launches them back to back, as the fast path's own graphs do.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return cuda_ms(graph.replay, repeats=repeats) / calls
