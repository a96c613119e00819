#!/usr/bin/env python3
"""Where a fast-path request spends its time on the GPU (issue 8 diagnostics).

For one request length (default: the issue's 1457 frames) it prints, in one process:
- compile + capture seconds, the time of text embedding + 7-step solve (median of CUDA-event
  timings after warm-up) and its distance to the fp32 eager solve (eager fp16's for scale);
- the vocoder's time;
- the top GPU kernels of one solve, from torch.profiler.

Usage: python3 bench/diag_step.py [--frames 1457] [--no-compile] [--profile]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from cuda_timing import cuda_ms

from ishowttsd.engine import accel, sampler
from ishowttsd.engine.f5 import Engine
from ishowttsd.engine.spec import ModelSpec, VoiceSpec

TEXT = "Welcome back to the stream everyone, thanks for the follows and the subs today. " * 3


# --ab NAME: what is undone, and the FastWeights fields that undo it
AB = {
    "rotation": ("kernels.rotate_qkv (undone: inductor rotates)", {"fused_rotation": False, "attention": "mask"}),
    "key-column": ("the key-validity column + cuDNN (undone: SDPA's mask)", {"attention": "mask"}),
    "flash": ("FlashAttention with key counts (undone: cuDNN over the key column)", {"attention": "column"}),
    "gelu-epilogue": ("bias + GELU in the matmul epilogue (undone: inductor's kernel)", {"gelu_epilogue": False}),
    "qkv-epilogue": ("q/k/v bias + rotation in QuACK's GEMM epilogue (undone: cuBLAS + rotate_qk)", {}),
    "text-compile": ("the text embedding compiled (undone: eager kernels in its graph)", {}),
    "length-only-dynamic": ("only the length symbolic (undone: torch.compile(dynamic=True), every dim)", {}),
    # Not an undo but a trial: the B side compiles with inductor's Triton GEMM templates, which
    # can fuse the residual adds and gates into the matmuls' epilogues.
    "max-autotune": ("cuBLAS matmuls (B side: inductor max-autotune, Triton GEMMs with fused epilogues)", {}),
    "pdl": ("inductor's kernels with programmatic dependent launch (undone: plain launches)", {}),
}


def recompile(solver: accel.FastSolver, **options: Any) -> None:
    """The solver's regions compiled again with other ``torch.compile`` options: before
    bench/NOTES.md item 25 every dimension was symbolic (``dynamic=True``); item 33 tried
    ``mode="max-autotune-no-cudagraphs"`` (Triton GEMM templates beside cuBLAS's)."""
    solver.regions = accel.Regions(
        embed=torch.compile(accel._embed_input, **options),
        block=torch.compile(accel._block, **options),
        finish=torch.compile(accel._finish, **options),
        text=torch.compile(accel.masked_text_embedding, **options),
        dynamic=True,
    )
    solver.step = functools.partial(accel.masked_step, solver.regions)
    solver.embed_text = functools.partial(accel.text_embedding, solver.regions)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=1457)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--ab",
        choices=sorted(AB),
        action="append",
        default=[],
        help="also time the solve with one fast-path choice undone (same card, same process)",
    )
    args = ap.parse_args()
    device = torch.device("cuda")
    eng = Engine.load(ModelSpec(architecture="F5TTS_v1_Base", weights="untrained", device="cuda"), vocoder="untrained")
    voice = eng.prepare_voice(VoiceSpec(id="default"))
    ref = voice.reference
    ref_mel = eng._reference_mel(ref, 0.1)
    ids = eng._tokens(ref.text, TEXT)
    frames = args.frames
    noise = torch.randn(1, frames, 100, device=device, generator=torch.Generator(device).manual_seed(0))
    kw = {"nfe": 7, "cfg_strength": 2.0, "sway": -1.0, "noise": noise}
    with torch.inference_mode():
        want = sampler.sample(eng._fp32_model(), ref_mel, ids, frames, **kw)
        eager = sampler.sample(eng.dit, ref_mel, ids, frames, **kw)

    def rel(x: torch.Tensor) -> float:
        return float((x - want).norm() / want.norm())

    print(f"DIAG eager fp16 vs fp32 eager: relative {rel(eager):.2e} (the fp16 rounding scale)")
    t0 = time.perf_counter()
    fast = accel.FastSolver(eng.dit, eng.device, compile=not args.no_compile, graphs=True)
    setup = time.perf_counter() - t0
    print(f"DIAG solver set-up {setup:.1f} s, attention: {fast.weights.attention}, pdl: {fast.pdl}", flush=True)
    with torch.inference_mode():
        t0 = time.perf_counter()
        fast.precapture([frames])
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        fast.precapture([frames + 64, frames + 128])
        torch.cuda.synchronize()
        more = time.perf_counter() - t0
        got = fast.sample(ref_mel, ids, frames, **kw)
        solve = cuda_ms(lambda: fast.sample(ref_mel, ids, frames, **kw))
        print(
            f"DIAG fast path: compile+capture {first:.1f} s, two more buckets {more:.1f} s, "
            f"text embedding + NFE7 solve {solve:.2f} ms, relative to fp32 {rel(got):.2e}",
            flush=True,
        )
        for n in (ref.frames + 250, ref.frames + 340):  # first chunks of about 27 and 37 bytes
            t = cuda_ms(lambda n=n: fast.sample(ref_mel, ids[:, :40], n, **{**kw, "noise": noise[:, :n]}))
            print(f"DIAG short first chunk: {n} frames (bucket {accel.bucket(n)}): {t:.2f} ms", flush=True)
        # Two requests of the bucket as one batch (the worker does not batch yet).
        item = accel.BatchItem(ref_mel, ids, frames, noise)
        fast.precapture([frames], rows=2)
        te_single = cuda_ms(lambda: fast.sample_batch([item], nfe=7, cfg_strength=2.0, sway=-1.0))
        te_pair = cuda_ms(lambda: fast.sample_batch([item, item], nfe=7, cfg_strength=2.0, sway=-1.0))
        print(
            f"DIAG batching: one request {te_single:.2f} ms, two requests in one batch {te_pair:.2f} ms "
            f"({te_pair / 2:.2f} ms each)",
            flush=True,
        )
        mel = torch.randn(1, 100, frames - ref.frames, device=device)
        with sampler.exact_length_convs(device):
            voc = cuda_ms(lambda: eng.vocoder(mel))
        print(f"DIAG frames {frames} (bucket {accel.bucket(frames)}): vocoder {voc:.2f} ms")
        first_n = ref.frames + 250  # a stream's first chunk (about 27 bytes)
        first_kw = {**kw, "noise": noise[:, :first_n]}
        fast.precapture([first_n])
        for name in args.ab:
            other = accel.FastSolver(
                eng.dit, eng.device, compile=not args.no_compile, graphs=True, pdl=False if name == "pdl" else None
            )
            other.weights = other.weights._replace(**AB[name][1])
            if name == "qkv-epilogue":
                other.weights = accel.fast_weights(eng.dit, qkv_epilogue=False)
            if name == "text-compile":
                other.regions = other.regions._replace(text=accel.masked_text_embedding)
                other.embed_text = functools.partial(accel.text_embedding, other.regions)
            if name == "length-only-dynamic":
                torch._dynamo.reset()  # a fresh trace, as a restart would do
                recompile(other, dynamic=True)
            if name == "max-autotune":
                recompile(other, mode="max-autotune-no-cudagraphs")
            t0 = time.perf_counter()
            other.precapture([frames, first_n])
            capture = time.perf_counter() - t0
            got_o = other.sample(ref_mel, ids, frames, **kw)
            # Alternate the two, five rounds each: clocks and temperature drift by a few percent
            # within a minute, more than some of the differences measured here.
            rounds: dict[str, list[float]] = {"k": [], "o": [], "k1": [], "o1": []}
            for _ in range(5):
                for tag, solver in (("k", fast), ("o", other)):
                    rounds[tag].append(cuda_ms(lambda s=solver: s.sample(ref_mel, ids, frames, **kw)))
                    rounds[tag + "1"].append(
                        cuda_ms(lambda s=solver: s.sample(ref_mel, ids[:, :40], first_n, **first_kw))
                    )
            med = {tag: statistics.median(times) for tag, times in rounds.items()}
            print(
                f"DIAG A/B {AB[name][0]}: fast path {med['k']:.2f} ms, without {med['o']:.2f} ms; "
                f"first chunk ({first_n} frames) {med['k1']:.2f} against {med['o1']:.2f} ms "
                f"(relative to fp32 {rel(got):.2e} and {rel(got_o):.2e}; its first buckets {capture:.1f} s)",
                flush=True,
            )
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fast.sample(ref_mel, ids, frames, **kw)
                torch.cuda.synchronize()
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))


if __name__ == "__main__":
    main()
