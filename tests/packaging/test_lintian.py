"""lintian on the thin build: the package's contents and maintainer scripts, with no errors.

The thin build (build profile pkg.ishowtts.thin) is the real package without torch and f5-tts:
same control file, units, maintainer scripts, conffile and overrides, in ~35 s, and lintian
reads it in about a minute instead of a quarter of an hour.  Every remaining error has an
override with its reason in debian/ishowtts.lintian-overrides.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("lintian", "dpkg-buildpackage", "dh_virtualenv", "make")

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(1200)]


def test_thin_package_has_no_lintian_errors(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        # Like the end-to-end test: CI runs these as root; by hand, see debian/rules.
        pytest.skip("the packaging tests run as root (make deb writes into debian/ and dist/)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)} (make test-deps installs them)")
    out = tmp_path / "thin"
    build = subprocess.run(
        ["make", "-C", str(REPO), "deb", "DEB_PROFILES=pkg.ishowtts.thin", f"DEB_DIST={out}"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert build.returncode == 0, f"thin build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    (deb,) = out.glob("ishowtts_*.deb")
    # --pedantic shows every tag; only errors fail the test, the rest is printed for the log.
    res = subprocess.run(["lintian", "--pedantic", str(deb)], capture_output=True, text=True, timeout=900)
    tags = [line for line in res.stdout.splitlines() if line[:2] in ("E:", "W:", "I:", "P:", "X:")]
    print("\n".join(tags))
    errors = [line for line in tags if line.startswith("E:")]
    assert not errors, "lintian errors:\n" + "\n".join(errors)
    # lintian itself must have run properly (a crash prints no tags at all).
    assert res.returncode in (0, 1), res.stderr
