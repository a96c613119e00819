"""The fast ODE path (issue 8): length buckets, ``torch.compile`` and CUDA graphs.

Why buckets with a mask.  CUDA graphs and compiled kernels are shape-specific, and every
request of a livestream has a new text length.  So the sequence is padded up to a bucket
(a multiple of :data:`BUCKET_FRAMES`) and the padding is *masked*, which keeps the output that
of the unpadded sequence (only float rounding differs):

- attention gets a key-padding mask, so valid positions never attend to padding;
- the convolutional position embedding zeroes padding before and after each of its convs
  (upstream's ``ConvPositionEmbedding`` with a mask does exactly that), which is the zero
  padding the unpadded conv sees;
- everything else (AdaLN, feed-forward, projections) is per position;
- the text embedding is computed at the true length and zero-padded.

Upstream's DiT blocks ignore the mask in attention for v1 models (``attn_mask_enabled`` is
off), so :func:`masked_velocity` runs the blocks' own submodules with a masked SDPA instead of
calling ``DiTBlock.forward``.  tests/unit/test_engine_accel.py checks padded == unpadded.

Why a graph per *step* rather than per solve.  A step graph is independent of the NFE and of
the time grid: the loop copies each step's time embedding and step size into the graph's
static inputs (two tiny device copies) and replays.  One graph per (bucket, CFG) serves every
NFE, so warm-up captures a few dozen graphs in well under a second each, all sharing one memory
pool.  The vocoder runs outside the graph on the exact frame count (its convs would see the
padding), optionally compiled with dynamic shapes.

Compile caches: inductor's FX-graph cache and Triton's kernel cache live under
``<cache_dir>/inductor`` and ``<cache_dir>/triton`` when a cache dir is given, so a restart
reuses the kernels and skips most of the compile.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import sampler
from .upstream import apply_rotary_pos_emb

log = logging.getLogger("ishowttsd.engine")

# 64 mel frames = 0.68 s of audio: at most 4% padding for the 15 s issue-8 utterance.  Tried
# 128 on the H100 (fewer graphs): the 1457-frame solve padded to 1536 ran 64.6 ms against
# 57.9 ms at 1472, and the compile count does not depend on the bucket count (bench/NOTES.md).
BUCKET_FRAMES = 64
# Upstream sizes chunks so that reference + chunk is about 22 s; warm-up captures up to here.
_WARM_SECONDS = 23.0
_FRAMES_PER_SECOND = 24000 / 256

DiTModule = Any
StepFn = Callable[..., Tensor]


def bucket(frames: int, granularity: int = BUCKET_FRAMES) -> int:
    """The padded length a solve of ``frames`` runs at."""
    return -(-frames // granularity) * granularity


def configure_caches(cache_dir: str | os.PathLike[str] | None) -> dict[str, str]:
    """Point inductor's and Triton's on-disk caches under ``cache_dir`` (before the first
    compile: both read these variables when they first need a cache).  Returns what was set."""
    if not cache_dir:
        return {}
    root = Path(cache_dir)
    dirs = {"TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"), "TRITON_CACHE_DIR": str(root / "triton")}
    for key, value in dirs.items():
        Path(value).mkdir(parents=True, exist_ok=True)
        os.environ[key] = value
    try:
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
        # Reuse autotuning results too (kernel configs picked on this card).
        inductor_config.autotune_local_cache = True
    except (ImportError, AttributeError):  # older or trimmed torch: compile still works, uncached
        log.warning("inductor config not available; compile caches are not persisted")
    return dirs


def _block(block: Any, x: Tensor, t: Tensor, rope: tuple[Tensor, Any], attn_mask: Tensor | None) -> Tensor:
    """``DiTBlock.forward`` with a key-padding mask in attention (dropout is off in eval)."""
    norm, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.attn_norm(x, emb=t)
    attn = block.attn
    b = norm.shape[0]
    q, k, v = attn.to_q(norm), attn.to_k(norm), attn.to_v(norm)
    head_dim = k.shape[-1] // attn.heads
    q = q.view(b, -1, attn.heads, head_dim).transpose(1, 2)
    k = k.view(b, -1, attn.heads, head_dim).transpose(1, 2)
    v = v.view(b, -1, attn.heads, head_dim).transpose(1, 2)
    if attn.q_norm is not None:
        q = attn.q_norm(q)
    if attn.k_norm is not None:
        k = attn.k_norm(k)
    freqs, xpos = rope
    q_scale, k_scale = (xpos, xpos**-1.0) if xpos is not None else (1.0, 1.0)
    pn = attn.processor.pe_attn_head
    if pn is None:
        q = apply_rotary_pos_emb(q, freqs, q_scale)
        k = apply_rotary_pos_emb(k, freqs, k_scale)
    else:  # F5TTS_Base: RoPE on the first pn heads only
        q = torch.cat((apply_rotary_pos_emb(q[:, :pn], freqs, q_scale), q[:, pn:]), dim=1)
        k = torch.cat((apply_rotary_pos_emb(k[:, :pn], freqs, k_scale), k[:, pn:]), dim=1)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    o = o.transpose(1, 2).reshape(b, -1, attn.heads * head_dim).to(q.dtype)
    x = x + gate_msa.unsqueeze(1) * attn.to_out[0](o)
    norm = block.ff_norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
    return x + gate_mlp.unsqueeze(1) * block.ff(norm)


def masked_velocity(
    dit: DiTModule,
    x: Tensor,
    cond: Tensor,
    text: Tensor,
    mask: Tensor,
    rope: tuple[Tensor, Any],
    t_emb: Tensor,
    cfg: Tensor,
) -> Tensor:
    """The guided flow for a padded batch: ``x`` (1, N, mel) fp32, ``cond``/``text`` (G, N, ·)
    in the model dtype, ``mask`` (1, N) bool (True = real frame), ``cfg`` a 0-d tensor."""
    guided = text.shape[0] == 2
    h_in = x.to(text.dtype).expand(text.shape[0], -1, -1)
    embed = dit.input_embed
    h = embed.proj(torch.cat((h_in, cond, text), dim=-1))
    h = embed.conv_pos_embed(h, mask=mask) + h
    attn_mask = mask[:, None, None, :]
    residual = h
    for block in dit.transformer_blocks:
        h = _block(block, h, t_emb, rope, attn_mask)
    if dit.long_skip_connection is not None:
        h = dit.long_skip_connection(torch.cat((h, residual), dim=-1))
    out = dit.proj_out(dit.norm_out(h, t_emb))
    if not guided:
        return out
    pred, null = torch.chunk(out, 2, dim=0)
    return pred + (pred - null) * cfg


def masked_step(
    dit: DiTModule,
    x: Tensor,
    cond: Tensor,
    text: Tensor,
    mask: Tensor,
    rope: tuple[Tensor, Any],
    t_emb: Tensor,
    dt: Tensor,
    cfg: Tensor,
) -> Tensor:
    """One Euler step on the padded batch; a pure function of tensors (compile/graph friendly)."""
    return x + dt * masked_velocity(dit, x, cond, text, mask, rope, t_emb, cfg).float()


def _compile_step(dynamic: bool) -> StepFn:
    """``torch.compile`` of :func:`masked_step`.

    Measured on the H100 (bench/NOTES.md): a static compile costs about 30 s per bucket from
    an empty cache, so a static compile per bucket is out.  With ``dynamic=True`` the first
    bucket still specialises (dynamo guards its length) and the second bucket recompiles with
    the length dynamic, which then serves every later bucket: two compiles in all.  The
    recompile limit is raised anyway, so that dynamo never silently falls back to eager.
    """
    import torch._dynamo.config as dynamo_config

    limit = 256
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(int(getattr(dynamo_config, name)), limit))
    if not dynamic:
        # Otherwise the second shape would switch dynamo to a dynamic-shape recompile.
        dynamo_config.automatic_dynamic_shapes = False
    return torch.compile(masked_step, dynamic=dynamic)


class _Padded:
    """A solve's inputs padded to a bucket."""

    def __init__(self, c: sampler.Conditioning, x0: Tensor, frames: int) -> None:
        n = c.frames
        extra = frames - n
        self.x = F.pad(x0, (0, 0, 0, extra))
        self.cond = F.pad(c.cond, (0, 0, 0, extra))
        self.text = F.pad(c.text, (0, 0, 0, extra))
        self.mask = torch.arange(frames, device=x0.device).lt(n).unsqueeze(0)


