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
