"""The fast ODE path (issue 8): length buckets, ``torch.compile`` and CUDA graphs.

Why buckets with a mask.  CUDA graphs and compiled kernels are shape-specific, and every
request of a livestream has a new text length.  So the sequence is padded up to a bucket
(a multiple of :data:`BUCKET_FRAMES`) and the padding is *masked*, which keeps the output that
of the unpadded sequence (only float rounding differs):

- attention never attends to padding: FlashAttention reads each row's count of real keys
  (engine/flash.py, where the optional package is installed), or a validity column on q and k
  gives padded keys a weight of exactly 0 so cuDNN's unmasked kernel can run
  (:func:`column_attention`), or, where neither runs, SDPA gets a key-padding mask;
- the convolutional position embedding zeroes padding before and after each of its convs
  (upstream's ``ConvPositionEmbedding`` with a mask does exactly that), which is the zero
  padding the unpadded conv sees;
- the text embedding zeroes padding before each ConvNeXt block and leaves it out of each GRN's
  sequence norm (:func:`masked_text_embedding`);
- everything else (AdaLN, feed-forward, projections) is per position.

Upstream's DiT blocks ignore the mask in attention for v1 models (``attn_mask_enabled`` is
off), so :func:`_block` runs the blocks' own submodules with that attention instead of calling
``DiTBlock.forward``, with q/k/v as one matmul, RoPE from per-bucket tables and the AdaLN
modulations precomputed per time grid (:func:`modulations`).
tests/unit/test_engine_accel.py checks padded == unpadded.

Graphs: per (bucket, batch rows, CFG) one text-embedding graph and one *step* graph.  A step
graph is independent of the NFE and of the time grid: the loop copies each step's
modulations and step size into the graph's static inputs (two small device copies) and replays.
Warm-up captures a few dozen shapes, all sharing one memory pool.  The vocoder runs outside
the graphs at the exact frame count (engine/f5.py).

Compile: four regions (:class:`Regions`), the block region shared by all blocks, with the
length dynamic.  Inductor's FX-graph cache and Triton's kernel cache live under
``<cache_dir>/inductor`` and ``<cache_dir>/triton`` when a cache dir is given, so a restart
reuses the kernels.  On Hopper and later, inductor's kernels are launched with programmatic
dependent launch (:func:`pdl_supported`).  bench/NOTES.md records what each choice measured.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import flash, fused_gemm, kernels, sampler
from .errors import EngineError

log = logging.getLogger("ishowttsd.engine")

# 64 mel frames = 0.68 s of audio: at most 4% padding for the issue-8 utterance.  Tried
# 128 on the H100 (fewer graphs): the 1457-frame solve padded to 1536 ran 64.6 ms against
# 57.9 ms at 1472, and the compile count does not depend on the bucket count (bench/NOTES.md).
BUCKET_FRAMES = 64
# Upstream sizes chunks so that reference + chunk is about 22 s; warm-up captures up to here.
WARM_SECONDS = 23.0
_FRAMES_PER_SECOND = 24000 / 256

DiTModule = Any
StepFn = Callable[..., Tensor]
TextFn = Callable[[Any, Tensor, Tensor, bool], Tensor]  # (text_embed, tokens, real, guided)
# How attention leaves out the padded keys, fastest first (see the module docstring).
Attention = Literal["flash", "column", "mask"]
# Their names in the config ([model] attention) and in what the engine reports.
ATTENTION_NAMES: dict[Attention, str] = {"flash": "flash", "column": "cudnn", "mask": "sdpa"}


def bucket(frames: int, granularity: int = BUCKET_FRAMES) -> int:
    """The padded length a solve of ``frames`` runs at."""
    return -(-frames // granularity) * granularity


def configure_caches(cache_dir: str | os.PathLike[str] | None) -> dict[str, str]:
    """Point inductor's, Triton's and FlashAttention's on-disk caches under ``cache_dir`` (before
    the first compile: each reads these variables when it first needs a cache).  Returns what
    was set."""
    if not cache_dir:
        return {}
    root = Path(cache_dir)
    dirs = {"TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"), "TRITON_CACHE_DIR": str(root / "triton")}
    for key, value in dirs.items():
        Path(value).mkdir(parents=True, exist_ok=True)
        os.environ[key] = value
    dirs.update(flash.configure_cache(root))
    dirs.update(fused_gemm.configure_cache(root))
    try:
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
        # Reuse autotuning results too (kernel configs picked on this card).
        inductor_config.autotune_local_cache = True
    except (ImportError, AttributeError):  # older or trimmed torch: compile still works, uncached
        log.warning("inductor config not available; compile caches are not persisted")
    return dirs


def _key_mask(mask: Tensor, groups: int) -> Tensor:
    """The (G, 1, 1, N) key-padding mask for ``groups`` rows from the (B, N) frame mask."""
    return _cfg_rows(mask, groups)[:, None, None, :]


def _cfg_rows(t: Tensor, groups: int) -> Tensor:
    """A per-request (B, ...) tensor for the G = B or 2B rows of the CFG batch."""
    return t if groups == t.shape[0] else torch.cat((t, t))


def masked_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor) -> Tensor:
    """SDPA over (G, N, H, d) with the key-padding mask: no row attends to padding.

    With a mask SDPA runs the memory-efficient kernel rather than flash.  Flash's
    variable-length kernel with ``seqused_k`` (exact too, no mask) was tried: 40.71 ms against
    40.13 ms for this in the same process on the H100 (bench/NOTES.md item 10).
    """
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=key_mask)
    return o.transpose(1, 2)


def key_bias(mask: Tensor, groups: int, dtype: torch.dtype) -> Tensor:
    """The keys' validity-column entries (G, N) from the (B, N) frame mask: 0 for a real frame,
    ``kernels.KEY_PAD_BIAS`` for padding (see :func:`column_attention`)."""
    return torch.where(_cfg_rows(mask, groups), 0.0, kernels.KEY_PAD_BIAS).to(dtype)


def column_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Exact attention over padded keys without a mask: q and k (G, N, H, 2d) carry the
    validity column of ``kernels.rotate_qkv``, v is (G, N, H, d).

    Each real score is unchanged (the column adds 1 * 0) and each padded one drops by 7500, so
    its weight is exactly 0; the scale is d's, not 2d's.  On CUDA it runs cuDNN's kernel, which
    takes q/k wider than v: 0.060 ms a layer against 0.086 ms for SDPA with the mask on the
    H100 (bench/NOTES.md item 19).  Elsewhere SDPA's own kernels give the same result.
    """
    scale = v.shape[-1] ** -0.5
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if q.is_cuda:
        o = torch.ops.aten._scaled_dot_product_cudnn_attention(qt, kt, vt, None, False, scale=scale)[0]
    else:
        o = F.scaled_dot_product_attention(qt, kt, vt, scale=scale)
    return o.transpose(1, 2)


