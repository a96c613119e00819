"""Boot a real systemd in a Debian bookworm container and run commands inside it.

Found to work on a machine like CI's (a VM where PID 1 is not systemd):
  - `debootstrap --variant=minbase` makes the root file system (40-60 s), cached between runs;
  - `systemd-nspawn --register=no --keep-unit -b` boots it (without --keep-unit nspawn fails;
    without --register=no it wants machined);
  - machinectl and `systemd-run --machine` don't work, so commands go in through nsenter into
    the namespaces of the container's PID 1 (the nspawn process's child).
--private-network leaves only loopback: whatever the package does, it can't download.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("ISHOWTTS_TEST_MIRROR", "http://deb.debian.org/debian")
# Enough to boot systemd and satisfy the .deb: python3 (python3.11) and systemd (sysusers) are
# its Depends; curl and logrotate its Recommends, preinstalled so that `apt install ./x.deb`
# has nothing to fetch; adduser because a real Debian always has it.
INCLUDE = ("systemd", "systemd-sysv", "dbus", "python3", "adduser", "curl", "logrotate")
# Outside the repository, kept between runs; a new INCLUDE list makes a new cache entry.
CACHE_DIR = Path(os.environ.get("ISHOWTTS_TEST_CACHE", "/var/cache/ishowtts-test"))
CONTAINER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
NSENTER_NAMESPACES = ("-m", "-u", "-i", "-n", "-p", "-C")


class HarnessError(RuntimeError):
    """The container could not be made, booted or entered (not a failure of the package)."""


def cached_rootfs(log: Path) -> Path:
    """A pristine bookworm minbase root file system; built once, then reused read-only."""
    key = hashlib.sha256(f"{SUITE} minbase {','.join(INCLUDE)} {MIRROR}".encode()).hexdigest()[:12]
    final = CACHE_DIR / f"{SUITE}-minbase-{key}"
    done = final / ".ishowtts-complete"
    if done.exists():
        return final
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # Two test runs at once must not debootstrap into the same place.
    with (CACHE_DIR / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return final
        partial = CACHE_DIR / f".partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(INCLUDE)}",
            SUITE,
            str(partial),
            MIRROR,
        ]
        with log.open("a") as out:
            res = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=900, check=False)
        if res.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise HarnessError(f"debootstrap failed ({res.returncode}); see {log}")
        # Apt's downloaded .debs are 100+ MB the copies per run don't need.
        for deb in (partial / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        (partial / ".ishowtts-complete").write_text(" ".join(cmd) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    return final


class Container:
    """One booted container on a private copy of the cached root file system."""

    def __init__(self, rootfs: Path, name: str, console_log: Path) -> None:
        self.rootfs = rootfs
        self.name = name
        self.console_log = console_log
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.pid1 = 0

    def boot(self, timeout: float = 120.0) -> None:
        # The machine id nspawn would make up is fine; the hostname shows in the journal.
        (self.rootfs / "etc/hostname").write_text(f"{self.name}\n")
        with self.console_log.open("ab") as console:
            self.nspawn = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--register=no",
                    "--keep-unit",
                    "--private-network",
                    "--console=read-only",
                    "-D",
                    str(self.rootfs),
                    "-M",
                    self.name,
                    "-b",
                ],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # setsid: the whole group can be killed in stop()
            )
        deadline = time.monotonic() + timeout
        while not self.pid1:
            if self.nspawn.poll() is not None:
                raise HarnessError(f"systemd-nspawn exited with {self.nspawn.returncode}; see {self.console_log}")
            if time.monotonic() > deadline:
                raise HarnessError(f"no container PID 1 after {timeout:.0f} s; see {self.console_log}")
            self.pid1 = _child_of(self.nspawn.pid)
            time.sleep(0.2)
        # nsenter can race the container's mount namespace set-up; retry until systemd answers.
        while True:
            res = self.run(["systemctl", "is-system-running", "--wait"], timeout=max(1.0, deadline - time.monotonic()))
            state = res.stdout.strip()
            if state in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"container did not boot: {state!r} {res.stderr.strip()}")
            time.sleep(0.5)

    def run(
        self,
        argv: Sequence[str] | str,
        *,
        timeout: float = 120.0,
        check: bool = False,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv (or a shell string) in the container as root with a clean environment.

        The host's environment (pyenv, .venv on PATH) must not leak in, hence `env -i`.
        """
        if isinstance(argv, str):
            argv = ["/bin/sh", "-c", argv]
        clean = {"PATH": CONTAINER_PATH, "HOME": "/root", "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", **(env or {})}
        cmd = [
            "nsenter",
            "-t",
            str(self.pid1),
            *NSENTER_NAMESPACES,
            # -r/-w without a value: the root and cwd of the container's PID 1.  (--wd=DIR would
            # open DIR on the host, before entering the namespaces.)
            "-r",
            "-w",
            "--",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in clean.items()),
            *argv,
        ]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"timed out after {timeout:.0f} s in the container: {shlex.join(argv)}") from exc
        if check and res.returncode != 0:
            raise AssertionError(
                f"`{shlex.join(argv)}` exited {res.returncode} in the container\n"
                f"stdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-3000:]}"
            )
        return res

    def write(self, path: str, text: str) -> None:
        """Write a file inside the container (through its root; the container sees it at once)."""
        host = self.rootfs / path.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_text(text)

    def stop(self, timeout: float = 30.0) -> None:
        """Power the container off; kill it if it doesn't go.  Safe to call twice."""
        if self.nspawn is None or self.nspawn.poll() is not None:
            return
        # SIGTERM to nspawn asks the container's systemd for an orderly poweroff.
        self.nspawn.send_signal(signal.SIGTERM)
        try:
            self.nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.nspawn.pid, signal.SIGKILL)
            self.nspawn.wait(10)


def _child_of(pid: int) -> int:
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children = task.read_text().split()
            if children:
                return int(children[0])
    return 0


@contextlib.contextmanager
def booted(name: str, workdir: Path, log: Path) -> Iterator[Container]:
    """A container booted on a throwaway copy of the cached rootfs; always stopped and removed."""
    pristine = cached_rootfs(log)
    rootfs = workdir / "rootfs"
    # cp -a keeps owners, modes and device nodes; reflinks make it instant where supported.
    subprocess.run(["cp", "-a", "--reflink=auto", str(pristine), str(rootfs)], check=True, timeout=300)
    container = Container(rootfs, name, workdir / "console.log")
    try:
        container.boot()
        yield container
    finally:
        container.stop()
        # nspawn's mounts live in its own mount namespace and die with it; never rmtree into a
        # mount that somehow survived (it could be the host's /proc or /dev).
        mounted = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        if not any(m == str(rootfs) or m.startswith(f"{rootfs}/") for m in mounted):
            shutil.rmtree(rootfs, ignore_errors=True)
