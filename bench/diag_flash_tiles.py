#!/usr/bin/env python3
"""FlashAttention's tile shape at a stream's first-chunk length (issue 8 diagnostics).

A stream's first chunk (716 frames in all, bucket 768) runs attention as 4 x 16 x 2 = 128 tiles of
192 queries on the H100's 132 SMs: one wave, each tile only six 128-key blocks long, 12.8 us a
layer.  Would another tile shape, or splitting the keys, do better there, and what would it cost
at the bench's 1472?  (H100: no; the default 192 x 128 was fastest at both, 352 and 441 TFLOP/s,
and flash-attn-4 4.0.0b36 has no split keys on sm_90; bench/NOTES.md item 45.)

Times flash-attn-4's forward (``_flash_attn_fwd``, as ``engine/flash.py`` calls it through the
variable-length entry: token-major q/k/v, each row's key count) for several ``tile_mn`` and
``num_splits``, replayed from CUDA graphs (the best of three medians), against fp32 SDPA over each
row's real keys.

Usage: python3 bench/diag_flash_tiles.py   (needs flash-attn-4; see flash_device_env.sh)
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from cuda_timing import graph_ms

G, H, D = 2, 16, 64
SHAPES = ((768, 716), (1472, 1457))  # (bucket, real frames): a stream's first chunk, the bench's request
CONFIGS: tuple[tuple[str, dict[str, object]], ...] = (
    ("default (192x128 on sm90)", {}),
    ("tile 128x128", {"tile_mn": (128, 128)}),
    ("tile 128x64", {"tile_mn": (128, 64)}),
    ("tile 192x64", {"tile_mn": (192, 64)}),
    ("tile 128x128, no intra-WG overlap", {"tile_mn": (128, 128), "intra_wg_overlap": False}),
    ("default, 2 key splits", {"num_splits": 2}),
    ("tile 128x128, 2 key splits", {"tile_mn": (128, 128), "num_splits": 2}),
)


def main() -> None:
    from flash_attn.cute.interface import _flash_attn_fwd

    torch.manual_seed(0)
    dev = torch.device("cuda")
    print(f"DIAG {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    for n, real in SHAPES:
        q, k, v = (torch.randn(G, n, H, D, device=dev, dtype=torch.float16) for _ in range(3))
        keys = torch.full((G,), real, device=dev, dtype=torch.int32)
        # fp32 reference over the real keys (the padded ones must not count)
        ref = F.scaled_dot_product_attention(
            q.float().transpose(1, 2), k[:, :real].float().transpose(1, 2), v[:, :real].float().transpose(1, 2)
        ).transpose(1, 2)
        for name, opts in CONFIGS:
            _time(name, functools.partial(_flash_attn_fwd, q, k, v, seqused_k=keys, **opts), ref, n, real)


def _time(name: str, fn: Callable[[], object], ref: torch.Tensor, n: int, real: int) -> None:
    def call() -> torch.Tensor:
        out = fn()
        return out[0] if isinstance(out, tuple) else out  # type: ignore[return-value]

    try:
        err = float((call().float() - ref).abs().max())
        t = min(graph_ms(call) for _ in range(3))
        flop = 4 * G * H * n * real * D
        print(f"DIAG {n:5d} frames ({real} real) {name:<36} {t * 1e3:7.2f} us "
              f"{flop / t / 1e9:5.0f} TFLOP/s  max abs err {err:.1e}", flush=True)
    except Exception as exc:  # a config this kernel refuses is a finding, not a crash
        print(f"DIAG {n:5d} frames {name:<36} FAILED {type(exc).__name__}: {str(exc)[:200]}", flush=True)


if __name__ == "__main__":
    main()
