"""Loaded by ``bench/diag_http_stages.py`` into the daemon it starts (``PYTHONPATH``): wraps the
request path's functions to record when each stage of a request begins, and writes the marks
to ``$TRACE_OUT`` as JSON at exit.  A diagnostic only; the daemon never imports this itself."""

from __future__ import annotations

import asyncio
import atexit
import builtins
import concurrent.futures
import gc
import json
import os
import sys
import threading
import time
from typing import Any

_MARKS: list[tuple[str, float, str]] = []


def _mark(what: str) -> None:
    _MARKS.append((what, time.perf_counter(), threading.current_thread().name))


def _wrap(owner: Any, name: str, before: str | None = None, after: str | None = None) -> None:
    orig = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before:
            _mark(before)
        out = orig(*args, **kwargs)
        if after:
            _mark(after)
        return out

    setattr(owner, name, wrapped)


def _freeze_at_first(handler: Any) -> None:
    """``gc.freeze()`` once, when the first request's bytes arrive (the daemon is loaded by then)."""
    orig = handler.data_received
    done: list[bool] = []

    def data_received(self: Any, data: bytes) -> None:
        if not done:
            done.append(True)
            gc.collect()
            gc.freeze()
            _mark(f"gc_frozen_{gc.get_freeze_count()}")
        orig(self, data)

    handler.data_received = data_received


def _wrap_async(owner: Any, name: str, before: str, after: str) -> None:
    orig = getattr(owner, name)

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        _mark(before)
        out = await orig(*args, **kwargs)
        _mark(after)
        return out

    setattr(owner, name, wrapped)


def _patch() -> None:
    import aiohttp.web_protocol as web_protocol
    from aiohttp import web

    import ishowttsd.api as api
    import ishowttsd.worker as worker

    _wrap(web_protocol.RequestHandler, "data_received", before="data_received")
    if os.environ.get("SHIM_GC_FREEZE") == "1":
        _freeze_at_first(web_protocol.RequestHandler)
    _wrap_async(api, "speech", "handler", "handler_end")  # create_app looks it up when called
    _wrap(worker.Worker, "_enqueue", after="enqueued")
    _wrap(worker.Worker, "_advance", before="advance_in")
    _wrap_async(api, "_encode", "encode_start", "encoded")
    _wrap_async(api, "_send", "send_start", "send_end")
    _wrap(api.ChunkRelay, "push", before="push")
    _wrap(api.ChunkRelay, "first_sent", before="first_sent")
    _wrap(api.audio_format, "stream_piece", before="piece_encode", after="piece_encoded")
    # The loop's side of a hand-off: it woke and queued the chunk (not the word that the job is
    # under way, which comes before); the stream's headers went out.
    put_nowait = asyncio.Queue.put_nowait

    def put_marked(self: Any, item: Any) -> None:
        if item is not None and not isinstance(item, api._UnderWay):
            _mark("loop_put")
        put_nowait(self, item)

    asyncio.Queue.put_nowait = put_marked  # type: ignore[method-assign]
    _wrap(api.ChunkRelay, "under_way", before="under_way")
    _wrap_async(web.StreamResponse, "prepare", "prepare", "prepared")
    orig_advance = worker.Worker._advance

    def advance(self: Any, job: Any, steps: Any) -> bool:
        ended = orig_advance(self, job, steps)
        if not ended:
            _mark("job_yield")  # the host has queued the job's work and waits for the GPU
        return bool(ended)

    worker.Worker._advance = advance  # type: ignore[method-assign]
    # The job's end as the event loop learns it: marked before the future wakes the loop (after
    # _advance returns, the loop may already be encoding).
    _wrap(concurrent.futures.Future, "set_result", before="job_done")
    # Inside the engine: its first chunk's host steps, to set beside diag_first_audio's timeline.
    from ishowttsd.engine import accel, f5

    _wrap(f5.Engine, "_tokens", before="engine_tokens")
    _wrap(f5.Engine, "_launch", before="launch_in", after="launch_out")
    _wrap(accel.FastSolver, "sample", after="solve_queued")
    _wrap(f5, "_peak", before="vocoder_queued")


def _dump() -> None:
    with open(os.environ["TRACE_OUT"], "w") as f:
        json.dump(_MARKS, f)


def _gc_marks(phase: str, info: dict[str, Any]) -> None:
    """Python's cyclic collections, as marks: does one land inside a request, and for how long."""
    _mark(f"gc_{phase}")


def _variant() -> None:
    """What an A/B of the daemon's host side may change, named in the environment:
    ``SHIM_UVLOOP=1`` runs the event loop on uvloop (for trees from before bench/NOTES.md item
    44, which made it the daemon's default), ``SHIM_SWITCH_INTERVAL=S`` sets the GIL's,
    ``SHIM_GC_FREEZE=1`` moves every object alive at the first request out of the collector's
    reach (``gc.freeze``)."""
    if os.environ.get("SHIM_UVLOOP") == "1":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if os.environ.get("SHIM_SWITCH_INTERVAL"):
        sys.setswitchinterval(float(os.environ["SHIM_SWITCH_INTERVAL"]))


if os.environ.get("TRACE_OUT"):
    atexit.register(_dump)
    gc.callbacks.append(_gc_marks)
    _variant()
    _import = builtins.__import__
    _patched: list[bool] = []

    def _hook(name: str, *args: Any, **kwargs: Any) -> Any:
        module = _import(name, *args, **kwargs)
        if name == "ishowttsd.daemon" and not _patched:
            _patched.append(True)
            _patch()
            # Every later import statement would run this Python function instead of the
            # interpreter's fast path for loaded modules: out of the measured process's way.
            builtins.__import__ = _import
        return module

    builtins.__import__ = _hook