class _StepGraph:
    """One captured Euler step for a (bucket, CFG) shape, with static inputs."""

    def __init__(self, dit: DiTModule, step: StepFn, frames: int, groups: int, pool: Any, device: torch.device) -> None:
        dtype = next(dit.parameters()).dtype
        text_dim = dit.text_embed.text_embed.embedding_dim
        mel = dit.proj_out.out_features
        dim = dit.time_embed.time_mlp[-1].out_features
        self.frames = frames
        self.x = torch.randn(1, frames, mel, device=device)
        self.cond = torch.randn(groups, frames, mel, device=device, dtype=dtype)
        self.text = torch.randn(groups, frames, text_dim, device=device, dtype=dtype)
        self.mask = torch.ones(1, frames, dtype=torch.bool, device=device)
        self.rope = dit.rotary_embed.forward_from_seq_len(frames)
        self.t_emb = torch.randn(1, dim, device=device, dtype=dtype)
        self.dt = torch.full((), 0.1, device=device)
        self.cfg = torch.full((), 2.0, device=device, dtype=dtype)
        args = (dit, self.x, self.cond, self.text, self.mask, self.rope, self.t_emb, self.dt, self.cfg)
        # Warm up on a side stream (compiles this shape, loads kernels, creates cuBLAS handles)
        # before capture, as torch.cuda.graphs' docs require.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                step(*args)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            out = step(*args)
            self.x.copy_(out)

    def solve(self, p: _Padded, c: sampler.Conditioning) -> Tensor:
        self.x.copy_(p.x)
        self.cond.copy_(p.cond)
        self.text.copy_(p.text)
        self.mask.copy_(p.mask)
        self.cfg.fill_(c.cfg_strength)
        for i in range(c.nfe):
            self.t_emb.copy_(c.time_emb[i])
            self.dt.copy_(c.dt[i])
            self.graph.replay()
        return self.x.clone()


