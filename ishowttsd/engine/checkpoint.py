"""Reading F5-TTS checkpoints in the layouts upstream writes them.

- Released ``.safetensors`` (e.g. F5TTS_v1_Base/model_1250000.safetensors): a flat EMA state
  dict, keys ``ema_model.transformer.*`` or already ``transformer.*``.
- Training ``.pt`` files: ``{"ema_model_state_dict": {...}, "model_state_dict": {...}, ...}``;
  upstream's ``load_checkpoint(use_ema=True)`` uses the EMA weights, so we prefer them and fall
  back to ``model_state_dict`` only when there is no EMA copy.
EMA bookkeeping (``initted``, ``step``) and old mel front-end buffers are dropped; what is
left must be exactly the DiT's parameters under ``transformer.``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

_EMA_PREFIX = "ema_model."
_DROP = {"initted", "step"}
_OLD_MEL_KEYS = ("mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window")


class CheckpointError(Exception):
    """The checkpoint is missing, unreadable, or does not fit the architecture/vocab."""


def read(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise CheckpointError(
            f'checkpoint {path} not found (run `ishowttsd fetch-model`, or set weights = "untrained")'
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        if suffix in (".pt", ".pth", ".ckpt", ".bin"):
            # weights_only: a checkpoint is data, never code to run.
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
            if not isinstance(loaded, Mapping):
                raise CheckpointError(f"checkpoint {path} holds a {type(loaded).__name__}, not a state dict")
            return loaded
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from exc
    raise CheckpointError(f"checkpoint {path}: unknown format {suffix!r} (use .safetensors or .pt)")


def dit_state_dict(raw: Mapping[str, Any]) -> dict[str, Tensor]:
    """The DiT's own state dict out of any upstream layout."""
    if "ema_model_state_dict" in raw:
        state = raw["ema_model_state_dict"]
    elif "model_state_dict" in raw:
        state = raw["model_state_dict"]
    else:
        state = raw
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        name = key[len(_EMA_PREFIX) :] if key.startswith(_EMA_PREFIX) else key
        if name in _DROP or name in _OLD_MEL_KEYS or name.startswith("mel_spec."):
            continue
        if not name.startswith("transformer."):
            raise CheckpointError(f"unexpected key {key!r}: not an F5-TTS (CFM/DiT) checkpoint")
        out[name[len("transformer.") :]] = value
    if not out:
        raise CheckpointError("the checkpoint holds no transformer weights")
    return out


def load_into(dit: nn.Module, path: Path, architecture: str, vocab_size: int) -> None:
    state = dit_state_dict(read(path))
    embed = state.get("text_embed.text_embed.weight")
    if embed is not None and embed.shape[0] != vocab_size + 1:
        raise CheckpointError(
            f"checkpoint {path} was trained with a vocab of {embed.shape[0] - 1} tokens, but the vocab "
            f"file has {vocab_size}: set [model] vocab to the checkpoint's vocab.txt"
        )
    expected = dit.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched))
            if keys
        )
        raise CheckpointError(f"checkpoint {path} does not fit architecture {architecture}: {detail}")
    dit.load_state_dict(state, strict=True)
