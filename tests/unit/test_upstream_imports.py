"""The engine's door to f5-tts defers what it never uses (engine/upstream.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_librosa_filters_is_deferred_and_still_works_when_called() -> None:
    out = _run(
        "import sys\n"
        "import ishowttsd.engine.upstream\n"
        "import f5_tts.model.modules as m\n"
        "print('deferred', 'scipy.signal' not in sys.modules and 'librosa.filters' not in sys.modules)\n"
        # BigVGAN's mel filter bank, through the name f5-tts bound at import time
        "got = m.librosa_mel_fn(sr=24000, n_fft=1024, n_mels=100, fmin=0, fmax=8000)\n"
        "import librosa.filters, numpy\n"
        "want = librosa.filters.mel(sr=24000, n_fft=1024, n_mels=100, fmin=0, fmax=8000)\n"
        "print('equal', numpy.array_equal(got, want), hasattr(sys.modules['librosa.filters'], '__file__'))\n"
    )
    assert "deferred True" in out, out
    assert "equal True True" in out, out


def _flash_attn_4_layout(root: Path) -> Path:
    """What flash-attn-4 installs: ``flash_attn/cute`` with no ``flash_attn/__init__.py``, so
    ``flash_attn`` is a namespace package without FlashAttention 2's functions."""
    cute = root / "flash_attn" / "cute"
    cute.mkdir(parents=True)
    (cute / "__init__.py").write_text("def flash_attn_varlen_func(*args, **kwargs):\n    raise NotImplementedError\n")
    return root


def test_f5_tts_loads_beside_flash_attn_4(tmp_path: Path) -> None:
    """f5-tts imports FlashAttention 2's functions whenever a ``flash_attn`` is found; with only
    flash-attn-4's namespace installed that import would fail and no model could load."""
    site = _flash_attn_4_layout(tmp_path)
    code = (
        "import importlib.util\n"
        "assert importlib.util.find_spec('flash_attn') is not None\n"
        "from ishowttsd.engine.upstream import DiT\n"
        "import f5_tts.model.modules as m\n"
        "print('loaded', DiT.__name__, hasattr(m, 'flash_attn_func'))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded DiT False" in proc.stdout, proc.stdout