def column_attention_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether :func:`column_attention` runs here: cuDNN's attention wants fp16/bf16 and a
    recent cuDNN (older builds raise); off CUDA it always runs."""
    if device.type != "cuda":
        return True
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        q, k = (torch.randn(2, 64, 2, 128, device=device, dtype=dtype, generator=gen) for _ in range(2))
        v = torch.randn(2, 64, 2, 64, device=device, dtype=dtype, generator=gen)
        got = column_attention(q, k, v).float()
        want = F.scaled_dot_product_attention(
            q.float().transpose(1, 2), k.float().transpose(1, 2), v.float().transpose(1, 2), scale=64**-0.5
        ).transpose(1, 2)
        return bool((got - want).abs().max() < 1e-2)
    except Exception as exc:  # a probe: whatever this build or card refuses, the mask still works
        log.info(
            "cuDNN attention unavailable (%s: %s); padded keys are masked instead", type(exc).__name__, str(exc)[:200]
        )
        return False


Rope = tuple[Tensor, Tensor]


def rope_tables(dit: DiTModule, frames: int, half_split: bool) -> Rope:
    """cos and sin of the rotary angles, (1, N, 1, rot) fp32, once per bucket.

    Upstream recomputes ``freqs.cos()``/``.sin()`` in every layer, from angles kept in the
    model dtype (fp16 rounds positions past 1024 to even numbers); these come from fp32
    positions and fp32 inverse frequencies.  F5's rotary embedding has no xpos scale.
    ``half_split``: the tables for q/k whose rotated pairs were moved apart (:func:`fused_qkv`).
    """
    rotary = dit.rotary_embed
    if getattr(rotary, "use_xpos", False):
        raise ValueError("the fast path does not support xpos rotary scaling")
    inv = rotary.inv_freq.float()
    pos = torch.arange(frames, device=inv.device, dtype=torch.float32)
    angles = torch.outer(pos, inv) / rotary.interpolation_factor
    both = (angles, angles)
    angles = torch.cat(both, dim=-1) if half_split else torch.stack(both, dim=-1).flatten(-2)
    angles = angles[None, :, None, :]
    return angles.cos(), angles.sin()


def _rotate(t: Tensor, rope: Rope, half_split: bool) -> Tensor:
    """x-transformers' ``apply_rotary_pos_emb`` on (G, N, H, d), with precomputed tables."""
    cos, sin = rope
    if half_split:
        return kernels.rotate_halves(t, cos, sin)
    # upstream's layout: the pairs (2i, 2i + 1) rotate together
    rot = cos.shape[-1]
    head, rest = t[..., :rot].float(), t[..., rot:]
    pairs = head.unflatten(-1, (-1, 2))
    half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return torch.cat(((head * cos + half * sin).to(t.dtype), rest), dim=-1)


QKV = tuple[tuple[Tensor, Tensor | None], ...]


def _half_split_order(heads: int, head_dim: int, rot: int, device: torch.device) -> Tensor:
    """Row order that moves each head's rotary pairs (2i, 2i + 1) to (i, rot/2 + i)."""
    within = torch.cat((torch.arange(0, rot, 2), torch.arange(1, rot, 2), torch.arange(rot, head_dim)))
    return (torch.arange(heads)[:, None] * head_dim + within[None, :]).flatten().to(device)


