"""The systemd units in systemd/ and the version in debian/changelog.

`systemd-analyze verify` checks that every ExecStart= binary exists, and /usr/bin/ishowttsd
does not exist on a build host.  So the units are verified inside a throwaway root (--root):
the host's own units (for the targets ours name) plus stand-in executables at the paths the
.deb installs.  That keeps the check strict without touching the host.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (Jetson's Ubuntu 22.04)
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO / "systemd"
HOST_UNIT_DIR = Path("/lib/systemd/system")
# What the .deb puts on PATH; the units name these.
BINARIES = ("usr/bin/ishowttsd", "usr/bin/ishowtts-admin")
# Unit names as systemd loads them: the template needs an instance to be verified.
UNITS = ("ishowttsd.service", "ishowttsd@gpu0.service", "ishowtts-selfcheck.service", "ishowtts-selfcheck.timer")
# `systemd-analyze security` gave 1.7 when the units were written; fail if hardening slips.
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or not HOST_UNIT_DIR.is_dir(),
    reason="needs systemd-analyze and the host's units in /lib/systemd/system",
)


def unit_files() -> list[Path]:
    return sorted(p for p in SYSTEMD_DIR.iterdir() if p.suffix in (".service", ".timer"))


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("unitroot")
    shutil.copytree(HOST_UNIT_DIR, root / "lib/systemd/system", symlinks=True)
    for rel in BINARIES:
        exe = root / rel
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    for unit in unit_files():
        shutil.copy(unit, root / "lib/systemd/system" / unit.name)
    yield root


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args, f"--root={root}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_unit_file_is_verified() -> None:
    # A new unit in systemd/ must be added to UNITS, or it would go unverified.
    names = {p.name for p in unit_files()}
    assert names == {u.replace("@gpu0", "@") for u in UNITS}


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_is_silent(fake_root: Path, unit: str) -> None:
    res = analyze(fake_root, "verify", unit)
    assert res.returncode == 0, res.stderr
    assert res.stdout + res.stderr == ""


@needs_analyze
def test_verify_would_catch_a_mistake(fake_root: Path, tmp_path: Path) -> None:
    # Proves the fake root doesn't make verify vacuous: a typo and a missing binary are reported.
    root = tmp_path / "root"
    shutil.copytree(fake_root, root, symlinks=True)
    unit = root / "lib/systemd/system/ishowttsd.service"
    text = unit.read_text().replace("Type=notify", "Typ=notify")
    unit.write_text(text.replace("/usr/bin/ishowtts-admin reload", "/usr/bin/nonexistent reload"))
    res = analyze(root, "verify", "ishowttsd.service")
    out = res.stdout + res.stderr
    assert "Typ" in out
    assert "/usr/bin/nonexistent" in out


@needs_analyze
def test_security_exposure(fake_root: Path) -> None:
    res = analyze(fake_root, "security", "--offline=true", "ishowttsd.service")
    if res.returncode != 0 and "offline" in res.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    match = re.search(r"Overall exposure level for ishowttsd\.service: (\d+\.\d+)", res.stdout)
    assert match, res.stdout + res.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, res.stdout


def directives(path: Path) -> list[str]:
    """Non-comment, non-blank lines: what systemd actually reads."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith(("#", ";"))]


def test_service_contract() -> None:
    lines = directives(SYSTEMD_DIR / "ishowttsd.service")
    for required in (
        "Type=notify",
        "NotifyAccess=main",
        "ExecStartPre=-+/usr/bin/ishowttsd --apply-clocks --config /etc/ishowtts/ishowttsd.toml",
        "ExecStart=/usr/bin/ishowttsd --config /etc/ishowtts/ishowttsd.toml",
        "ExecReload=/usr/bin/ishowtts-admin reload",
        "ExecStopPost=-+/usr/bin/ishowttsd --restore-clocks --config /etc/ishowtts/ishowttsd.toml",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "User=ishowtts",
        "Group=ishowtts",
        "SupplementaryGroups=video render",
        "RuntimeDirectory=ishowtts",
        "StateDirectory=ishowtts",
        "CacheDirectory=ishowtts",
        "LogsDirectory=ishowtts",
        "UMask=0027",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "SystemCallFilter=@system-service",
        "DeviceAllow=char-nvidia* rw",
        "DeviceAllow=/dev/nvmap rw",
    ):
        assert required in lines, required
    keys = {line.split("=", 1)[0] for line in lines}
    assert {"WatchdogSec", "TimeoutStartSec", "RestrictAddressFamilies"} <= keys
    # CUDA's JIT, Triton and torch.compile need W+X memory; the unit explains the absence.
    assert "MemoryDenyWriteExecute" not in keys
    assert "PrivateDevices" not in keys


def test_template_matches_service_except_instance_lines() -> None:
    # The template is the service with per-instance paths; anything else drifting is a bug.
    back = [
        (", instance %i", ""),
        ("--socket /run/ishowtts-%i/admin.sock ", ""),
        ("/etc/ishowtts/%i/", "/etc/ishowtts/"),
        ("ishowtts-%i", "ishowtts"),
    ]
    template = []
    for line in directives(SYSTEMD_DIR / "ishowttsd@.service"):
        for old, new in back:
            line = line.replace(old, new)
        template.append(line)
    assert template == directives(SYSTEMD_DIR / "ishowttsd.service")


def test_selfcheck_units() -> None:
    service = directives(SYSTEMD_DIR / "ishowtts-selfcheck.service")
    assert "Type=oneshot" in service
    assert "ExecStart=/usr/bin/ishowtts-admin self-check" in service
    assert "ConditionPathExists=/run/ishowtts/admin.sock" in service
    # A oneshot started by a timer has nothing to install; an [Install] section would make
    # dh_installsystemd enable it and run it at package install.
    assert "[Install]" not in service
    timer = directives(SYSTEMD_DIR / "ishowtts-selfcheck.timer")
    for required in ("OnCalendar=weekly", "Persistent=true", "RandomizedDelaySec=1h", "WantedBy=timers.target"):
        assert required in timer, required


def changelog_version() -> str:
    first = (REPO / "debian/changelog").read_text().splitlines()[0]
    match = re.match(r"^ishowtts \(([^)\s]+)\) ", first)
    assert match, f"debian/changelog first line not understood: {first!r}"
    return match.group(1)


def upstream_part(debian_version: str) -> str:
    """0.1.0 from 0.1.0, 1:0.1.0-2 or 0.1.0-1~bpo12+1 (epoch and Debian revision stripped)."""
    version = debian_version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


def test_upstream_part() -> None:
    assert upstream_part("0.1.0") == "0.1.0"
    assert upstream_part("1:0.1.0-2") == "0.1.0"
    assert upstream_part("0.1.0-1~bpo12+1") == "0.1.0"


def test_changelog_version_equals_pyproject() -> None:
    with (REPO / "pyproject.toml").open("rb") as f:
        pyproject_version = tomllib.load(f)["project"]["version"]
    assert upstream_part(changelog_version()) == pyproject_version
