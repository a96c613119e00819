"""FlashAttention's CuTe-DSL kernels (the optional ``flash-attn-4`` package) over padded keys.

The fast path pads every request to a length bucket, so attention must ignore the padded
keys.  FlashAttention takes each row's count of real keys (``seqused_k``) and skips the rest
in the kernel: exact, no mask, no validity column, q and k at their own width.  Its Hopper
kernel is the FlashAttention-3 design; its Ampere one also serves the Jetson's sm_87.

The package is optional (it brings a 200 MB compiler, nvidia-cutlass-dsl): where it is not
installed, or its probe fails on this card, the engine uses cuDNN over the validity column
(``accel.column_attention``).  It compiles its kernel on first use, and keeps it on disk when
:func:`configure_cache` points it at the daemon's cache dir.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger("ishowttsd.engine")


def configure_cache(root: Path) -> dict[str, str]:
    """Keep the compiled kernels, and the CuTe DSL compiler's own cache, under ``root`` instead
    of the temp dir (the packages read these when first imported)."""
    path = root / "flash-attn"
    (path / "cute-dsl").mkdir(parents=True, exist_ok=True)
    settings = {
        "FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED": "1",
        "FLASH_ATTENTION_CUTE_DSL_CACHE_DIR": str(path),
        "CUTE_DSL_CACHE_DIR": str(path / "cute-dsl"),
    }
    os.environ.update(settings)
    return settings


def _varlen() -> Callable[..., Any]:
    # Imported on first use only: the import loads the CuTe DSL compiler (seconds).
    from flash_attn.cute import flash_attn_varlen_func

    return flash_attn_varlen_func


@torch.library.custom_op("ishowttsd::flash_attention", mutates_args=())
def flash_attention(q: Tensor, k: Tensor, v: Tensor, keys: Tensor) -> Tensor:
    """Attention over (G, N, H, d) q/k/v, row g attending to its first ``keys[g]`` keys only
    (``keys``: (G,) int32).  A custom op, so that ``torch.compile`` calls it as one opaque kernel."""
    out = _varlen()(q, k, v, seqused_k=keys)
    return out[0] if isinstance(out, tuple) else out


@flash_attention.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, keys: Tensor) -> Tensor:
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


def key_counts(mask: Tensor) -> Tensor:
    """Each row's count of real keys, (G,) int32, from the (G, N) frame mask (real frames come
    first in every row)."""
    return mask.sum(dim=1, dtype=torch.int32)


def flash_attention_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the package is installed and its kernel matches fp32 attention over the real
    keys on this card (a compile, then a small run; a second or so with a warm cache)."""
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return False
    try:
        _varlen()
    except ImportError:
        return False
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        q, k, v = (torch.randn(2, 192, 4, 64, device=device, dtype=dtype, generator=gen) for _ in range(3))
        keys = torch.tensor([150, 192], device=device, dtype=torch.int32)
        got = flash_attention(q, k, v, keys).float()
        worst = 0.0
        for row, n in enumerate((150, 192)):
            want = F.scaled_dot_product_attention(
                q[row : row + 1].float().transpose(1, 2),
                k[row : row + 1, :n].float().transpose(1, 2),
                v[row : row + 1, :n].float().transpose(1, 2),
            ).transpose(1, 2)
            worst = max(worst, float((got[row : row + 1] - want).abs().max()))
        if worst < 1e-2:
            return True
        log.warning("FlashAttention is installed but off by %.3g here; using cuDNN's attention instead", worst)
    except Exception as exc:  # a probe: whatever this build or card refuses, cuDNN still works
        log.info("FlashAttention unavailable (%s: %s); using cuDNN's attention", type(exc).__name__, str(exc)[:200])
    return False
