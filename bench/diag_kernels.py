#!/usr/bin/env python3
"""Kernel choices for the two costliest parts of a DiT step (issue 8 diagnostics).

At the issue's size (CFG batch 2, 1472-frame bucket of which 1457 are real, 16 heads of 64,
fp16 on CUDA) it times, with CUDA events after warm-up, and checks against fp32:

- attention that ignores the padded keys: masked SDPA and the cuDNN backend, unmasked SDPA as
  the bound (flash's varlen kernel with ``seqused_k``, a log-sum-exp correction of unmasked
  flash and FlexAttention were measured too, at commit 2456cb3: bench/NOTES.md item 10);
- the grouped conv1d of the position embedding (1024 channels, 16 groups, kernel 31): cuDNN as
  configured, with ``benchmark``, as unfold + batched matmul (eager and compiled).

Usage: python3 bench/diag_kernels.py
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from cuda_timing import cuda_ms

from ishowttsd.engine import accel, kernels

G, N, REAL, H, D = 2, 1472, 1457, 16, 64
C, GROUPS, K = 1024, 16, 31


def report(name: str, fn: Callable[[], torch.Tensor], ref: torch.Tensor, flop: float) -> None:
    try:
        out = fn().float()
        err = float((out - ref).abs().max())
        t = cuda_ms(fn, repeats=50)
        print(f"DIAG {name:<46} {t:7.3f} ms {flop / t / 1e9:6.0f} TFLOP/s  max abs err {err:.2e}", flush=True)
    except Exception as exc:  # a backend this build lacks is a finding, not a crash
        print(f"DIAG {name:<46} FAILED {type(exc).__name__}: {str(exc)[:300]}", flush=True)


def attention() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = torch.device("cuda")
    torch.manual_seed(0)
    q, k, v = (torch.randn(G, N, H, D, device=dev, dtype=torch.float16) for _ in range(3))
    keys = torch.full((G,), REAL, device=dev, dtype=torch.int32)
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    mask = (torch.arange(N, device=dev)[None, :] < keys[:, None])[:, None, None, :]
    bias = torch.zeros(G, 1, 1, N, device=dev, dtype=torch.float16).masked_fill(~mask, float("-inf"))
    ref = F.scaled_dot_product_attention(qt.float(), kt.float(), vt.float(), attn_mask=mask)
    flop = 4 * G * H * N * N * D
    report("SDPA unmasked (bound, not exact)", lambda: F.scaled_dot_product_attention(qt, kt, vt), ref, flop)
    report(
        "SDPA bool mask (default backend)",
        lambda: F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask),
        ref,
        flop,
    )

    def cudnn(m: torch.Tensor | None) -> torch.Tensor:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(qt, kt, vt, attn_mask=m)

    report("cuDNN bool mask", lambda: cudnn(mask), ref, flop)
    report("cuDNN additive mask", lambda: cudnn(bias), ref, flop)
    report("cuDNN unmasked (bound)", lambda: cudnn(None), ref, flop)
    key_mask = accel._key_mask(torch.arange(N, device=dev)[None, :] < REAL, G)
    report(
        "masked_attention (what the fast path runs)",
        lambda: accel.masked_attention(q, k, v, key_mask).transpose(1, 2),
        ref,
        flop,
    )


def unfold_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Grouped conv1d as one batched matmul: x (B, N, C) -> (B, N, C)."""
    b, n, c = x.shape
    per = c // GROUPS
    xp = F.pad(x, (0, 0, K // 2, K // 2))
    cols = xp.unfold(1, K, 1).reshape(b * n, GROUPS, per * K).transpose(0, 1)  # (groups, B*N, per*K)
    w = weight.reshape(GROUPS, per, per * K).transpose(1, 2)  # (groups, per*K, per_out)
    out = torch.baddbmm(bias.view(GROUPS, 1, per), cols, w)  # (groups, B*N, per)
    return out.transpose(0, 1).reshape(b, n, c)


def conv() -> None:
    dev = torch.device("cuda")
    torch.manual_seed(1)
    conv = torch.nn.Conv1d(C, C, K, groups=GROUPS, padding=K // 2).to(dev)
    x = torch.randn(G, N, C, device=dev)
    ref = conv(x.transpose(1, 2)).transpose(1, 2)
    conv16 = conv.half()
    xh = x.half()
    flop = 2 * G * N * C * (C // GROUPS) * K
    print(
        f"DIAG cudnn flags: benchmark={torch.backends.cudnn.benchmark} "
        f"deterministic={torch.backends.cudnn.deterministic}"
    )
    report("conv1d cuDNN (NCL, as upstream)", lambda: conv16(xh.transpose(1, 2)).transpose(1, 2), ref, flop)
    with torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False):
        report("conv1d cuDNN benchmark", lambda: conv16(xh.transpose(1, 2)).transpose(1, 2), ref, flop)
        report(
            "conv1d cuDNN benchmark, contiguous NCL in",
            lambda: conv16(xh.transpose(1, 2).contiguous()).transpose(1, 2),
            ref,
            flop,
        )
    w, b = conv16.weight, conv16.bias
    kw, kb = kernels.conv_weight(conv16)
    report(
        "Triton implicit-GEMM kernel (kernels.grouped_conv1d)", lambda: kernels.grouped_conv1d(xh, kw, kb), ref, flop
    )
    report("unfold + baddbmm, eager", lambda: unfold_conv(xh, w, b), ref, flop)
    compiled = torch.compile(unfold_conv, dynamic=False)
    report("unfold + baddbmm, compiled", lambda: compiled(xh, w, b), ref, flop)
    conv_c = torch.compile(lambda t: conv16(t.transpose(1, 2)).transpose(1, 2), dynamic=False)
    report("conv1d compiled (inductor)", lambda: conv_c(xh), ref, flop)


if __name__ == "__main__":
    print(f"DIAG {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    conv()
    attention()
