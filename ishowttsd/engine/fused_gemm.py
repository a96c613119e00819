"""The q/k/v product with its bias and the rotary embedding in one GEMM: QuACK's CuTe-DSL
kernels (the ``quack-kernels`` package, which the optional ``flash-attn-4`` brings along).

The fast path's q/k/v product was a cuBLAS GEMM followed by a kernel that rotates q and k (a
pass over them).  QuACK's GEMM applies the bias and the rotation in its epilogue, computing
each angle in the kernel from the row's position and the column's frequency; v's columns have
frequency zero, an exact identity.  On the H200 that product took 31.0 us against 29.3 us for
cuBLAS's plain one plus the rotation (bench/NOTES.md item 36).

The rotation pairs here are upstream's own (adjacent columns 2i, 2i + 1, x-transformers'
layout), so the weights stay in upstream's order.  FlashAttention reads q, k and v as strided
views of the product.  Used only with FlashAttention, where its probe passes; otherwise the
engine keeps cuBLAS and :func:`kernels.rotate_qk`.
"""

from __future__ import annotations

import logging
import math
import os
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger("ishowttsd.engine")


def configure_cache(root: Path) -> dict[str, str]:
    """Keep QuACK's compiled kernels under ``root`` (read when the package is first imported,
    which importing FlashAttention does)."""
    path = root / "quack"
    path.mkdir(parents=True, exist_ok=True)
    settings = {"QUACK_CACHE_DIR": str(path)}
    os.environ.update(settings)
    return settings


@cache
def _epilogue() -> Any:
    # Imported on first use only: the import loads the CuTe DSL compiler (seconds).
    from quack.epilogue.frontend import EpiMod
    from quack.epilogue.ops import RowVecLoad
    from quack.epilogue.rotary import rope_posfreq_bias_epi

    # QuACK's own epilogue (bias, then the rotation), with the bias pinned as a per-column
    # vector: QuACK infers an operand's kind from its shape, which cannot tell a row vector from
    # a column vector where the rows equal the columns (a guided 1536-frame bucket: 3072 x 3072).
    return EpiMod(
        rope_posfreq_bias_epi.fn, ops={**rope_posfreq_bias_epi.ops, "bias": RowVecLoad("bias")}, mode="acc_pair"
    )


def rope_frequencies(inv_freq: Tensor, heads: int, head_dim: int) -> Tensor:
    """(1, 3 * heads * head_dim) float32: each q and k column pair's inverse frequency in turns
    (cycles per position) as a float32 pair, high part at the even column and the low part (what
    float32 rounding left of it) at the odd one; zero for v.  The kernel's angle is computed in
    that float-float form, so it is as exact as an fp64 table."""
    turns = inv_freq.double() / (2 * math.pi)
    high = turns.float()
    low = (turns - high.double()).float()
    head = torch.stack((high, low), dim=-1).flatten()  # (head_dim,): one pair per rotation
    if head.shape[0] != head_dim:
        raise ValueError(f"rotary width {head.shape[0]} is not the head width {head_dim}")
    qk = head.repeat(2 * heads)
    return torch.cat((qk, qk.new_zeros(heads * head_dim)))[None]


def rope_positions(frames: int, groups: int, device: torch.device) -> Tensor:
    """(groups, frames) float32: each row's frame positions (every CFG row starts at 0)."""
    return torch.arange(frames, device=device, dtype=torch.float32).expand(groups, frames).contiguous()


@torch.library.custom_op("ishowttsd::qkv_rope", mutates_args=())
def qkv_rope(x: Tensor, weight: Tensor, bias: Tensor, positions: Tensor, frequencies: Tensor) -> Tensor:
    """``x @ weight.T + bias`` for the fused q/k/v weight (3 * H * d, K), with each q and k
    column pair (2i, 2i + 1) rotated by the angle ``position * frequency`` (in turns) of its
    row: (M, 3 * H * d) from (M, K) ``x``, ``positions`` (G, N) with G * N = M."""
    product: Tensor = _epilogue()(
        x, weight.t(), pos=positions.reshape(1, -1), freq=frequencies, bias=bias[None], tuned=False
    )["D"]
    return product


@qkv_rope.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor, positions: Tensor, frequencies: Tensor) -> Tensor:
    return x.new_empty((x.shape[0], weight.shape[0]))


def reference(x: Tensor, weight: Tensor, bias: Tensor, positions: Tensor, frequencies: Tensor) -> Tensor:
    """What :func:`qkv_rope` computes, in fp32 with torch (the probe's, and the CPU tests',
    reference)."""
    product = F.linear(x.float(), weight.float(), bias.float())
    turns = frequencies[0, 0::2].double() + frequencies[0, 1::2].double()  # (pairs,)
    angle = 2 * math.pi * (positions.reshape(-1, 1).double() * turns[None, :])
    cos, sin = angle.cos().float(), angle.sin().float()
    x1, x2 = product[:, 0::2], product[:, 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(1)


def qkv_rope_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether QuACK is installed and its rotating GEMM matches the fp32 reference on this card
    (a compile on first use, then a small run)."""
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return False
    try:
        _epilogue()
    except ImportError:
        return False
    try:
        heads, head_dim, k = 4, 64, 256
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(2 * 200, k, device=device, dtype=dtype, generator=gen)
        weight = torch.randn(3 * heads * head_dim, k, device=device, dtype=dtype, generator=gen) / k**0.5
        bias = torch.randn(3 * heads * head_dim, device=device, dtype=dtype, generator=gen) * 0.1
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
        freq = rope_frequencies(inv_freq, heads, head_dim)
        pos = rope_positions(200, 2, device)
        got = qkv_rope(x, weight, bias, pos, freq).float()
        worst = float((got - reference(x, weight, bias, pos, freq)).abs().max())
        if worst < 2e-2:
            return True
        log.warning("QuACK's rotating GEMM is off by %.3g here; using cuBLAS and the rotation kernel", worst)
    except Exception as exc:  # a probe: whatever this build or card refuses, cuBLAS still works
        log.info("QuACK's GEMM unavailable (%s: %s); using cuBLAS and the rotation kernel", type(exc).__name__,
                 str(exc)[:200])
    return False
