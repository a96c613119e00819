#!/usr/bin/env python3
"""Weight-only int8 (torchao) against fp16 for the DiT's matrix products (issue 8, the seed's
Phase 4): speed and error at the shapes one step runs, compiled, on the GPU.

A step's matmuls have M = 2 x bucket rows (CFG batch), e.g. 2944 at the issue's utterance, so
they are compute-bound; weight-only int8 saves weight bytes, which pays off only when the
weights' reads dominate.  Usage: python3 bench/diag_int8.py (needs torchao importable).
"""

from __future__ import annotations

import copy

import torch
from cuda_timing import cuda_ms
from torch import nn

SHAPES = {"q/k/v fused": (1024, 3072), "ff in": (1024, 2048), "ff out": (2048, 1024), "attn out": (1024, 1024)}


def main() -> None:
    import torchao
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    print(f"DIAG {torch.cuda.get_device_name()} torch {torch.__version__} torchao {torchao.__version__}", flush=True)
    torch.manual_seed(0)
    for rows in (2944, 64):
        for name, (k, n) in SHAPES.items():
            lin = nn.Linear(k, n).cuda().half().eval()
            x = torch.randn(rows, k, device="cuda", dtype=torch.float16)
            with torch.inference_mode():
                want = lin.float()(x.float())
                lin.half()
                fp16 = torch.compile(lin)
                q = copy.deepcopy(lin)
                quantize_(q, Int8WeightOnlyConfig())
                int8 = torch.compile(q)
                t16 = cuda_ms(lambda: fp16(x), repeats=50)  # noqa: B023 - used at once
                t8 = cuda_ms(lambda: int8(x), repeats=50)  # noqa: B023
                e16 = float((fp16(x).float() - want).norm() / want.norm())
                e8 = float((int8(x).float() - want).norm() / want.norm())
            print(
                f"DIAG M={rows} {name} {k}->{n}: fp16 {t16 * 1e3:.1f} us (rel err {e16:.1e}), "
                f"int8 weight-only {t8 * 1e3:.1f} us (rel err {e8:.1e}), int8/fp16 {t8 / t16:.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
