"""The one door to f5-tts: import its model pieces without its training stack.

Why this module exists: ``import f5_tts.model.<anything>`` first runs
``f5_tts/model/__init__.py``, which imports the Trainer and with it wandb, accelerate and
datasets.  The daemon never trains, and on a warm page cache that costs it about 1.3 s of
start-up (5.1-5.9 s against 3.9-4.6 s for what we use, measured on the 2-core dev box) and the
memory of three large libraries.  So before the first import we register a *lazy* stand-in for
the ``f5_tts.model`` package: it has the real ``__path__`` (so submodules import normally)
and resolves upstream's public names (CFM, DiT, UNetT, MMDiT, Trainer) on first use, so code
that does ``from f5_tts.model import CFM`` (the benchmark's stock path, our equivalence test)
still works and only then pays for what it asks for.  If ``f5_tts.model`` is already imported
we leave it alone.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Iterator
from typing import Any

from .paths import f5_package_dir

_LAZY_NAMES = {
    "CFM": "f5_tts.model.cfm",
    "DiT": "f5_tts.model.backbones.dit",
    "UNetT": "f5_tts.model.backbones.unett",
    "MMDiT": "f5_tts.model.backbones.mmdit",
    "Trainer": "f5_tts.model.trainer",
}


def _install_lazy_model_package() -> None:
    if "f5_tts.model" in sys.modules:
        return
    module = types.ModuleType("f5_tts.model")
    module.__path__ = [str(f5_package_dir() / "model")]
    module.__package__ = "f5_tts.model"
    # A real spec, so importlib.util.find_spec("f5_tts.model") and friends keep working.
    module.__spec__ = importlib.machinery.ModuleSpec("f5_tts.model", None, is_package=True)
    module.__spec__.submodule_search_locations = list(module.__path__)
    module.__all__ = list(_LAZY_NAMES)  # type: ignore[attr-defined]

    def __getattr__(name: str) -> Any:  # PEP 562 module __getattr__
        target = _LAZY_NAMES.get(name)
        if target is None:
            raise AttributeError(f"module 'f5_tts.model' has no attribute {name!r}")
        value = getattr(importlib.import_module(target), name)
        setattr(module, name, value)
        return value

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules["f5_tts.model"] = module


@contextlib.contextmanager
def _deferred_librosa_filters() -> Iterator[None]:
    """While f5-tts's modules import, ``librosa.filters`` is a stand-in whose ``mel`` imports
    the real one on first call.

    ``f5_tts.model.modules`` imports ``librosa.filters.mel`` at import time for BigVGAN's mel
    spectrogram, which the engine never builds (it uses Vocos's).  The real module pulls
    scipy.signal and scipy.stats: about 3 s of every start on an H100 host (bench/NOTES.md
    item 24).  The stand-in leaves ``sys.modules`` as soon as the import is done, so
    any later ``import librosa.filters`` gets the real module, and so does the deferred call.
    """
    if "librosa.filters" in sys.modules:
        yield
        return
    stand_in = types.ModuleType("librosa.filters")

    def mel(*args: Any, **kwargs: Any) -> Any:
        real = importlib.import_module("librosa.filters")
        return real.mel(*args, **kwargs)

    stand_in.mel = mel  # type: ignore[attr-defined]
    sys.modules["librosa.filters"] = stand_in
    try:
        yield
    finally:
        if sys.modules.get("librosa.filters") is stand_in:
            del sys.modules["librosa.filters"]


@contextlib.contextmanager
def _flash_attn_2_only() -> Iterator[None]:
    """While f5-tts's modules import, a ``flash_attn`` without FlashAttention 2's functions
    counts as absent.

    f5-tts imports ``flash_attn_func`` whenever any package named ``flash_attn`` is found.
    flash-attn-4 (engine/flash.py) installs only ``flash_attn.cute`` under that name, so that
    import fails and f5-tts cannot load at all.  The engine never uses f5-tts's flash backend.
    """
    utils: Any = importlib.import_module("f5_tts.model.utils")
    real = utils.is_package_available

    def available(name: str) -> bool:
        if name == "flash_attn" and real(name):
            return importlib.util.find_spec("flash_attn.flash_attn_interface") is not None
        return bool(real(name))

    utils.is_package_available = available
    try:
        yield
    finally:
        utils.is_package_available = real


_install_lazy_model_package()

# These imports are the only f5-tts code the engine needs at run time.
with _deferred_librosa_filters(), _flash_attn_2_only():
    from f5_tts.model.backbones.dit import DiT
    from f5_tts.model.modules import MelSpec
from f5_tts.model.utils import (  # noqa: E402
    convert_char_to_pinyin,
    get_epss_timesteps,
    list_str_to_idx,
)

# The RoPE function upstream's attention applies (x_transformers'), so our masked attention
# (accel.py) rotates exactly as upstream does.
from x_transformers.x_transformers import apply_rotary_pos_emb  # noqa: E402

__all__ = [
    "DiT",
    "MelSpec",
    "apply_rotary_pos_emb",
    "convert_char_to_pinyin",
    "get_epss_timesteps",
    "list_str_to_idx",
]
