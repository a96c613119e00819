"""Start the real `ishowttsd --dev` process, with a real NOTIFY_SOCKET, for tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


class NotifyListener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify.sock")
        if os.path.exists(self.path):  # left by an earlier daemon run in the same workdir
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        return [line for _, msg in list(self.messages) for line in msg.splitlines()]

    def wait_for(self, predicate: Any, timeout: float, after: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, msg in list(self.messages)[after:]:
                if predicate(msg):
                    return msg
            time.sleep(0.05)
        raise AssertionError(f"no matching notify message in {timeout}s; got {self.lines()}")

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


class Daemon:
    def __init__(self, workdir: Path, port: int, config: Path | None, notify: bool, watchdog_usec: int | None,
                 extra_args: list[str]) -> None:
        self.workdir = workdir
        self.port = port
        self.notify = NotifyListener(workdir) if notify else None
        env = base_env()
        if self.notify is not None:
            env["NOTIFY_SOCKET"] = self.notify.path
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        args = [sys.executable, "-m", "ishowttsd", "--dev", "--port", str(port), *extra_args]
        if config is not None:
            args += ["--config", str(config)]
        self.stdout_lines: list[str] = []
        self.proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout_lines.append(line.rstrip("\n"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_socket(self) -> Path:
        return self.workdir / ".dev" / "run" / "admin.sock"

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in list(self.stdout_lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def wait_event(self, event: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events():
                if e.get("event") == event and all(e.get(k) == v for k, v in fields.items()):
                    return e
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} log event; last lines:\n" + "\n".join(self.stdout_lines[-30:]))

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n" + "\n".join(self.stdout_lines[-40:]))
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise AssertionError("daemon not ready in time:\n" + "\n".join(self.stdout_lines[-40:]))

    def admin(self, *args: str, user: str | None = None, timeout: float = 120.0,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [str(BIN / "ishowtts-admin"), "--socket", str(self.admin_socket), *args]
        run_env = env or base_env()
        if user is not None:
            # The venv's interpreter lives under /root here; the admin CLI needs only the
            # standard library, so another user runs it with the system Python.
            cmd = ["setpriv", f"--reuid={user}", f"--regid={user if user != 'nobody' else 'nogroup'}",
                   "--clear-groups", "/usr/bin/python3", "-m", "ishowttsd.admin", "--socket",
                   str(self.admin_socket), *args]
            run_env = {**run_env, "PYTHONPATH": str(REPO)}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=run_env)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        if self.notify is not None:
            self.notify.close()
        return self.proc.returncode


@contextmanager
def running_daemon(workdir: Path, *, config: str | None = None, notify: bool = True,
                   watchdog_usec: int | None = None, extra_args: list[str] | None = None,
                   wait: bool = True, port: int | None = None) -> Iterator[Daemon]:
    cfg_path = None
    if config is not None:
        cfg_path = workdir / "test.toml"
        cfg_path.write_text(config)
    d = Daemon(workdir, port or free_port(), cfg_path, notify, watchdog_usec, extra_args or [])
    try:
        if wait:
            d.wait_ready()
        yield d
    finally:
        d.stop()


def post_json(url: str, body: Any, timeout: float = 60.0,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})},
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
