#!/usr/bin/env python3
"""Could GEMMs with fused epilogues take the block's memory-bound passes away?  QuACK (the
``quack-kernels`` package flash-attn-4 brings, CuTe DSL GEMMs for Hopper) against cuBLAS at the
bench's shape (M = 2944 rows: the 1472-frame bucket, CFG doubled).

The block's passes that a GEMM epilogue could absorb (bench/NOTES.md item 36): the rotation of
q and k after the q/k/v product (7.2 us a block), and the gated residual adds after the output
and feed-forward products (part of the two norm passes, 6.1 + 9.7 us).  Timed, per product:

- cuBLAS (torch's ``F.linear`` with bias), as the fast path runs it now;
- QuACK's plain GEMM with bias (is it as fast as cuBLAS here?);
- QuACK with the epilogue: RoPE computed in the kernel for q and k, v passed through
  (``rope_posfreq_epi``), and ``D = C + gate * (acc + bias)`` (the gated residual; gate and
  bias per column, as the AdaLN gate is per step, not per row).

Times are GPU microseconds per product (CUDA graph replay where capture works, else events).
Usage on the device (flash-attn-4 and its packages installed): python3 bench/diag_quack.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from cuda_timing import cuda_ms, graph_ms

M, HEADS, D = 2944, 16, 64


def timed(name: str, fn: Callable[[], object], flop: float) -> None:
    t0 = time.perf_counter()
    try:
        fn()
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        try:
            us, how = graph_ms(fn, calls=20) * 1e3, "graph"
        except Exception as exc:  # capture may be refused: events then
            torch.cuda.synchronize()
            us, how = cuda_ms(fn, repeats=50) * 1e3, f"events ({type(exc).__name__})"
        print(f"DIAG {name:<58} {us:7.2f} us  {flop / us / 1e6:5.0f} TFLOP/s  [{how}; first call {first:.1f} s]")
    except Exception as exc:
        print(f"DIAG {name:<58} FAILED {type(exc).__name__}: {str(exc)[:400]}")


def main() -> None:
    print("DIAG", torch.cuda.get_device_name(0), torch.__version__, flush=True)
    t0 = time.perf_counter()
    from quack.epilogue.frontend import gemm_epilogue
    from quack.epilogue.rotary import make_interleaved_inv_freq, rope_posfreq_epi
    from quack.gemm_interface import gemm

    print(f"DIAG quack imported in {time.perf_counter() - t0:.1f} s", flush=True)

    @gemm_epilogue()
    def gated_residual(acc, c, gate, bias):  # type: ignore[no-untyped-def]
        return {"D": c + gate * (acc + bias)}

    gen = torch.Generator(device="cuda").manual_seed(0)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", dtype=torch.float16, generator=gen) * scale

    # q/k/v: 1024 -> 3072, RoPE on the first 2048 columns
    a = rand(M, 1024)
    w, b = rand(3072, 1024, scale=1024**-0.5), rand(3072, scale=0.1)
    flop = 2 * M * 1024 * 3072
    timed("qkv: cuBLAS F.linear + bias", lambda: F.linear(a, w, b), flop)
    timed("qkv: QuACK gemm + bias", lambda: gemm(a, w.t(), bias=b), flop)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2, dtype=torch.float64, device="cuda") / D))
    freq = make_interleaved_inv_freq(inv_freq, 2 * HEADS * D, HEADS * D)[None].float()
    pos = (torch.arange(M, device="cuda") % (M // 2)).float()[None]
    timed(
        "qkv: QuACK gemm + RoPE epilogue (q, k; v passed)",
        lambda: rope_posfreq_epi(a, w.t(), pos=pos, freq=freq),
        flop,
    )
    # As the engine calls it (engine/fused_gemm.py): with the bias, and QuACK's default tile
    # config instead of autotuning (which would run for every bucket's row count at start).
    from ishowttsd.engine import fused_gemm

    bias_pos = fused_gemm.rope_positions(M // 2, 2, torch.device("cuda"))
    timed(
        "qkv: engine's fused_gemm.qkv_rope (bias, default config)",
        lambda: fused_gemm.qkv_rope(a, w, b, bias_pos, freq),
        flop,
    )
    for name, k_in in (("out", 1024), ("ff_out", 2048)):
        a = rand(M, k_in)
        w, b = rand(1024, k_in, scale=k_in**-0.5), rand(1024, scale=0.1)
        x, gate = rand(M, 1024), rand(1, 1024, scale=0.5)
        flop = 2 * M * k_in * 1024
        timed(f"{name}: cuBLAS F.linear + bias", lambda a=a, w=w, b=b: F.linear(a, w, b), flop)
        timed(
            f"{name}: cuBLAS + bias, then x + gate * y (torch)",
            lambda a=a, w=w, b=b, x=x, gate=gate: x + gate * F.linear(a, w, b),
            flop,
        )
        timed(f"{name}: QuACK gemm + bias", lambda a=a, w=w, b=b: gemm(a, w.t(), bias=b), flop)
        timed(
            f"{name}: QuACK gemm, epilogue x + gate * (acc + bias)",
            lambda a=a, w=w, b=b, x=x, gate=gate: gated_residual(a, w.t(), x, gate=gate, bias=b[None]),
            flop,
        )
        want = x.float() + gate.float() * F.linear(a.float(), w.float(), b.float())
        try:
            got = gated_residual(a, w.t(), x, gate=gate, bias=b[None])["D"].float()
            print(f"DIAG {name}: epilogue result vs fp32, max abs err {float((got - want).abs().max()):.3e}")
        except Exception as exc:
            print(f"DIAG {name}: epilogue check FAILED {type(exc).__name__}: {str(exc)[:300]}")


if __name__ == "__main__":
    main()
