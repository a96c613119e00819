"""Hand-written GPU kernels for the parts of a DiT step that library kernels do badly (issue 8).

Grouped conv1d of the convolutional position embedding (1024 channels, 16 groups, kernel 31).
cuDNN runs it as one small kernel per group plus layout transposes: 0.6 ms per conv on an H100,
about 20 TFLOP/s, which was 18% of a compiled step (bench/NOTES.md item 11).  Unfold + batched
matmul was no better (0.51 ms), since the unfolded input is 31 times the size of the input.
The Triton kernel below is an implicit GEMM: each program owns a tile of output positions of
one group and accumulates the 31 taps as 31 small tensor-core products, reading the input tile
from L2 instead of materialising it.

q/k rotation (RoPE) for the attention.  Inductor's fused kernel for the rotation and the copies
that feed attention ran at about 1.2 TB/s, 12% of a solve (bench/NOTES.md item 18).  The kernel
below reads the fused q/k/v projection once and writes q and k rotated, and v, as contiguous
(G, N, H, d) tensors that attention reads as they are, so nothing is copied again.  It can also
append the key-validity column that lets an unmasked attention kernel ignore padded keys
exactly (bench/NOTES.md items 19 and 23).

Every kernel is a ``torch.library`` custom op with a fake implementation, so ``torch.compile``
keeps it as one opaque call and CUDA graphs capture it; off CUDA (or without Triton) the op
computes the same thing with PyTorch, which is what the CPU tests run.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

try:  # Triton ships with CUDA builds of torch; the CPU build has none.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None
    tl = None

_BLOCK_N = 64


def conv_weight(conv: torch.nn.Conv1d) -> tuple[Tensor, Tensor]:
    """A grouped Conv1d's weight as (groups, kernel, in per group, out per group), and its bias.

    The layout the kernel reads: one (in, out) matrix per tap and group, contiguous.
    """
    groups = conv.groups
    out_c, per_in, k = conv.weight.shape
    per_out = out_c // groups
    if conv.bias is None:
        raise ValueError("the position-embedding conv is expected to have a bias")
    weight = conv.weight.detach().view(groups, per_out, per_in, k).permute(0, 3, 2, 1).contiguous()
    return weight, conv.bias.detach()


if triton is not None:

    @triton.jit
    def _grouped_conv_kernel(  # type: ignore[no-untyped-def]
        x_ptr,
        w_ptr,
        b_ptr,
        out_ptr,
        n,
        stride_xb,
        stride_xn,
        stride_ob,
        stride_on,
        PER: tl.constexpr,
        TAPS: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        pid_n = tl.program_id(0)
        group = tl.program_id(1)
        batch = tl.program_id(2)
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        chans = tl.arange(0, PER)
        x_base = x_ptr + batch * stride_xb + group * PER
        w_base = w_ptr + group * TAPS * PER * PER
        acc = tl.zeros((BLOCK_N, PER), dtype=tl.float32)
        for tap in range(TAPS):
            src = rows + tap - TAPS // 2
            inside = (src >= 0) & (src < n)  # outside is the conv's zero padding
            xt = tl.load(x_base + src[:, None] * stride_xn + chans[None, :], mask=inside[:, None], other=0.0)
            wt = tl.load(w_base + tap * PER * PER + chans[:, None] * PER + chans[None, :])
            acc += tl.dot(xt, wt)
        acc += tl.load(b_ptr + group * PER + chans).to(tl.float32)[None, :]
        out = out_ptr + batch * stride_ob + rows[:, None] * stride_on + group * PER + chans[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(rows < n)[:, None])


if triton is not None:

    @triton.jit
    def _rotate_qkv_kernel(  # type: ignore[no-untyped-def]
        qkv_ptr,
        cos_ptr,
        sin_ptr,
        bias_ptr,
        q_ptr,
        k_ptr,
        v_ptr,
        rows,
        n,
        HEADS: tl.constexpr,
        D: tl.constexpr,
        COLUMN: tl.constexpr,
        QK_WIDTH: tl.constexpr,
        QK_TOKEN: tl.constexpr,
        WRITE_V: tl.constexpr,
        BLOCK_T: tl.constexpr,
    ):
        pid_t = tl.program_id(0)
        head = tl.program_id(1)
        t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)  # token row in [0, G * N)
        live = (t < rows)[:, None]
        pos = t % n
        half = tl.arange(0, D // 2)
        full = tl.arange(0, D)
        src = qkv_ptr + t[:, None] * (3 * HEADS * D) + head * D
        # q and k: QK_TOKEN elements from one token to the next, QK_WIDTH (2 * D with the
        # column) from one head to the next; v is (G, N, H, D) contiguous
        dst = t * HEADS + head
        c = tl.load(cos_ptr + pos[:, None] * D + half[None, :], mask=live, other=0.0)
        s = tl.load(sin_ptr + pos[:, None] * D + half[None, :], mask=live, other=0.0)
        for part in tl.static_range(2):  # q, then k
            x1 = tl.load(src + part * HEADS * D + half[None, :], mask=live, other=0.0).to(tl.float32)
            x2 = tl.load(src + part * HEADS * D + D // 2 + half[None, :], mask=live, other=0.0).to(tl.float32)
            out = (q_ptr if part == 0 else k_ptr) + t[:, None] * QK_TOKEN + head * QK_WIDTH
            tl.store(out + half[None, :], (x1 * c - x2 * s).to(q_ptr.dtype.element_ty), mask=live)
            tl.store(out + D // 2 + half[None, :], (x2 * c + x1 * s).to(q_ptr.dtype.element_ty), mask=live)
            if COLUMN:
                # q: 1 then zeros; k: the key's bias (0 or KEY_PAD_BIAS) then zeros
                if part == 0:
                    first = tl.full((BLOCK_T,), 1.0, tl.float32)
                else:
                    first = tl.load(bias_ptr + t, mask=t < rows, other=0.0).to(tl.float32)
                extra = tl.where(full[None, :] == 0, first[:, None], 0.0)
                tl.store(out + D + full[None, :], extra.to(q_ptr.dtype.element_ty), mask=live)
        if WRITE_V:
            v = tl.load(src + 2 * HEADS * D + full[None, :], mask=live, other=0.0)
            tl.store(v_ptr + dst[:, None] * D + full[None, :], v, mask=live)


# A padded key's entry in the validity column: with q's 1 there its score drops by
# 60000 * scale (7500 at d = 64), so its softmax weight is exactly 0 in fp32.  Fits fp16.
KEY_PAD_BIAS = -60000.0


def rotate_halves(t: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE on (G, N, H, d) whose rotated pairs sit half a head apart, tables (1, N, 1, rot)."""
    rot = cos.shape[-1]
    head, rest = t[..., :rot].float(), t[..., rot:]
    half = torch.cat((-head[..., rot // 2 :], head[..., : rot // 2]), dim=-1)
    return torch.cat(((head * cos + half * sin).to(t.dtype), rest), dim=-1)


@torch.library.custom_op("ishowttsd::rotate_qk", mutates_args=())
def rotate_qk(qkv: Tensor, cos: Tensor, sin: Tensor, heads: int) -> Tensor:
    """q and k of the fused (G, N, 3 * H * d) projection, rotated by halves, as one
    (G, N, 2, H, d) tensor; v is left where the projection wrote it.  For FlashAttention,
    which reads strided q/k/v as fast as contiguous ones (bench/NOTES.md item 36): a third
    less to write than :func:`rotate_qkv`."""
    g, n, width = qkv.shape
    d = width // (3 * heads)
    pair = qkv.new_empty(g, n, 2, heads, d)
    if qkv.is_cuda and triton is not None and cos.shape[-1] == d and qkv.is_contiguous():
        block = 64
        grid = (triton.cdiv(g * n, block), heads)
        q, k = pair.unbind(2)
        # No key bias and no v: the bias and v pointers are placeholders the kernel never reads.
        _rotate_qkv_kernel[grid](
            qkv,
            cos,
            sin,
            cos,
            q,
            k,
            q,
            g * n,
            n,
            HEADS=heads,
            D=d,
            COLUMN=False,
            QK_WIDTH=d,
            QK_TOKEN=2 * heads * d,
            WRITE_V=False,
            BLOCK_T=block,
            num_warps=4,
        )
        return pair
    q, k, _v = qkv.view(g, n, 3, heads, d).unbind(2)
    pair[:, :, 0] = rotate_halves(q, cos, sin)
    pair[:, :, 1] = rotate_halves(k, cos, sin)
    return pair


@rotate_qk.register_fake
def _rotate_qk_fake(qkv: Tensor, cos: Tensor, sin: Tensor, heads: int) -> Tensor:
    g, n, width = qkv.shape
    return qkv.new_empty(g, n, 2, heads, width // (3 * heads))


def _split_heads(qkv: Tensor, heads: int, column: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Empty q, k, v for a fused (G, N, 3 * H * d) projection: contiguous (G, N, H, width)
    tensors, q and k 2d wide with the validity column.  Token-major, because cuDNN's attention
    writes its output in q's layout: (G, N, H, d) is then the (G, N, H * d) the output
    projection reads, with no copy (a head-major q cost a 1.6 ms transpose per solve)."""
    g, n, width = qkv.shape
    d = width // (3 * heads)

    def one(w: int) -> Tensor:
        return torch.empty(g, n, heads, w, dtype=qkv.dtype, device=qkv.device)

    qk = 2 * d if column else d
    return one(qk), one(qk), one(d)


@torch.library.custom_op("ishowttsd::rotate_qkv", mutates_args=())
def rotate_qkv(
    qkv: Tensor, cos: Tensor, sin: Tensor, heads: int, key_bias: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Split the fused (G, N, 3 * H * d) projection into contiguous q, k, v of shape
    (G, N, H, .), with q and k rotated by halves (tables (1, N, 1, d) from the fast path).

    With ``key_bias`` ((G, N): 0 for a real key, :data:`KEY_PAD_BIAS` for padding) q and k get
    a validity column: q is 2d wide with [1, 0, ...] after its d values, k has [bias, 0, ...].
    Unmasked attention with the scale of d then ignores the padded keys exactly (see
    ``accel.column_attention``); the width 2d is the one cuDNN's fastest kernels take.
    """
    g, n, width = qkv.shape
    d = width // (3 * heads)
    column = key_bias is not None
    outs = _split_heads(qkv, heads, column)
    if qkv.is_cuda and triton is not None and cos.shape[-1] == d and qkv.is_contiguous():
        block = 64
        grid = (triton.cdiv(g * n, block), heads)
        bias = key_bias.contiguous() if key_bias is not None else cos
        _rotate_qkv_kernel[grid](
            qkv,
            cos,
            sin,
            bias,
            *outs,
            g * n,
            n,
            HEADS=heads,
            D=d,
            COLUMN=column,
            QK_WIDTH=outs[0].shape[-1],
            QK_TOKEN=heads * outs[0].shape[-1],
            WRITE_V=True,
            BLOCK_T=block,
            num_warps=4,
        )
        return outs
    q, k, v = qkv.view(g, n, 3, heads, d).unbind(2)
    q, k = rotate_halves(q, cos, sin), rotate_halves(k, cos, sin)
    if key_bias is not None:
        zeros = q.new_zeros(g, n, heads, d - 1)
        q = torch.cat((q, q.new_ones(g, n, heads, 1), zeros), dim=-1)
        k = torch.cat((k, key_bias.to(k.dtype)[:, :, None, None].expand(g, n, heads, 1), zeros), dim=-1)
    for out, value in zip(outs, (q, k, v), strict=True):
        out.copy_(value)
    return outs


@rotate_qkv.register_fake
def _rotate_qkv_fake(
    qkv: Tensor, cos: Tensor, sin: Tensor, heads: int, key_bias: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    return _split_heads(qkv, heads, key_bias is not None)


@torch.library.custom_op("ishowttsd::grouped_conv1d", mutates_args=())
def grouped_conv1d(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Same-padded grouped conv1d on (B, N, C) activations (channels last, as the DiT keeps
    them), with ``weight``/``bias`` from :func:`conv_weight`.  Returns (B, N, C)."""
    groups, taps, per_in, per_out = weight.shape
    if x.is_cuda and triton is not None and x.dtype in (torch.float16, torch.bfloat16) and per_in == per_out:
        x = x if x.stride(-1) == 1 else x.contiguous()
        b, n = x.shape[:2]
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        grid = (triton.cdiv(n, _BLOCK_N), groups, b)
        _grouped_conv_kernel[grid](
            x,
            weight,
            bias,
            out,
            n,
            x.stride(0),
            x.stride(1),
            out.stride(0),
            out.stride(1),
            PER=per_in,
            TAPS=taps,
            BLOCK_N=_BLOCK_N,
            num_warps=4,
        )
        return out
    torch_weight = weight.permute(0, 3, 2, 1).reshape(groups * per_out, per_in, taps)
    y = F.conv1d(x.transpose(1, 2), torch_weight, bias, padding=taps // 2, groups=groups)
    return y.transpose(1, 2).contiguous()


@grouped_conv1d.register_fake
def _grouped_conv1d_fake(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def conv_position_embedding(conv_weights: Any, x: Tensor, mask: Tensor) -> Tensor:
    """Upstream's ``ConvPositionEmbedding`` with a mask, on (B, N, C): zero the padding before
    each conv and after it (Mish(0) = 0, so masking before or after the Mish is the same)."""
    (w1, b1), (w2, b2) = conv_weights
    keep = mask[..., None]
    x = x.masked_fill(~keep, 0.0)
    x = F.mish(grouped_conv1d(x, w1, b1)).masked_fill(~keep, 0.0)
    return F.mish(grouped_conv1d(x, w2, b2)).masked_fill(~keep, 0.0)
