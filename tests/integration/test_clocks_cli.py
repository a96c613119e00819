"""The real `python -m ishowttsd --apply-clocks / --restore-clocks` processes, as the unit runs them.

The emulated nvpmodel and jetson_clocks (tests/fakes/jetson) are put first on the child's
PATH, which is how the real tools are found; the config points [clocks] at a fake sysfs tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes" / "jetson"))
from fakejetson import BIN, FakeJetson

REPO = Path(__file__).resolve().parents[2]
# The interpreter running the tests is the project's venv one (.venv/bin/python here and in CI).
PYTHON = sys.executable


def write_config(path: Path, values: dict[str, Any]) -> Path:
    lines = ["[clocks]"]
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f'{key} = "{value}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def ishowttsd(
    action: str, config: Path, env: dict[str, str], *, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, PYTHON, "-m", "ishowttsd", action, "--config", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def fake(tmp_path: Path) -> FakeJetson:
    return FakeJetson.create(tmp_path / "jetson")


def test_apply_locks_and_verifies(fake: FakeJetson, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "ishowttsd.toml", fake.clocks_values())
    proc = ishowttsd("--apply-clocks", cfg, fake.env())
    assert proc.returncode == 0, proc.stderr
    assert "ishowttsd --apply-clocks: clocks locked: power mode 0 (MAXN), GPU 1300.5 MHz" in proc.stderr
    assert fake.argvs() == [["nvpmodel", "-m", "0"], ["jetson_clocks"], ["nvpmodel", "-q"]]
    # Found on PATH and run as root, as the unit's ExecStartPre=+ runs them.  (A pyenv shim
    # may prepend its own folders to the PATH the fake sees, so only membership is checked.)
    assert all(c["euid"] == 0 and str(BIN) in c["path"].split(os.pathsep) for c in fake.calls())
    assert fake.gpu()["min_freq"] == fake.gpu()["max_freq"] == fake.gpu()["cur_freq"] == 1300500000


@pytest.mark.parametrize("required", [False, True])
def test_a_failing_tool_exits_non_zero(fake: FakeJetson, tmp_path: Path, required: bool) -> None:
    fake.mark("fail", "jetson_clocks", "lock")
    cfg = write_config(tmp_path / "c.toml", fake.clocks_values(required=required))
    proc = ishowttsd("--apply-clocks", cfg, fake.env())
    assert proc.returncode == 1
    assert "FAILED: `jetson_clocks` exited 1" in proc.stderr
    expected = "will not start ([clocks] required = true)" if required else "continuing unlocked"
    assert expected in proc.stderr


def test_a_hanging_tool_times_out(fake: FakeJetson, tmp_path: Path) -> None:
    fake.mark("hang", "nvpmodel", "-m")
    cfg = write_config(tmp_path / "c.toml", fake.clocks_values(timeout_s=3.0))
    started = time.monotonic()
    proc = ishowttsd("--apply-clocks", cfg, fake.env())
    assert time.monotonic() - started < 30
    assert proc.returncode == 1
    assert "`nvpmodel -m 0` did not finish within 3 s and was killed" in proc.stderr
    assert [a[0] for a in fake.argvs()] == ["nvpmodel"]  # jetson_clocks never ran


def test_missing_tools(fake: FakeJetson, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", fake.clocks_values())
    proc = ishowttsd("--apply-clocks", cfg, fake.env(tools_on_path=False))
    assert proc.returncode == 69
    assert "FAILED: nvpmodel and jetson_clocks not found" in proc.stderr


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder `nobody` can read (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="ishowtts-clocks-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_not_root(shared_dir: Path) -> None:
    fake = FakeJetson.create(shared_dir / "jetson")
    for folder in [fake.root, *fake.root.rglob("*")]:
        if folder.is_dir() and not folder.is_symlink():
            folder.chmod(0o755)
    cfg = write_config(shared_dir / "c.toml", fake.clocks_values())
    cfg.chmod(0o644)
    nobody = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
    proc = ishowttsd("--apply-clocks", cfg, fake.env(), prefix=nobody)
    assert proc.returncode == 77, proc.stderr
    assert "FAILED: changing clocks needs root" in proc.stderr
    assert "continuing unlocked" in proc.stderr
    assert fake.calls() == []  # it did not even try


def test_store_and_restore(fake: FakeJetson, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", fake.clocks_values(restore_on_stop=True))
    applied = ishowttsd("--apply-clocks", cfg, fake.env())
    assert applied.returncode == 0, applied.stderr
    assert f"stored the prior clock state in {fake.store_file}" in applied.stderr
    restored = ishowttsd("--restore-clocks", cfg, fake.env())
    assert restored.returncode == 0, restored.stderr
    assert [a[:2] for a in fake.argvs()] == [
        ["jetson_clocks", "--store"], ["nvpmodel", "-m"], ["jetson_clocks"], ["nvpmodel", "-q"],
        ["jetson_clocks", "--restore"],
    ]
    assert fake.gpu()["min_freq"] == 306000000 and not fake.store_file.exists()


def test_auto_against_the_release_file(fake: FakeJetson, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", fake.clocks_values(provider="auto"))
    assert ishowttsd("--apply-clocks", cfg, fake.env()).returncode == 0
    assert fake.mode() == 0

    fake.release_file.unlink()
    proc = ishowttsd("--apply-clocks", cfg, fake.env())
    assert proc.returncode == 0
    assert "nothing to lock (auto:" in proc.stderr and "not found (not a Jetson)" in proc.stderr