def fused_qkv(dit: DiTModule, half_split: bool) -> QKV:
    """Each block's q, k and v projections as one weight: one matmul instead of three.

    With ``half_split`` the q and k rows of each head are reordered so that the rotary pairs
    sit half a rotation apart (i and rot/2 + i) instead of side by side.  Attention scores are
    dot products over the head dimension, which the same reordering of q and k leaves unchanged,
    and rotating contiguous halves is a plain strided kernel instead of an interleaved gather
    (bench/NOTES.md item 12).
    """
    rot = dit.rotary_embed.inv_freq.shape[0] * 2
    fused = []
    for block in dit.transformer_blocks:
        attn = block.attn
        wq, wk, wv = attn.to_q.weight, attn.to_k.weight, attn.to_v.weight
        bq, bk, bv = attn.to_q.bias, attn.to_k.bias, attn.to_v.bias
        if half_split:
            order = _half_split_order(attn.heads, wq.shape[0] // attn.heads, rot, wq.device)
            wq, wk = wq[order], wk[order]
            bq = bq[order] if bq is not None else None
            bk = bk[order] if bk is not None else None
        weight = torch.cat((wq, wk, wv))
        biases = (bq, bk, bv)
        bias = torch.cat([b for b in biases if b is not None]) if all(b is not None for b in biases) else None
        if bias is None and any(b is not None for b in biases):
            raise ValueError("q/k/v projections with mixed bias")
        fused.append((weight, bias))
    return tuple(fused)


class FastWeights(NamedTuple):
    """Weights rearranged once per solver for the fast step (the model's own stay as they are)."""

    qkv: QKV  # per block: q, k, v projections as one matmul
    conv: tuple[tuple[Tensor, Tensor], ...]  # the position embedding's two grouped convs
    half_split: bool  # q/k rows reordered for rotation by halves (see fused_qkv)
    fused_rotation: bool  # split + rotate q/k/v in one kernel (kernels.rotate_qkv)
    attention: Attention  # how padded keys are left out (attention_keys, _attend)
    gelu_epilogue: bool  # feed-forward's bias + GELU run in its first matmul (_feed_forward)
    # The q/k/v product's bias and rotation in QuACK's GEMM epilogue (engine/fused_gemm.py):
    # the (1, 3 * H * d) rotary frequencies it takes, or None where cuBLAS + rotate_qk run.
    qkv_rope: Tensor | None = None

    def block_plan(self) -> BlockPlan:
        return BlockPlan(
            self.half_split, self.fused_rotation, self.attention, self.gelu_epilogue, self.qkv_rope is not None
        )


class BlockPlan(NamedTuple):
    """What :func:`_block` needs to know, as constants the compiled block is specialised on."""

    half_split: bool
    fused_rotation: bool
    attention: Attention
    gelu_epilogue: bool
    qkv_epilogue: bool


def _tanh_gelu_ff(block: Any) -> bool:
    """Whether a block's feed-forward is upstream's Linear -> GELU(tanh) -> Linear."""
    try:
        linear, act = block.ff.ff[0]
    except (AttributeError, TypeError, ValueError):
        return False
    return isinstance(act, torch.nn.GELU) and act.approximate == "tanh" and linear.bias is not None


def _feed_forward(ff: Any, x: Tensor, epilogue: bool) -> Tensor:
    """Upstream's ``FeedForward`` (dropout is off in eval).  With ``epilogue`` the bias and the
    tanh GELU are applied by cuBLASLt inside the first matmul, which spares a pass over the
    (G, N, 2048) activations in every block (bench/NOTES.md item 20)."""
    if not epilogue:
        return ff(x)
    linear, _ = ff.ff[0]
    flat = torch._addmm_activation(linear.bias, x.reshape(-1, x.shape[-1]), linear.weight.t(), use_gelu=True)
    return ff.ff[2](flat.view(*x.shape[:-1], -1))


def fast_weights(dit: DiTModule, attention: str = "auto", qkv_epilogue: bool = True) -> FastWeights:
    """The solver's rearranged weights and kernel choices; ``attention`` is ``[model] attention``.
    ``qkv_epilogue``: rotate q and k in QuACK's q/k/v GEMM where that runs (FlashAttention only)."""
    # A per-dimension q/k norm would need its weights reordered too; keep upstream's order then.
    blocks = dit.transformer_blocks
    half_split = all(b.attn.q_norm is None and b.attn.k_norm is None for b in blocks)
    # The kernel rotates whole heads: every head, and the rotary width is the head width.
    rot = dit.rotary_embed.inv_freq.shape[0] * 2
    whole_heads = all(
        b.attn.processor.pe_attn_head is None and b.attn.to_q.out_features == b.attn.heads * rot for b in blocks
    )
    convs = [m for m in dit.input_embed.conv_pos_embed.conv1d if isinstance(m, torch.nn.Conv1d)]
    weight = dit.proj_out.weight
    fused_rotation = half_split and whole_heads
    kind = _attention(attention, fused_rotation, weight.device, weight.dtype)
    # QuACK rotates upstream's adjacent pairs, so its weights keep upstream's order.  It needs
    # FlashAttention (strided q/k/v views), the q/k/v bias, and no xpos scaling.
    rope = None
    if (
        qkv_epilogue
        and kind == "flash"
        and all(b.attn.to_q.bias is not None for b in blocks)
        and not getattr(dit.rotary_embed, "use_xpos", False)
        and fused_gemm.qkv_rope_works(weight.device, weight.dtype)
    ):
        inv_freq = dit.rotary_embed.inv_freq.float() / dit.rotary_embed.interpolation_factor
        attn = blocks[0].attn
        rope = fused_gemm.rope_frequencies(inv_freq, attn.heads, attn.to_q.out_features // attn.heads)
        half_split = False
    return FastWeights(
        qkv=fused_qkv(dit, half_split),
        conv=tuple(kernels.conv_weight(m) for m in convs),
        half_split=half_split,
        fused_rotation=fused_rotation,
        attention=kind,
        # cuBLASLt's GELU epilogue is the tanh form, upstream's choice for the DiT blocks.
        gelu_epilogue=weight.is_cuda and all(_tanh_gelu_ff(b) for b in blocks),
        qkv_rope=rope,
    )


def _attention(wanted: str, fused_rotation: bool, device: torch.device, dtype: torch.dtype) -> Attention:
    """``wanted`` ("auto", or a name of :data:`ATTENTION_NAMES`) as a kernel that runs here:
    "auto" takes the fastest whose probe passes.  FlashAttention and cuDNN take q/k/v from
    :func:`kernels.rotate_qkv` (contiguous, token-major), so a model it cannot rotate gets the mask."""
    probes: dict[Attention, Callable[[torch.device, torch.dtype], bool]] = {
        "flash": flash.flash_attention_works,
        "column": column_attention_works,
    }
    if wanted == "auto":
        # The first probe that passes, fastest first: the slower ones are not even tried.
        return next((kind for kind, works in probes.items() if fused_rotation and works(device, dtype)), "mask")
    kind = next((k for k, name in ATTENTION_NAMES.items() if name == wanted), None)
    if kind is None:
        raise EngineError(f"[model] attention = {wanted!r} is not one of auto, {', '.join(ATTENTION_NAMES.values())}")
    if kind != "mask" and not fused_rotation:
        raise EngineError(f"[model] attention = {wanted!r} needs rotary embedding on every head; use \"auto\"")
    if kind != "mask" and not probes[kind](device, dtype):
        why = "is the flash-attn-4 package installed? " if kind == "flash" else ""
        raise EngineError(
            f"[model] attention = {wanted!r} does not run on {device} ({why}the log says why); "
            'set attention = "auto" to take the fastest that does'
        )
    return kind


def attention_keys(kind: Attention, mask: Tensor, groups: int, dtype: torch.dtype) -> Tensor:
    """What :func:`_block` needs to leave out the padded keys, from the (B, N) frame mask: their
    counts (G,) for FlashAttention, the validity column's entries (G, N), or the (G, 1, 1, N) mask."""
    if kind == "flash":
        return flash.key_counts(_cfg_rows(mask, groups))
    return key_bias(mask, groups, dtype) if kind == "column" else _key_mask(mask, groups)


def _attend(kind: Attention, q: Tensor, k: Tensor, v: Tensor, keys: Tensor) -> Tensor:
    if kind == "flash":
        return flash.flash_attention(q, k, v, keys)
    return column_attention(q, k, v) if kind == "column" else masked_attention(q, k, v, keys)


def _modulated_norm(norm: Any, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """Upstream's AdaLN application: the block's LayerNorm (no affine), then scale and shift."""
    return norm(x) * (1 + scale[:, None]) + shift[:, None]


class NextNorm(NamedTuple):
    """The AdaLN input of what follows a block: the next block's attention norm, or the final
    norm after the last block, with its shift and scale for this step."""

    norm: Any  # nn.LayerNorm without affine
    shift: Tensor  # (1, dim)
    scale: Tensor  # (1, dim)


def _block(
    block: Any,
    qkv: tuple[Tensor, Tensor | None],
    plan: BlockPlan,
    x: Tensor,
    norm: Tensor,
    mod: Tensor,
    following: NextNorm,
    rope: Rope,
    keys: Tensor,
) -> tuple[Tensor, Tensor]:
    """``DiTBlock.forward`` attending to the real keys only (dropout is off in eval).
    ``plan`` is :meth:`FastWeights.block_plan`; ``mod`` the block's (1, 6 * dim) AdaLN
    modulation for this step (:func:`modulations`); ``keys`` from :func:`attention_keys`.

    ``norm`` is this block's modulated attention norm of ``x``, computed by whatever ran
    before; the block returns its output and ``following``'s modulated norm of it.  Computing
    the next norm here fuses it with the last residual add into one pass over the activations
    instead of two (0.4-0.6 ms a solve on the H100, bench/NOTES.md item 29)."""
    half_split, fused_rotation, attention, gelu_epilogue, qkv_epilogue = plan
    # upstream's AdaLayerNorm, with its linear(silu(t)) precomputed per step
    _shift_msa, _scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = torch.chunk(mod, 6, dim=1)
    attn = block.attn
    g, n = norm.shape[0], norm.shape[1]
    if qkv_epilogue:  # q and k rotated in the product's epilogue; rope: positions, frequencies
        weight, bias = qkv
        assert bias is not None  # fast_weights checked
        projected = fused_gemm.qkv_rope(norm.reshape(g * n, -1), weight, bias, rope[0], rope[1])
        q, k, v = projected.view(g, n, 3, attn.heads, -1).unbind(2)
    elif fused_rotation and attention == "flash":  # it reads strided views: v stays in place
        projected = F.linear(norm, *qkv)
        q, k = kernels.rotate_qk(projected, rope[0], rope[1], attn.heads).unbind(2)
        v = projected.view(g, n, 3, attn.heads, -1)[:, :, 2]
    elif fused_rotation:
        column = keys if attention == "column" else None
        q, k, v = kernels.rotate_qkv(F.linear(norm, *qkv), rope[0], rope[1], attn.heads, column)
    else:
        q, k, v = F.linear(norm, *qkv).view(g, n, 3, attn.heads, -1).unbind(2)
        if attn.q_norm is not None:
            q = attn.q_norm(q)
        if attn.k_norm is not None:
            k = attn.k_norm(k)
        pn = attn.processor.pe_attn_head
        if pn is None:
            q, k = _rotate(q, rope, half_split), _rotate(k, rope, half_split)
        else:  # F5TTS_Base: RoPE on the first pn heads only
            q = torch.cat((_rotate(q[:, :, :pn], rope, half_split), q[:, :, pn:]), dim=2)
            k = torch.cat((_rotate(k[:, :, :pn], rope, half_split), k[:, :, pn:]), dim=2)
    o = _attend(attention, q, k, v, keys).reshape(g, n, -1)
    x = x + gate_msa.unsqueeze(1) * attn.to_out[0](o)
    norm = _modulated_norm(block.ff_norm, x, shift_mlp, scale_mlp)
    x = x + gate_mlp.unsqueeze(1) * _feed_forward(block.ff, norm, gelu_epilogue)
    return x, _modulated_norm(following.norm, x, following.shift, following.scale)


def attention_norm(block: Any, mod: Tensor) -> NextNorm:
    """A block's attention norm with its shift and scale, the first two of its six modulations."""
    shift, scale = torch.chunk(mod, 6, dim=1)[:2]
    return NextNorm(block.attn_norm.norm, shift, scale)


def following_norms(dit: DiTModule, modulation: Tensor) -> list[NextNorm]:
    """For each block, the norm that follows it (:class:`NextNorm`), from a step's row of
    :func:`modulations`: block i + 1's attention norm, and after the last block the final norm
    (upstream's AdaLayerNorm_Final chunks its modulation as scale, then shift)."""
    blocks = dit.transformer_blocks
    out = [attention_norm(blocks[i], modulation[i]) for i in range(1, len(blocks))]
    dim = modulation.shape[-1] // 6
    scale, shift = torch.chunk(modulation[-1, :, : 2 * dim], 2, dim=1)
    out.append(NextNorm(dit.norm_out.norm, shift, scale))
    return out


def _embed_input(
    dit: DiTModule, weights: FastWeights, x: Tensor, cond: Tensor, text: Tensor, mask: Tensor, first: NextNorm
) -> tuple[Tensor, Tensor]:
    """The DiT's input embedding on the padded CFG batch (projection + position convs), and
    the first block's modulated attention norm of it (``first``)."""
    groups = text.shape[0]
    h_in = _cfg_rows(x.to(text.dtype), groups)
    embed = dit.input_embed
    h = embed.proj(torch.cat((h_in, cond, text), dim=-1))
    h = kernels.conv_position_embedding(weights.conv, h, _cfg_rows(mask, groups)) + h
    return h, _modulated_norm(first.norm, h, first.shift, first.scale)


def _finish(
    dit: DiTModule, h: Tensor, normed: Tensor, residual: Tensor, mod: Tensor, x: Tensor, dt: Tensor, cfg: Tensor
) -> Tensor:
    """Output layers, classifier-free guidance and the Euler update (the state stays fp32).
    ``normed``: the final norm of ``h``, which the last block computed; ``mod``: the final
    norm's (1, 2 * dim) modulation for this step (:func:`modulations`), needed again only with a
    long skip connection, which changes what is normed."""
    if dit.long_skip_connection is not None:
        h = dit.long_skip_connection(torch.cat((h, residual), dim=-1))
        scale, shift = torch.chunk(mod, 2, dim=1)  # upstream's AdaLayerNorm_Final
        normed = _modulated_norm(dit.norm_out.norm, h, shift, scale)
    out = dit.proj_out(normed)
    if out.shape[0] == 2 * x.shape[0]:
        pred, null = torch.chunk(out, 2, dim=0)
        out = pred + (pred - null) * cfg
    return x + dt * out.float()


class Regions(NamedTuple):
    """The three pieces a step is made of, and the request's text embedding, each compiled on
    its own ("regional" compilation).

    One compiled block serves all 22 blocks (their parameters are inputs of the compiled
    graph, not constants), so dynamo traces one block instead of the whole step: a restart
    with a warm cache spends seconds in dynamo instead of half a minute (bench/NOTES.md
    item 15).  Eager, they are the plain functions.
    """

    embed: Callable[..., tuple[Tensor, Tensor]]  # (h, the first block's norm of it)
    block: Callable[..., tuple[Tensor, Tensor]]  # (h, the following norm of it)
    finish: Callable[..., Tensor]
    # masked_text_embedding, once per request: eager it was 86 small kernels, a third of its
    # time idle between them (bench/NOTES.md item 41)
    text: TextFn
    dynamic: bool  # mark the length dimension dynamic before the first compile


def pdl_supported(device: torch.device) -> bool:
    """Whether inductor can launch its kernels with programmatic dependent launch here: a CUDA
    card of compute capability 9.0 or later (Hopper; the Jetson Orin is 8.7) and a torch whose
    inductor has the switch.  Each kernel's launch then overlaps the end of the one before it
    (bench/NOTES.md item 47)."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (9, 0):
        return False
    try:
        import torch._inductor.config as inductor_config
    except ImportError:
        return False
    return hasattr(inductor_config.triton, "enable_pdl")


def compiled_regions(dynamic: bool, backend: str = "inductor", pdl: bool = False) -> Regions:
    """``torch.compile`` of each region.  With ``dynamic`` the sequence length is symbolic from
    the first compile, so every bucket runs the same kernels (a static compile per bucket cost
    about 30 s each on the H100: bench/NOTES.md item 4).  The recompile limit is raised so
    dynamo never silently falls back to eager.

    Only the length is symbolic (:func:`masked_step` marks it), not every dimension as
    ``dynamic=True`` would make it: with the widths, heads and batch rows static, dynamo traces
    with far less symbolic reasoning and without a second pass to specialise float constants
    (bench/NOTES.md item 25), and inductor sees the real widths.  ``pdl``: see :func:`pdl_supported`."""
    import torch._dynamo.config as dynamo_config

    limit = 256
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(int(getattr(dynamo_config, name)), limit))
    if not dynamic:
        # Otherwise the second shape would switch dynamo to a dynamic-shape recompile.
        dynamo_config.automatic_dynamic_shapes = False
    # None: dynamo's default, dynamic exactly where the inputs are marked.
    mode = None if dynamic else False
    options = {"triton.enable_pdl": True} if pdl and backend == "inductor" else None
    region = functools.partial(torch.compile, dynamic=mode, backend=backend, options=options)
    return Regions(
        embed=region(_embed_input),
        block=region(_block),
        finish=region(_finish),
        text=region(masked_text_embedding),
        dynamic=dynamic,
    )


def _mark_length(*tensors: Tensor, dim: int = 1) -> None:
    """Tell dynamo the length dimension of these region inputs varies (from the first compile)."""
    for t in tensors:
        torch._dynamo.maybe_mark_dynamic(t, dim)


def masked_step(
    regions: Regions,
    dit: DiTModule,
    weights: FastWeights,
    x: Tensor,
    cond: Tensor,
    text: Tensor,
    mask: Tensor,
    rope: Rope,
    modulation: Tensor,
    dt: Tensor,
    cfg: Tensor,
) -> Tensor:
    """One Euler step on the padded batch: ``x`` (B, N, mel) fp32, ``cond``/``text`` (G, N, .)
    in the model dtype with G = 2B under guidance (the B conditional rows, then the B
    unconditional ones) or B, ``mask`` (B, N) bool (True = real frame), ``modulation`` this
    step's row of :func:`modulations`, ``cfg`` a 0-d tensor.  A pure function of tensors with no
    host syncs, so a CUDA graph can capture it."""
    blocks = dit.transformer_blocks
    if regions.dynamic:  # the rotary frequencies, if they are rope[1], have no length dimension
        _mark_length(x, cond, text, mask, *(rope[:1] if weights.qkv_rope is not None else rope))
    h, norm = regions.embed(dit, weights, x, cond, text, mask, attention_norm(blocks[0], modulation[0]))
    groups = text.shape[0]
    keys = attention_keys(weights.attention, mask, groups, h.dtype)
    if regions.dynamic and weights.attention != "flash":  # key counts have no length dimension
        _mark_length(keys, dim=1 if weights.attention == "column" else 3)
    plan = weights.block_plan()
    residual = h
    for i, (block, qkv, following) in enumerate(
        zip(blocks, weights.qkv, following_norms(dit, modulation), strict=True)
    ):
        if regions.dynamic:
            _mark_length(h, norm)
        h, norm = regions.block(block, qkv, plan, h, norm, modulation[i], following, rope, keys)
    final = modulation[-1, :, : 2 * h.shape[-1]]
    if regions.dynamic:
        _mark_length(h, norm)
    return regions.finish(dit, h, norm, residual, final, x, dt, cfg)


def modulations(dit: DiTModule, time_emb: Tensor) -> Tensor:
    """Every step's AdaLN modulations, (steps, blocks + 1, 1, 6 * dim) in the model dtype, from
    the (steps, 1, dim) time embeddings: row b is block b's ``linear(silu(t))``, the last row the
    final norm's (its first 2 * dim).  They depend on the step only, not on the request, so they
    are computed once per time grid instead of as 23 small weight-bound matmuls in every step
    (1.4 ms a solve on the H100, bench/NOTES.md item 23)."""
    t = time_emb.flatten(1)
    rows = [b.attn_norm.linear(b.attn_norm.silu(t)) for b in dit.transformer_blocks]
    final = dit.norm_out.linear(dit.norm_out.silu(t))
    rows.append(F.pad(final, (0, rows[0].shape[-1] - final.shape[-1])))
    return torch.stack(rows, dim=1).unsqueeze(2)


def _convnext(block: Any, x: Tensor, real: Tensor) -> Tensor:
    """Upstream's ``ConvNeXtV2Block`` on a padded batch whose padding is already zero; its GRN
    takes the sequence norm over the ``real`` (G, N, 1) positions only, as the unpadded block
    would (upstream's own GRN would count the padding)."""
    h = block.dwconv(x.transpose(1, 2)).transpose(1, 2)
    h = block.act(block.pwconv1(block.norm(h)))
    grn = block.grn
    gx = torch.norm(h * real, p=2, dim=1, keepdim=True)
    h = grn.gamma * (h * (gx / (gx.mean(dim=-1, keepdim=True) + 1e-6))) + grn.beta + h
    return x + block.pwconv2(h)


def masked_text_embedding(text_embed: Any, tokens: Tensor, real: Tensor, guided: bool) -> Tensor:
    """Upstream's ``TextEmbedding`` for requests of n frames each, computed at bucket length N.

    ``tokens`` (B, N) are the token ids + 1 with 0 as filler (upstream's own shift), ``real``
    (B, N) bool marks each row's n real positions.  ``guided`` appends the B dropped-text rows
    for CFG.  The padding is zeroed before every ConvNeXt block (the
    zero padding the unpadded depthwise conv sees) and left out of each GRN's norm, so the real
    positions get exactly the unpadded embedding (tests/unit/test_engine_accel.py).
    """
    groups = tokens.shape[0] * (2 if guided else 1)
    filler = _cfg_rows(tokens == 0, groups)
    real = _cfg_rows(real, groups)
    ids = torch.cat((tokens, torch.zeros_like(tokens))) if guided else tokens
    x = text_embed.text_embed(ids)
    if not text_embed.extra_modeling:
        return x * real[..., None]
    x = x + text_embed.freqs_cis[: tokens.shape[1]]
    keep = (real & ~filler if text_embed.mask_padding else real)[..., None]
    real_f = real[..., None].to(x.dtype)
    x = x * keep
    for block in text_embed.text_blocks:
        x = _convnext(block, x, real_f) * keep
    return x


EAGER = Regions(_embed_input, _block, _finish, masked_text_embedding, dynamic=False)


def text_embedding(regions: Regions, text_embed: Any, tokens: Tensor, real: Tensor, guided: bool) -> Tensor:
    """:func:`masked_text_embedding` through ``regions`` (its length marked dynamic, as
    :func:`masked_step` marks the step's)."""
    if regions.dynamic:
        _mark_length(tokens, real)
    return regions.text(text_embed, tokens, real, guided)


class BatchItem(NamedTuple):
    """One request of a batched solve."""

    ref_mel: Tensor  # (1, r, mel) fp32
    text_ids: Tensor  # (1, nt) token ids, reference transcript + text
    frames: int  # n, total frames including the reference (already through total_frames)
    noise: Tensor  # (1, n, mel) fp32


class _Bucket:
    """Static inputs of one (bucket length, batch rows, CFG) shape, and its captured graphs.

    Requests are loaded into these buffers (a few device copies each), then the text-embedding
    graph and one step graph per Euler step replay.  A step graph is independent of the NFE and
    of the time grid: each step's modulations and step size are copied into ``modulation``/``dt``.
    """

    def __init__(
        self, dit: DiTModule, weights: FastWeights, frames: int, rows: int, guided: bool, device: torch.device
    ) -> None:
        dtype = next(dit.parameters()).dtype
        text_dim = dit.text_embed.text_embed.embedding_dim
        mel = dit.proj_out.out_features
        dim = dit.time_embed.time_mlp[-1].out_features
        groups = rows * (2 if guided else 1)
        self.dit = dit
        self.weights = weights
        self.frames = frames
        self.guided = guided
        self.positions = torch.arange(frames, device=device)
        self.tokens = torch.zeros(rows, frames, dtype=torch.long, device=device)
        self.real = torch.ones(rows, frames, dtype=torch.bool, device=device)
        self.x = torch.zeros(rows, frames, mel, device=device)
        self.cond = torch.zeros(groups, frames, mel, device=device, dtype=dtype)
        self.text = torch.zeros(groups, frames, text_dim, device=device, dtype=dtype)
        if weights.qkv_rope is None:
            self.rope = rope_tables(dit, frames, weights.half_split)
        else:  # QuACK's epilogue computes the angles from each row's positions and the frequencies
            self.rope = (fused_gemm.rope_positions(frames, groups, device), weights.qkv_rope)
        blocks = len(dit.transformer_blocks)
        self.modulation = torch.zeros(blocks + 1, 1, 6 * dim, device=device, dtype=dtype)
        self.dt = torch.full((), 0.1, device=device)
        self.cfg = torch.full((), 2.0, device=device, dtype=dtype)
        self.embed_graph: torch.cuda.CUDAGraph | None = None
        self.step_graph: torch.cuda.CUDAGraph | None = None

    def load(self, row: int, item: BatchItem) -> None:
        """Copy one request into its row: zero padding everywhere past its n frames (the CFG
        rows' audio condition stays all zero)."""
        r, nt, n = item.ref_mel.shape[1], item.text_ids.shape[1], item.frames
        self.tokens[row].zero_()
        self.tokens[row, :nt].copy_(item.text_ids[0] + 1)
        torch.lt(self.positions, n, out=self.real[row])
        self.cond[row, r:].zero_()
        self.cond[row, :r].copy_(item.ref_mel[0])
        self.x[row, n:].zero_()
        self.x[row, :n].copy_(item.noise[0])

    def embed(self, embed_text: TextFn) -> None:
        # Without cuDNN: its depthwise-conv plans are built per shape, ~0.2 s for each bucket's
        # capture (a restart captures 27), for a conv that takes microseconds either way.
        with torch.backends.cudnn.flags(enabled=False):
            emb = embed_text(self.dit.text_embed, self.tokens, self.real, self.guided)
        self.text.copy_(emb)

    def step(self, step: StepFn) -> None:
        args = (
            self.dit,
            self.weights,
            self.x,
            self.cond,
            self.text,
            self.real,
            self.rope,
            self.modulation,
            self.dt,
            self.cfg,
        )
        self.x.copy_(step(*args))

    def capture(self, step: StepFn, embed_text: TextFn, pool: Any, device: torch.device, warmups: int) -> None:
        # Warm up on a side stream (compiles this shape, loads kernels, creates cuBLAS handles)
        # before capture, as torch.cuda.graphs' docs require.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmups):
                self.embed(embed_text)
                self.step(step)
        torch.cuda.current_stream(device).wait_stream(side)
        self.embed_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.embed_graph, pool=pool):
            self.embed(embed_text)
        self.step_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.step_graph, pool=pool):
            self.step(step)

    def run(self, step: StepFn, embed_text: TextFn, mods: Tensor, dt: Tensor) -> None:
        """Text embedding then the Euler steps, replayed where captured."""
        if self.embed_graph is None:
            self.embed(embed_text)
        else:
            self.embed_graph.replay()
        for i in range(dt.shape[0]):
            self.modulation.copy_(mods[i])
            self.dt.copy_(dt[i])
            if self.step_graph is None:
                self.step(step)
            else:
                self.step_graph.replay()


class FastSolver:
    """Bucketed, masked ODE solves, optionally compiled and graph-captured.

    Owned by the engine's thread, like the model.  ``compile`` and ``graphs`` are independent:
    graphs alone remove the launch overhead of eager kernels; compile alone fuses kernels but
    still launches them from Python; both is the fast configuration.  ``backend`` is
    ``torch.compile``'s (tests trace with ``aot_eager``: dynamo's work without code generation).
    ``attention`` is ``[model] attention`` (:func:`_attention`; EngineError if it cannot run).
    ``pdl``: inductor's programmatic dependent launch; None turns it on where
    :func:`pdl_supported`.
    """

    def __init__(
        self,
        dit: DiTModule,
        device: torch.device,
        *,
        compile: bool,
        graphs: bool,
        granularity: int = BUCKET_FRAMES,
        dynamic: bool = True,
        backend: str = "inductor",
        attention: str = "auto",
        pdl: bool | None = None,
    ) -> None:
        if getattr(dit.text_embed, "average_upsampling", False):
            raise ValueError("the fast path does not support text_embedding_average_upsampling")
        self.dit = dit
        self.device = device
        self.granularity = granularity
        self.compiled = compile
        self.graphs_enabled = graphs and device.type == "cuda"
        self.pdl = compile and (pdl_supported(device) if pdl is None else pdl)
        self.regions = compiled_regions(dynamic, backend, self.pdl) if compile else EAGER
        self.step: StepFn = functools.partial(masked_step, self.regions)
        self.embed_text: TextFn = functools.partial(text_embedding, self.regions)
        self.weights = fast_weights(dit, attention)
        self._buckets: dict[tuple[int, int, bool], _Bucket] = {}
        self._times: dict[tuple[int, float | None], tuple[Tensor, Tensor]] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.graphs_enabled else None
        self.capture_s = 0.0

    @property
    def attention(self) -> str:
        """The attention kernel in force, by its config name (:data:`ATTENTION_NAMES`)."""
        return ATTENTION_NAMES[self.weights.attention]

    @property
    def graph_count(self) -> int:
        """Captured shapes: each is a text-embedding graph and a step graph."""
        return sum(b.step_graph is not None for b in self._buckets.values())

    def _bucket(self, frames: int, rows: int, guided: bool) -> _Bucket:
        key = (frames, rows, guided)
        found = self._buckets.get(key)
        if found is None:
            t0 = time.perf_counter()
            found = _Bucket(self.dit, self.weights, frames, rows, guided, self.device)
            if self.graphs_enabled:
                # The first capture also compiles and initialises cuBLAS/cuDNN: warm it up
                # a few times; later buckets reuse all that and need one run.
                warmups = 1 if self.graph_count else 3
                found.capture(self.step, self.embed_text, self._pool, self.device, warmups)
                self.capture_s += time.perf_counter() - t0
                log.debug("captured bucket graphs", extra={"frames": frames, "rows": rows, "guided": guided})
            self._buckets[key] = found
        return found

    def _schedule(self, nfe: int, sway: float | None) -> tuple[Tensor, Tensor]:
        """Each step's modulations (:func:`modulations`) and size, once per (NFE, sway)."""
        key = (nfe, sway)
        if key not in self._times:
            time_emb, dt = sampler.time_embeddings(self.dit, nfe, sway, self.device)
            self._times[key] = (modulations(self.dit, time_emb), dt)
        return self._times[key]

    @torch.inference_mode()
    def precapture(self, frames: Iterable[int], guided: bool = True, rows: int = 1) -> int:
        """Capture (and compile) the buckets covering ``frames`` ahead of traffic.  Under
        inference mode, as requests run: compiled code is guarded on the grad mode."""
        if not self.graphs_enabled:
            return 0
        done = 0
        for n in sorted({bucket(f, self.granularity) for f in frames}):
            if (n, rows, guided) not in self._buckets:
                self._bucket(n, rows, guided)
                done += 1
        return done

    def warm_frames(self, ref_frames: int) -> range:
        """Total frame counts a default-speed request on this reference can need."""
        top = max(int(WARM_SECONDS * _FRAMES_PER_SECOND), ref_frames + self.granularity)
        return range(ref_frames + 1, top + 1, self.granularity)

    @torch.no_grad()
    def sample(
        self,
        ref_mel: Tensor,
        text_ids: Tensor,
        frames: int,
        *,
        nfe: int,
        cfg_strength: float,
        sway: float | None,
        noise: Tensor,
    ) -> Tensor:
        """Drop-in for :func:`sampler.sample` on the bucketed path: no host sync anywhere, so
        the caller can queue the vocoder while the GPU still runs the steps."""
        item = BatchItem(ref_mel, text_ids, frames, noise)
        return self.sample_batch([item], nfe=nfe, cfg_strength=cfg_strength, sway=sway)[0]

    @torch.no_grad()
    def sample_batch(
        self, items: list[BatchItem], *, nfe: int, cfg_strength: float, sway: float | None
    ) -> list[Tensor]:
        """Several requests of one length bucket (and one NFE, guidance and sway) as one batch;
        each result is what :meth:`sample` gives for that request alone."""
        frames = bucket(max(item.frames for item in items), self.granularity)
        if any(bucket(item.frames, self.granularity) != frames for item in items):
            raise ValueError("a batch must share one length bucket")
        b = self._bucket(frames, len(items), sampler.is_guided(cfg_strength))
        for row, item in enumerate(items):
            b.load(row, item)
        b.cfg.fill_(cfg_strength)
        b.run(self.step, self.embed_text, *self._schedule(nfe, sway))
        out = []
        for row, item in enumerate(items):
            ref = item.ref_mel.shape[1]
            out.append(torch.cat((item.ref_mel.to(b.x.dtype), b.x[row : row + 1, ref : item.frames]), dim=1))
        return out
