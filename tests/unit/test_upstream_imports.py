"""The engine's door to f5-tts defers what it never uses (engine/upstream.py)."""

from __future__ import annotations

import subprocess
import sys


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
