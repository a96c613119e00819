#!/usr/bin/env python3
"""Exact attention over padded keys without SDPA's mask (issue 8 diagnostics).

The fast path pads every request to its length bucket, so attention must ignore the padded
keys.  With a mask SDPA falls back to its memory-efficient kernel (0.125-0.131 ms a layer on
the H100), while unmasked flash takes 0.069-0.081 ms (bench/NOTES.md item 10).  Two exact ways
to keep the faster kernels:

- **a key-validity column**: widen the head by one column (to a multiple of 8): q gets 1 there,
  a real key 0 and a padded key -60000; with the scale passed explicitly as 1/sqrt(64) every real
  score is unchanged (the extra product is exactly 0) and every padded score is about -7500, whose
  exponential is exactly 0 in fp32.  Any unmasked kernel then ignores the padding.
- **FlexAttention with a block mask**: only the last key blocks read the length.
- **FlashAttention's CuTe kernels** (flash-attn-4, where installed; engine/flash.py): each row's
  key count (``seqused_k``), no mask and no column.

Times one layer at the issue's size (CFG batch 2, 1472-frame bucket with 1457 real frames,
16 heads of 64, fp16) replayed from CUDA graphs after the clocks have risen (the best of three
medians); errors against fp32 masked SDPA.

Usage: python3 bench/diag_attention.py [--quick]  (quick: the bound, the fast path's two kernels)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from cuda_timing import graph_ms
from torch.nn.attention import SDPBackend, sdpa_kernel

G, N, REAL, H, D = 2, 1472, 1457, 16, 64
FLOP = 4 * G * H * N * N * D
BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}


def report(name: str, fn: Callable[[], torch.Tensor], ref: torch.Tensor) -> None:
    try:
        out = fn().float()
        err = float((out - ref).abs().max())
        t = min(graph_ms(fn) for _ in range(3))
        print(f"DIAG {name:<52} {t:7.4f} ms {FLOP / t / 1e9:6.0f} TFLOP/s  max abs err {err:.2e}", flush=True)
    except Exception as exc:  # a backend this build lacks is a finding, not a crash
        print(f"DIAG {name:<52} FAILED {type(exc).__name__}: {str(exc)[:300]}", flush=True)


def widened(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, width: int, v_width: int) -> tuple[torch.Tensor, ...]:
    """(G, H, N, d) q, k, v widened with the key-validity column (see the module docstring)."""
    qa = q.new_zeros(G, H, N, width)
    ka = k.new_zeros(G, H, N, width)
    va = v.new_zeros(G, H, N, v_width)
    qa[..., :D], ka[..., :D], va[..., :D] = q, k, v
    qa[..., D] = 1.0
    ka[:, :, REAL:, D] = -60000.0
    return qa, ka, va


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    dev = torch.device("cuda")
    print(f"DIAG {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    warm = torch.randn(8192, 8192, device=dev, dtype=torch.float16)
    for _ in range(200):  # about 2 s of matmuls: the clocks start low on an idle card
        warm @ warm
    torch.manual_seed(0)
    q, k, v = (torch.randn(G, H, N, D, device=dev, dtype=torch.float16) for _ in range(3))
    mask = (torch.arange(N, device=dev) < REAL)[None, None, None, :].expand(G, 1, 1, N)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    flash_attention(q, k, v, ref)
    report("SDPA bool mask (the fallback)", lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), ref)
    for name, backend in BACKENDS.items():

        def bound(b: SDPBackend = backend) -> torch.Tensor:
            with sdpa_kernel(b):
                return F.scaled_dot_product_attention(q, k, v)

        report(f"{name} unmasked (bound, not exact)", bound, ref)
    if not quick:
        widths(q, k, v, mask, ref)
    # The fast path's layout: q, k, v token-major (G, N, H, .) storage, so the output (which
    # cuDNN allocates in q's layout) is already the (G, N, H * d) the next projection reads.
    qa, ka, va = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in widened(q, k, v, 128, 64))

    def token_major() -> torch.Tensor:
        o = torch.ops.aten._scaled_dot_product_cudnn_attention(qa, ka, va, None, False, scale=D**-0.5)[0]
        return o.transpose(1, 2).reshape(G, N, H * D)

    report(
        "cudnn validity column, token-major (fast path)", lambda: token_major().view(G, N, H, D).transpose(1, 2), ref
    )
    if not quick:
        build = graph_ms(lambda: widened(q, k, v, 72, 72))
        print(f"DIAG building the widened tensors with torch (upper bound): {build:.4f} ms", flush=True)
        flex(q, k, v, ref)


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ref: torch.Tensor) -> None:
    """FlashAttention's CuTe kernel with key counts, token-major as the fast path calls it."""
    from ishowttsd.engine import flash

    t0 = time.perf_counter()
    works = flash.flash_attention_works(q.device, q.dtype)
    print(f"DIAG FlashAttention probe (import + compile): {works}, {time.perf_counter() - t0:.1f} s", flush=True)
    if not works:
        return
    qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))
    keys = torch.full((G,), REAL, device=q.device, dtype=torch.int32)
    report(
        "FlashAttention (CuTe) key counts, token-major",
        lambda: flash.flash_attention(qt, kt, vt, keys).transpose(1, 2),
        ref,
    )
    # Views of the fused projection's output instead of contiguous copies: could the rotation
    # kernel write q and k only, with v read where the q/k/v product left it?
    fused = torch.stack((qt, kt, vt), dim=2)  # (G, N, 3, H, D), as F.linear's output viewed
    qs, ks, vs = fused.unbind(2)
    report(
        "FlashAttention, q/k/v strided views of one (G, N, 3, H, D)",
        lambda: flash.flash_attention(qs, ks, vs, keys).transpose(1, 2),
        ref,
    )
    pair = torch.stack((qt, kt), dim=2)  # (G, N, 2, H, D): what such a kernel would write
    report(
        "FlashAttention, q/k from (G, N, 2, H, D), v strided",
        lambda: flash.flash_attention(pair[:, :, 0], pair[:, :, 1], vs, keys).transpose(1, 2),
        ref,
    )


def widths(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, ref: torch.Tensor) -> None:
    for width, v_width in ((72, 72), (72, 64), (96, 96), (128, 128), (128, 64)):
        qa, ka, va = widened(q, k, v, width, v_width)
        for name, backend in BACKENDS.items():

            def wide(
                b: SDPBackend = backend, qa: torch.Tensor = qa, ka: torch.Tensor = ka, va: torch.Tensor = va
            ) -> torch.Tensor:
                with sdpa_kernel(b):
                    return F.scaled_dot_product_attention(qa, ka, va, scale=D**-0.5)[..., :D]

            report(f"{name} validity column, qk {width} v {v_width}", wide, ref)

    def cudnn_masked() -> torch.Tensor:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    report("cudnn bool mask", cudnn_masked, ref)


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ref: torch.Tensor) -> None:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    length = torch.tensor([REAL], device=q.device)

    def keys(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        return kv_idx < length[0]

    block_mask = create_block_mask(keys, B=None, H=None, Q_LEN=N, KV_LEN=N, device=q.device)
    compiled = torch.compile(flex_attention, dynamic=False)
    options: list[dict[str, int] | None] = [
        None,
        {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 2},
        {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3},
        {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
        {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
    ]
    for opts in options:

        def run(o: dict[str, int] | None = opts) -> torch.Tensor:
            return compiled(q, k, v, block_mask=block_mask, kernel_options=o)

        report(f"flex block mask {opts or 'default'}", run, ref)


if __name__ == "__main__":
    main()
