#!/usr/bin/env python3
"""The DiT block's four matrix products at the bench's shape: how close to the card's rate,
and would another library or a different row count do better?

A solve's matrix products take about 13.4 ms of its 25.4 ms of GPU time on the H100 (bench/
NOTES.md item 30).  Per block and step, with M = 2 * bucket rows (CFG doubles the batch):
q/k/v (1024 -> 3072, bias), output (1024 -> 1024, bias), feed-forward in (1024 -> 2048, bias
and tanh GELU in cuBLASLt's epilogue) and out (2048 -> 1024, bias).  For each: microseconds
per product replayed from a CUDA graph, TFLOP/s, with torch's default BLAS library and with
cuBLASLt preferred, at M = 2944 (the bench's 1472-frame bucket) and at neighbouring row
counts (is a tile count that fills the SMs' waves worth padding for?).

Usage on the device: python3 bench/diag_gemm.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from cuda_timing import graph_ms

SHAPES = {"qkv": (1024, 3072), "out": (1024, 1024), "ff_in+gelu": (1024, 2048), "ff_out": (2048, 1024)}
ROWS = (2816, 2944, 3072, 3328)
LAYERS_X_STEPS = 22 * 7


def main() -> None:
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print("DIAG", torch.cuda.get_device_name(0), torch.__version__, "SMs", sms)
    gen = torch.Generator(device="cuda").manual_seed(0)
    weights = {
        name: (
            torch.randn(n_out, n_in, device="cuda", dtype=torch.float16, generator=gen) / n_in**0.5,
            torch.randn(n_out, device="cuda", dtype=torch.float16, generator=gen) * 0.1,
        )
        for name, (n_in, n_out) in SHAPES.items()
    }
    for library in ("default", "cublaslt"):
        torch.backends.cuda.preferred_blas_library(library if library != "default" else "cublas")
        for m in ROWS:
            total = 0.0
            parts = []
            for name, (n_in, n_out) in SHAPES.items():
                x = torch.randn(m, n_in, device="cuda", dtype=torch.float16, generator=gen)
                w, b = weights[name]
                if name == "ff_in+gelu":
                    def fn(x: torch.Tensor = x, w: torch.Tensor = w, b: torch.Tensor = b) -> torch.Tensor:
                        return torch._addmm_activation(b, x, w.t(), use_gelu=True)
                else:
                    def fn(x: torch.Tensor = x, w: torch.Tensor = w, b: torch.Tensor = b) -> torch.Tensor:
                        return torch.nn.functional.linear(x, w, b)
                us = graph_ms(fn, calls=50) * 1e3
                tflops = 2 * m * n_in * n_out / (us * 1e-6) / 1e12
                total += us
                parts.append(f"{name} {us:.1f} us ({tflops:.0f} TFLOP/s)")
            flops = sum(2 * m * i * o for i, o in SHAPES.values())
            print(
                f"{library:8s} M {m}: " + ", ".join(parts)
                + f"; block {total:.1f} us ({flops / (total * 1e-6) / 1e12:.0f} TFLOP/s), "
                f"per solve {total * LAYERS_X_STEPS / 1e3:.2f} ms, per row {total / m * 1e3:.2f} ns"
            )


if __name__ == "__main__":
    main()
