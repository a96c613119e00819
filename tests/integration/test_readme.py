"""Every `sh` and `python` block in README.md works when pasted (against a dev daemon)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import soundfile as sf
from daemon_harness import REPO, base_env, free_port, running_daemon

BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer((REPO / "README.md").read_text())]


def test_readme_has_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    assert "make run" in text and "make test" in text
    assert (REPO / ".ci" / "run").read_text().count("make test") == 1


def test_readme_blocks_work_as_written(tmp_path: Path) -> None:
    # A stand-in for the repository root: the README's paths are relative to it.
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    (tmp_path / "etc").symlink_to(REPO / "etc")
    port = free_port()
    found = blocks()
    assert len(found) >= 6
    with running_daemon(tmp_path, port=port) as d:
        for lang, code in found:
            code = code.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
            cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "sh" else [sys.executable, "-c", code]
            r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=base_env())
            assert r.returncode == 0, f"README block failed:\n{code}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
        assert d.proc.poll() is None
    for name in ("hello.wav", "thanks.wav", "gg.wav"):
        audio, sr = sf.read(tmp_path / name)
        assert sr == 24000 and len(audio) > 0, name
    assert (tmp_path / "speech.pcm").stat().st_size > 0
