"""Our Euler flow-matching sampler over f5-tts's DiT (instead of ``CFM.sample`` + torchdiffeq).

Why not ``CFM.sample``: it re-enters ``DiT.forward`` every step, which keeps the text
embeddings in a per-thread cache on the module (so the step is not a pure function, and
``torch.compile(mode="reduce-overhead")``/CUDA graphs break on it), runs the conditional and
unconditional inputs through the input embedding separately, recomputes the time embedding
and RoPE tables every step, and lets torchdiffeq build the time grid in the model dtype
(bf16 grids are not monotonic).

Here everything that is constant over a solve is computed once, before the loop
(:func:`prepare`): both text embeddings, the CFG audio condition, RoPE, every step's time
embedding and step size (fp32).  The loop then calls :func:`euler_step`, a pure function of
tensors ``(x, t_emb, dt) -> x'`` with no host syncs and no CPU work, which is what
``torch.compile`` and CUDA-graph capture need (issue 8).  At fp32 the result matches
``CFM.sample`` (tests/unit/test_engine_sampler.py).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .spec import EPSS_STEPS
from .upstream import get_epss_timesteps

# f5-tts's DiT is untyped (its submodules are reached as attributes), so it is handled as Any.
DiTModule = Any

# CFM.sample treats a guidance weight this small as "no guidance" and skips the second pass.
_NO_CFG = 1e-5


def exact_length_convs(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Run convolutions at a request's exact length without cuDNN.

    The text embedding and the vocoder run at every request's own length (the DiT steps run
    at bucket shapes).  cuDNN builds execution plans for each new shape, which cost 250-650 ms
    on the first request of every new length on an H100 (bench/NOTES.md item 6): a livestream,
    where every message is a new length, would pay it all the time.  Without cuDNN these small
    convolutions take a little longer, but always the same.
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.backends.cudnn.flags(enabled=False)


def timesteps(nfe: int, sway: float | None, device: torch.device | str = "cpu") -> Tensor:
    """The fp32 time grid (nfe + 1 points from 0 to 1): EPSS where upstream has a table, else
    uniform, then bent by sway sampling (``t + s * (cos(pi/2 t) - 1 + t)``)."""
    if nfe in EPSS_STEPS:
        t = get_epss_timesteps(nfe, device=device, dtype=torch.float32)
    else:
        t = torch.linspace(0.0, 1.0, nfe + 1, device=device, dtype=torch.float32)
    if sway is not None:
        t = t + sway * (torch.cos(math.pi / 2 * t) - 1 + t)
    return t


@dataclass(frozen=True)
class Conditioning:
    """Everything a solve needs that does not change from step to step."""

    cond: Tensor  # (G*B, n, mel): reference mel (zero-padded), then zeros for the CFG half
    text: Tensor  # (G*B, n, text_dim): text embedding, then the dropped-text embedding
    rope: tuple[Tensor, Any]  # RoPE (freqs, xpos scale) for n positions
    time_emb: Tensor  # (nfe, 1, dim): the DiT time embedding of each step's start time
    dt: Tensor  # (nfe,) fp32 step sizes
    cfg_strength: float  # guidance weight; G = 2 when > _NO_CFG else 1
    frames: int  # n

    @property
    def nfe(self) -> int:
        return int(self.dt.shape[0])

    @property
    def guided(self) -> bool:
        return is_guided(self.cfg_strength)


def is_guided(cfg_strength: float) -> bool:
    """Whether a guidance weight asks for the unconditional pass at all."""
    return cfg_strength >= _NO_CFG


def total_frames(frames: int, ref_frames: int, text_tokens: int, max_frames: int = 65536) -> int:
    """CFM.sample's rule: at least one frame past the reference and past the text."""
    return min(max(frames, max(text_tokens, ref_frames) + 1), max_frames)


@torch.no_grad()
def time_embeddings(dit: DiTModule, nfe: int, sway: float | None, device: torch.device) -> tuple[Tensor, Tensor]:
    """Every step's DiT time embedding (nfe, 1, dim) in the model dtype and step size (nfe,)
    fp32.  They depend only on the NFE and sway, not on the request."""
    t = timesteps(nfe, sway, device)
    # The time embedding's sinusoid is taken from the fp32 grid; only its MLP runs in the model
    # dtype (upstream feeds it a grid already rounded to fp16/bf16).
    hidden = dit.time_embed.time_embed(t[:-1]).to(next(dit.parameters()).dtype)
    return dit.time_embed.time_mlp(hidden).unsqueeze(1), t[1:] - t[:-1]


