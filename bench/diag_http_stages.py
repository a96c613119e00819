#!/usr/bin/env python3
"""Where an HTTP request's time goes outside the engine (issue 8 diagnostics).

Starts a daemon as ``rtf.py`` does, with ``bench/http_stage_shim`` on its ``PYTHONPATH``: that
shim records when each stage of a request begins (bytes arrive, handler, queued, the worker's
turns, encode, send, a stream's first chunk handed over and written).  The client (aiohttp, as
``rtf.py``'s) marks when it posts, gets the headers and the first and last bytes.  Both use the
same monotonic clock, so each stage is printed as the median milliseconds since the post, for
whole WAV responses and for streams.

Usage: python3 bench/diag_http_stages.py [--gpu] [--n 20] [--json out.json] [--client raw]
                                        [--ab NAME=VALUE[,...] --rounds R]
(without --gpu: the tiny model on the CPU, whose engine times mean nothing).  ``--ab`` runs the
daemon alternately plain and with the shim's variables set (``SHIM_UVLOOP=1``: the event loop
on uvloop; ``SHIM_SWITCH_INTERVAL=S``: the GIL's switch interval), one compile cache for all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import rtf  # noqa: E402  (bench/ is on sys.path when run as python3 bench/x.py)

Sample = tuple[float, float, float, float, int]  # post, headers, first byte, last byte, bytes


def _body(kind: str, text: str) -> dict[str, Any]:
    """rtf.py's request: a whole WAV, or a stream of raw PCM."""
    return rtf._speech_body(text, stream=kind == "stream", fmt="wav" if kind == "wav" else "pcm")


def _requests_raw(url: str, text: str, n: int) -> dict[str, list[Sample]]:
    """As :func:`_requests`, with the bare socket client (raw_http.py)."""
    from raw_http import RawHttp

    client = RawHttp.for_url(url)
    out: dict[str, list[Sample]] = {"wav": [], "stream": []}
    try:
        for kind in out:
            for i in range(n + 3):
                t0 = time.perf_counter()
                total, first, data = client.post_json("/v1/audio/speech", _body(kind, text))
                if i >= 3:
                    out[kind].append((t0, client.headers_at, t0 + first, t0 + total, len(data)))
                time.sleep(0.03)
    finally:
        client.close()
    return out


async def _requests(url: str, text: str, n: int) -> dict[str, list[Sample]]:
    import aiohttp

    out: dict[str, list[Sample]] = {"wav": [], "stream": []}
    async with aiohttp.ClientSession() as session:
        for kind in out:
            for i in range(n + 3):  # three warm-ups: a stream's first chunk is a length of its own
                body = _body(kind, text)
                t0 = time.perf_counter()
                first, size = 0.0, 0
                async with session.post(url + "/v1/audio/speech", json=body) as r:
                    headers = time.perf_counter()
                    async for piece in r.content.iter_any():
                        first = first or time.perf_counter()
                        size += len(piece)
                if i >= 3:
                    out[kind].append((t0, headers, first, time.perf_counter(), size))
                await asyncio.sleep(0.03)
    return out


def _gc_inside(samples: list[Sample], marks: list[list[Any]]) -> tuple[int, float, float]:
    """Python's collections that started inside a request: count, and mean and largest ms per
    request (the shim marks each collection's start and stop)."""
    spans = []
    start = None
    for what, at, _thread in marks:
        if what == "gc_start":
            start = at
        elif what == "gc_stop" and start is not None:
            spans.append((start, at))
            start = None
    per_request = [[b - a for a, b in spans if t0 <= a <= end] for t0, _h, _f, end, _ in samples]
    totals = [sum(x) * 1e3 for x in per_request]
    return sum(len(x) for x in per_request), statistics.mean(totals), max(totals)


def _stages(samples: list[Sample], marks: list[list[Any]]) -> dict[str, float]:
    rows = []
    for t0, headers, first, end, _ in samples:
        row: dict[str, float] = {}
        for what, at, _thread in marks:
            if what.startswith("gc_"):
                continue
            if t0 <= at <= end + 0.005:
                row.setdefault(what, (at - t0) * 1e3)
        row.update(client_headers=(headers - t0) * 1e3, client_first_byte=(first - t0) * 1e3,
                   client_last_byte=(end - t0) * 1e3)
        rows.append(row)
    names = {k for row in rows for k in row}
    medians = {k: statistics.median([row[k] for row in rows if k in row]) for k in names}
    return dict(sorted(medians.items(), key=lambda kv: kv[1]))


def _run_daemon(work: Path, gpu: bool, n: int, extra_env: dict[str, str], client: str = "aiohttp"
                ) -> tuple[dict[str, list[Sample]], Any]:
    """One daemon with the shim (and ``extra_env``): its requests' client samples and the marks.
    Daemons started in the same ``work`` share its compile cache."""
    port = rtf.free_port()
    args = argparse.Namespace(arch="F5TTS_v1_Base" if gpu else "tiny", device="cuda" if gpu else "cpu",
                              precision="auto")
    cfg = rtf.write_config(work, port, args, gpu, gpu)
    trace = work / "marks.json"
    trace.unlink(missing_ok=True)
    shim = str(HERE / "http_stage_shim")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [shim, os.environ.get("PYTHONPATH")])),
               TRACE_OUT=str(trace), **extra_env)
    with (work / "daemon.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ishowttsd", "--config", str(cfg)], env=env,
                                cwd=str(HERE.parent), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"daemon did not get ready; see {work / 'daemon.log'}") from None
                time.sleep(0.1)
        text = rtf.TEXT if gpu else rtf.TINY_TEXT
        samples = _requests_raw(url, text, n) if client == "raw" else asyncio.run(_requests(url, text, n))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return samples, json.loads(trace.read_text())


def _parse_env(spec: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in spec.split(",") if item]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"--ab wants NAME=VALUE[,NAME=VALUE...], got {spec!r}")
    return dict(pairs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true", help="the full model on CUDA, compiled and graphed")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--ab", metavar="NAME=VALUE[,...]",
                    help="also run the daemon with these variables set (the shim's SHIM_UVLOOP=1, "
                         "SHIM_SWITCH_INTERVAL=S, SHIM_GC_FREEZE=1), alternating with the plain daemon")
    ap.add_argument("--rounds", type=int, default=1, help="with --ab: plain / variant pairs to run")
    ap.add_argument("--client", choices=("aiohttp", "raw"), default="aiohttp",
                    help="the client: aiohttp's (as rtf.py's main figures) or the bare socket one (raw_http.py)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ishowttsd-stages-"))
    variants = [("plain", {})] + ([(a.ab, _parse_env(a.ab))] if a.ab else [])
    report: dict[str, dict[str, dict[str, float]]] = {}
    for round_no in range(1, (a.rounds if a.ab else 1) + 1):
        for name, extra_env in variants:
            samples, marks = _run_daemon(work, a.gpu, a.n, extra_env, a.client)
            label = f"{name} round {round_no}" if a.ab else ""
            for kind, stages in ((kind, _stages(s, marks)) for kind, s in samples.items()):
                report[f"{label} {kind}".strip()] = stages
                print(f"DIAG {label + ' ' if label else ''}{kind} ({len(samples[kind])} requests, "
                      f"{samples[kind][-1][4]} bytes): median ms since the client's post")
                for stage, ms in stages.items():
                    print(f"DIAG   {stage:<18} {ms:8.3f}")
                count, mean_ms, max_ms = _gc_inside(samples[kind], marks)
                print(f"DIAG   Python collections inside these requests: {count}, "
                      f"{mean_ms:.3f} ms per request on average, {max_ms:.3f} at most")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