class FastSolver:
    """Bucketed, masked ODE solves, optionally compiled and graph-captured.

    Owned by the engine's thread, like the model.  ``compile`` and ``graphs`` are independent:
    graphs alone remove the launch overhead of eager kernels; compile alone fuses kernels but
    still launches them from Python; both is the fast configuration.
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
    ) -> None:
        self.dit = dit
        self.device = device
        self.granularity = granularity
        self.compiled = compile
        self.graphs_enabled = graphs and device.type == "cuda"
        step: StepFn = masked_step
        if compile:
            step = _compile_step(dynamic)
        self.step = step
        self._graphs: dict[tuple[int, int], _StepGraph] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.graphs_enabled else None
        self.capture_s = 0.0

    @property
    def graph_count(self) -> int:
        return len(self._graphs)

    def _graph(self, frames: int, groups: int) -> _StepGraph:
        key = (frames, groups)
        graph = self._graphs.get(key)
        if graph is None:
            t0 = time.perf_counter()
            graph = _StepGraph(self.dit, self.step, frames, groups, self._pool, self.device)
            self._graphs[key] = graph
            self.capture_s += time.perf_counter() - t0
            log.debug("captured step graph", extra={"frames": frames, "groups": groups})
        return graph

    @torch.inference_mode()
    def precapture(self, frames: Iterable[int], guided: bool = True) -> int:
        """Capture (and compile) the buckets covering ``frames`` ahead of traffic.  Under
        inference mode, as requests run: compiled code is guarded on the grad mode."""
        if not self.graphs_enabled:
            return 0
        groups = 2 if guided else 1
        done = 0
        for n in sorted({bucket(f, self.granularity) for f in frames}):
            if (n, groups) not in self._graphs:
                self._graph(n, groups)
                done += 1
        return done

    def warm_frames(self, ref_frames: int) -> range:
        """Total frame counts a default-speed request on this reference can need."""
        top = max(int(_WARM_SECONDS * _FRAMES_PER_SECOND), ref_frames + self.granularity)
        return range(ref_frames + 1, top + 1, self.granularity)

    @torch.no_grad()
    def solve(self, c: sampler.Conditioning, x0: Tensor) -> Tensor:
        """Same contract as :func:`sampler.solve`: noise (1, n, mel) fp32 in, state at t=1 out."""
        n = c.frames
        frames = bucket(n, self.granularity)
        p = _Padded(c, x0, frames)
        if self.graphs_enabled:
            x = self._graph(frames, p.text.shape[0]).solve(p, c)
        else:
            cfg = torch.full((), c.cfg_strength, device=x0.device, dtype=p.text.dtype)
            rope = self.dit.rotary_embed.forward_from_seq_len(frames)
            x = p.x
            for i in range(c.nfe):
                x = self.step(self.dit, x, p.cond, p.text, p.mask, rope, c.time_emb[i], c.dt[i], cfg)
        return x[:, :n]

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
        """Drop-in for :func:`sampler.sample` on the bucketed path."""
        c = sampler.prepare(self.dit, ref_mel, text_ids, frames, nfe=nfe, cfg_strength=cfg_strength, sway=sway)
        x = self.solve(c, noise)
        ref = ref_mel.shape[1]
        return torch.cat((ref_mel.to(x.dtype), x[:, ref:]), dim=1)