@torch.no_grad()
def prepare(
    dit: DiTModule,
    ref_mel: Tensor,
    text_ids: Tensor,
    frames: int,
    *,
    nfe: int,
    cfg_strength: float,
    sway: float | None,
) -> Conditioning:
    """Build the per-request constants.  ``ref_mel`` is (1, r, mel) fp32, ``text_ids`` (1, nt)
    token ids (reference transcript + text), ``frames`` the total length including the reference
    (already passed through :func:`total_frames`)."""
    dtype = next(dit.parameters()).dtype
    device = ref_mel.device
    cond = F.pad(ref_mel.to(dtype), (0, 0, 0, frames - ref_mel.shape[1]), value=0.0)
    with exact_length_convs(device):
        text = dit.text_embed(text_ids, seq_len=frames, drop_text=False)
        text_null = dit.text_embed(text_ids, seq_len=frames, drop_text=True) if is_guided(cfg_strength) else None
    if text_null is not None:
        cond = torch.cat((cond, torch.zeros_like(cond)), dim=0)
        text = torch.cat((text, text_null), dim=0)
    time_emb, dt = time_embeddings(dit, nfe, sway, device)
    return Conditioning(
        cond=cond,
        text=text,
        rope=dit.rotary_embed.forward_from_seq_len(frames),
        time_emb=time_emb,
        dt=dt,
        cfg_strength=float(cfg_strength),
        frames=frames,
    )


def velocity(dit: DiTModule, c: Conditioning, x: Tensor, t_emb: Tensor) -> Tensor:
    """The guided flow at state ``x`` (B, n, mel): one DiT pass over the fused CFG batch.

    Mirrors DiT.forward for an unmasked batch: input embedding, blocks, final AdaLN and
    projection.  ``t_emb`` is (1, dim) and broadcasts over the batch: all rows share one time.
    """
    dtype = c.text.dtype
    h_in = x.to(dtype)
    if c.guided:
        h_in = torch.cat((h_in, h_in), dim=0)
    h = dit.input_embed(h_in, c.cond, c.text)
    residual = h
    for block in dit.transformer_blocks:
        h = block(h, t_emb, mask=None, rope=c.rope)
    if dit.long_skip_connection is not None:
        h = dit.long_skip_connection(torch.cat((h, residual), dim=-1))
    out = dit.proj_out(dit.norm_out(h, t_emb))
    if not c.guided:
        return out
    pred, null = torch.chunk(out, 2, dim=0)
    return pred + (pred - null) * c.cfg_strength


def euler_step(dit: DiTModule, c: Conditioning, x: Tensor, t_emb: Tensor, dt: Tensor) -> Tensor:
    """One Euler step; the state ``x`` is kept in fp32 whatever the model dtype."""
    return x + dt * velocity(dit, c, x, t_emb).float()


StepFn = Callable[[DiTModule, Conditioning, Tensor, Tensor, Tensor], Tensor]


@torch.no_grad()
def solve(dit: DiTModule, c: Conditioning, x0: Tensor, step: StepFn = euler_step) -> Tensor:
    """Integrate from noise ``x0`` (B, n, mel) fp32 at t=0 to t=1.  ``step`` is swappable so a
    compiled or graph-captured version of :func:`euler_step` can run the same loop."""
    x = x0
    for i in range(c.nfe):
        x = step(dit, c, x, c.time_emb[i], c.dt[i])
    return x


def initial_noise(frames: int, n_mels: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """(1, frames, n_mels) fp32 standard normal noise, drawn like CFM.sample draws it (so a
    generator seeded with s gives the noise ``torch.manual_seed(s)`` would)."""
    return torch.randn(frames, n_mels, generator=generator, device=device, dtype=torch.float32).unsqueeze(0)


@torch.no_grad()
def sample(
    dit: DiTModule,
    ref_mel: Tensor,
    text_ids: Tensor,
    frames: int,
    *,
    nfe: int,
    cfg_strength: float,
    sway: float | None,
    noise: Tensor,
    step: StepFn = euler_step,
) -> Tensor:
    """The whole mel (1, frames, mel) fp32 with the reference region restored, as CFM.sample
    returns it.  ``frames`` must already satisfy :func:`total_frames`; ``noise`` is (1, frames, mel)."""
    c = prepare(dit, ref_mel, text_ids, frames, nfe=nfe, cfg_strength=cfg_strength, sway=sway)
    x = solve(dit, c, noise, step)
    ref = ref_mel.shape[1]
    return torch.cat((ref_mel.to(x.dtype), x[:, ref:]), dim=1)
