#!/usr/bin/env python3
"""First request of a new text length, on the engine as the daemon runs it (compile + CUDA
graphs, fp16, full size): what does a length the engine has not seen cost, and where?

The solve runs in bucket-shaped graphs captured at warm-up; what still runs at each request's
exact length is the vocoder.  Per new length: the first and the second call, with their stage
times (text prep, ODE, vocoder); then a steady-state median of one text.

With ``--stream``: streamed requests (the API's short first chunk, so two chunks or more),
each new text twice, with the time to the first chunk; then texts over one chunk's budget.
Is a slow first call paid per new length, or once per process for multi-chunk requests?

Earlier version (run 5, NOTES.md item 6): cuDNN on/off for the exact-length convolutions.
Usage on the device: python3 bench/diag_new_length.py [--cache-dir DIR] [--stream]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch

from ishowttsd.engine.f5 import Engine
from ishowttsd.engine.spec import ModelSpec, SynthesisRequest, VoiceSpec

TEXT = (
    "welcome back to the stream everyone thanks for the follows and the subs today we try something new "
    "with the old mine at the bottom of the map so grab a drink this will take a while"
)
WORDS = TEXT.split(" ")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--lengths", type=int, default=6, help="new lengths per variant")
    ap.add_argument("--stream", action="store_true", help="streamed and multi-chunk requests")
    ap.add_argument("--profile-first-long", action="store_true", help="profile the first long request")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    print("DIAG", torch.cuda.get_device_name(0), torch.__version__)
    spec = ModelSpec(architecture="F5TTS_v1_Base", weights="untrained", device="cuda", compile=True, cuda_graphs=True)
    eng = Engine.load(spec, vocoder="untrained", cache_dir=args.cache_dir)
    voice = eng.prepare_voice(VoiceSpec(id="default"))
    eng.warm_up(voice, [7])

    def call(text: str, first_chunk_bytes: int | None = None) -> dict[str, float]:
        t0 = time.perf_counter()
        first: list[float] = []
        s = eng.synthesize(
            voice,
            SynthesisRequest(text=text, voice_id="default", nfe=7, seed=1),
            on_chunk=lambda _a: first.append(time.perf_counter() - t0) if not first else None,
            first_chunk_bytes=first_chunk_bytes,
        )
        return {**{k: v * 1e3 for k, v in s.timings.items()}, "chunks": s.chunks, "first": first[0] * 1e3}

    def fmt(t: dict[str, float]) -> str:
        return (
            f"{t['total']:.1f} ms (text {t['text_prep']:.1f}, ode {t['ode']:.1f}, vocoder {t['vocoder']:.1f}; "
            f"{t['chunks']:.0f} chunks, first chunk at {t['first']:.1f} ms)"
        )

    if args.profile_first_long:
        profile_first_long(call)
        return
    if args.stream:
        stream(call, fmt)
        return

    extras = []
    for n in range(1, args.lengths + 1):
        text = " ".join(WORDS[: 4 + 3 * n]) + "."
        first, second = call(text), call(text)
        extras.append(first["total"] - second["total"])
        print(f"DIAG {len(text)} bytes: first {fmt(first)}, second {fmt(second)}")
    print(f"DIAG a new length costs +{statistics.median(extras):.1f} ms (median of {len(extras)})")
    steady = [call("Welcome back to the stream, everyone. Today we try something new.")["total"] for _ in range(12)]
    print(f"DIAG steady median {statistics.median(steady[2:]):.1f} ms")

def stream(call: Callable[..., dict[str, float]], fmt: Callable[[dict[str, float]], str]) -> None:
    from ishowttsd.api import STREAM_FIRST_CHUNK_BYTES

    for n in range(3):
        text = "Hey chat, " + " ".join(WORDS[: 6 + 5 * n]) + "."
        first, second = call(text, STREAM_FIRST_CHUNK_BYTES), call(text, STREAM_FIRST_CHUNK_BYTES)
        print(f"DIAG stream {len(text)} bytes: first {fmt(first)}, second {fmt(second)}")
    for n in range(3):
        text = ", ".join([TEXT] * 2)[: 190 + 15 * n] + "."
        first, second = call(text), call(text)
        print(f"DIAG whole {len(text)} bytes: first {fmt(first)}, second {fmt(second)}")


def profile_first_long(call: Callable[..., dict[str, float]]) -> None:
    """Where does the first two-chunk request of about 190 bytes spend its extra vocoder time?
    The host side of each op, first call against second."""
    from torch.profiler import ProfilerActivity, profile

    text = ", ".join([TEXT] * 2)[:190] + "."
    for label in ("first", "second"):
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t = call(text)
        print(f"DIAG {label}: {t['total']:.1f} ms, vocoder {t['vocoder']:.1f} ms")
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=14, max_name_column_width=60))


if __name__ == "__main__":
    main()
