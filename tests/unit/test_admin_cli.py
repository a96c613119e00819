"""``ishowtts-admin`` run for real, as a subprocess, against a stand-in admin server.

The stand-in is a small aiohttp app on a Unix socket answering the admin routes with canned
JSON, so these tests pin the CLI's side of the protocol: exit codes, output, NDJSON progress,
socket precedence and import cost.  End-to-end tests against the real daemon live in
tests/integration.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from aiohttp import web

from ishowttsd.admin.cli import Progress, format_status
from ishowttsd.admin.client import AdminClient, PermissionDenied

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
CONSOLE_SCRIPT = Path(sys.executable).parent / "ishowtts-admin"

STATUS: dict[str, Any] = {
    "version": "0.1.0",
    "uptime_s": 7384,
    "untrained": True,
    "model": {"architecture": "tiny", "weights": "untrained", "precision": "fp32", "device": "cpu",
              "gpu_name": None, "gpu_memory_mb": None},
    "nfe": 6,
    "settings_version": 3,
    "settings": {"nfe": {"value": 6, "source": "runtime version 3"}},
    "voices": [{"id": "default", "language": "en"}],
    "queue": {"depth": 0, "size": 16},
    "requests": {"total": 12, "by_status": {"ok": 11, "error": 1}},
    "clocks": {"provider": "none", "power_mode": None, "gpu_freq_hz": None, "locked": None},
    "selfcheck": {"status": "pass", "time": "2025-06-01T03:00:00Z"},
    "versions": {"ishowttsd": "0.1.0", "torch": "2.4.1", "cuda": None, "f5_tts": "1.1.22"},
}

RECORD: dict[str, Any] = {
    "time": "2025-06-01T03:00:00Z",
    "context": {"nfe": 7, "model": "tiny", "precision": "fp32", "device": "cpu"},
    "stats": {"rtf_mean": 0.2, "rtf_p95": 0.25, "rtf_max": 0.26, "rtf_cv": 0.05, "ttfa_mean": 0.4},
    "verdict": {"status": "pass", "reasons": []},
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def ndjson(request: web.Request, events: list[dict[str, Any]]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    for event in events:
        await resp.write((json.dumps(event) + "\n").encode())
        await asyncio.sleep(0.01)
    await resp.write_eof()
    return resp


def progress(n: int, total: int, text: str) -> dict[str, Any]:
    return {"event": "progress", "done": n, "total": total, "stage": "measure", "text": text}


class StandIn:
    """An admin server in a thread: routes answer from ``self.routes``; requests are recorded."""

    def __init__(self, sock: Path, name: str = "stand-in") -> None:
        self.sock, self.name = sock, name
        self.requests: list[tuple[str, str, Any]] = []
        self.routes: dict[tuple[str, str], Handler] = {}
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def answer(self, method: str, path: str, body: Any, status: int = 200) -> None:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.json_response(body, status=status)

        self.routes[(method, path)] = handler

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path_qs, body))
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return error(404, "not_found", f"no route {request.method} {request.path}")
        return await handler(request)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.sock)).start()

    def start(self) -> StandIn:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.answer("GET", "/v1/status", {**STATUS, "version": self.name})
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes: pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="isa-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(sockdir: Path) -> Iterator[StandIn]:
    s = StandIn(sockdir / "admin.sock").start()
    yield s
    s.stop()


def cli(*args: str, sock: Path | None = None, env: dict[str, str] | None = None, cwd: Path | None = None,
        script: bool = False, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run ishowtts-admin (``python -m ishowttsd.admin``, or the console script)."""
    base = [str(CONSOLE_SCRIPT)] if script else [PYTHON, "-m", "ishowttsd.admin"]
    argv = [*base, *(["--socket", str(sock)] if sock else []), *args]
    full_env = {k: v for k, v in os.environ.items() if k != "ISHOWTTS_ADMIN_SOCKET"}
    full_env.update(env or {})
    return subprocess.run(argv, capture_output=True, text=True, env=full_env, cwd=cwd or ROOT, timeout=60, **kw)


# --------------------------------------------------------------------------- exit codes


def test_usage_errors_exit_2(server: StandIn) -> None:
    r = cli("set-nfe", "six", sock=server.sock)
    assert r.returncode == 2 and "invalid int value: 'six'" in r.stderr
    assert cli(sock=server.sock).returncode == 2
    assert cli("frobnicate", sock=server.sock).returncode == 2
    assert not server.requests  # nothing reached the daemon


def test_403_exits_3(server: StandIn) -> None:
    server.answer("POST", "/v1/nfe", {"error": {"code": "forbidden", "message": "uid 1000 may not change"}}, 403)
    r = cli("set-nfe", "6", sock=server.sock)
    assert r.returncode == 3, r.stderr
    assert "permission denied" in r.stderr and "uid 1000 may not change" in r.stderr
    assert r.stdout == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the CLI as another user")
def test_socket_permission_denied_exits_3(server: StandIn, sockdir: Path) -> None:
    os.chmod(sockdir, 0o755)
    os.chmod(server.sock, 0o600)  # root's socket; nobody may not connect
    nobody = 65534

    def drop() -> None:
        os.setgid(nobody)
        os.setuid(nobody)

    try:
        r = cli("status", sock=server.sock, preexec_fn=drop, env={"HOME": "/"})
    except PermissionError as exc:
        pytest.skip(f"nobody cannot run this venv's python: {exc}")
    if "ModuleNotFoundError" in r.stderr or "Permission denied: '" in r.stderr:
        pytest.skip(f"nobody cannot read the source tree: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 3, r.stderr
    assert "permission denied" in r.stderr and str(server.sock) in r.stderr


@pytest.mark.parametrize("err", [errno.EACCES, errno.EPERM])
def test_connect_permission_errors_map_to_exit_3(monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    # Root connects to any socket, so the subprocess test above may skip: pin the mapping here.
    def denied(self: socket.socket, address: Any) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(socket.socket, "connect", denied)
    with pytest.raises(PermissionDenied) as info:
        AdminClient("/run/x/admin.sock").status()
    assert info.value.exit_code == 3 and "/run/x/admin.sock" in info.value.message


def test_missing_socket_exits_4_naming_path_and_hint(sockdir: Path) -> None:
    missing = sockdir / "nope.sock"
    r = cli("status", sock=missing)
    assert r.returncode == 4
    assert str(missing) in r.stderr and "systemctl status ishowttsd" in r.stderr


def test_refused_connection_exits_4(sockdir: Path) -> None:
    # A socket file with no listener behind it, as a crashed daemon leaves.
    path = sockdir / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    try:
        r = cli("status", sock=path)
    finally:
        s.close()
    assert r.returncode == 4
    assert "nothing is listening" in r.stderr and str(path) in r.stderr


@pytest.mark.parametrize(
    ("args", "route", "status", "code", "message"),
    [
        (["rollback"], ("POST", "/v1/rollback"), 409, "nothing_to_rollback", "nothing to roll back"),
        (["set-nfe", "65"], ("POST", "/v1/nfe"), 400, "invalid_value", "nfe must be from 1 to 64, not 65"),
        (["reload"], ("POST", "/v1/reload"), 422, "reload_failed",
         "/etc/ishowtts/ishowttsd.toml: [model] precision: 'fp8' is not one of auto, fp16, bf16, fp32"),
    ],
)
def test_refusals_exit_5_with_the_daemons_message(
    server: StandIn, args: list[str], route: tuple[str, str], status: int, code: str, message: str
) -> None:
    server.answer(*route, {"error": {"code": code, "message": message}}, status)
    r = cli(*args, sock=server.sock)
    assert r.returncode == 5
    assert message in r.stderr and r.stdout == ""


def test_5xx_is_reported_as_a_daemon_bug(server: StandIn) -> None:
    server.answer("GET", "/v1/status", {"error": {"code": "internal", "message": "KeyError: 'x'"}}, 500)
    r = cli("status", sock=server.sock)
    assert r.returncode == 5
    assert "HTTP 500" in r.stderr and "bug in ishowttsd" in r.stderr and "KeyError" in r.stderr


def test_non_json_answer_is_a_daemon_bug(server: StandIn) -> None:
    async def garbage(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>oops</html>")

    server.routes[("GET", "/v1/status")] = garbage
    r = cli("status", sock=server.sock)
    assert r.returncode == 5 and "not JSON" in r.stderr


# --------------------------------------------------------------------------- socket precedence


def test_socket_flag_beats_env_beats_default(sockdir: Path) -> None:
    a = StandIn(sockdir / "a.sock", "from-env").start()
    b = StandIn(sockdir / "b.sock", "from-flag").start()
    try:
        env = {"ISHOWTTS_ADMIN_SOCKET": str(a.sock)}
        by_env = cli("status", "--json", env=env)
        assert json.loads(by_env.stdout)["version"] == "from-env"
        by_flag = cli("status", "--json", sock=b.sock, env=env)
        assert json.loads(by_flag.stdout)["version"] == "from-flag"
    finally:
        a.stop()
        b.stop()
    if Path("/run/ishowtts/admin.sock").exists():
        pytest.skip("a real daemon's socket exists here; not probing the default")
    by_default = cli("status")
    assert by_default.returncode == 4 and "/run/ishowtts/admin.sock" in by_default.stderr


# --------------------------------------------------------------------------- commands


def test_status_human_and_json(server: StandIn) -> None:
    human = cli("status", sock=server.sock, script=True)
    assert human.returncode == 0, human.stderr
    lines = dict(line.split(None, 1) for line in human.stdout.splitlines())
    assert lines["nfe"] == "6 (runtime version 3)"
    assert lines["settings"] == "version 3"
    assert "untrained" in lines["weights"] and "noise" in lines["weights"]
    assert lines["daemon"] == "ishowttsd stand-in, up 2h 03m"
    assert lines["self-check"] == "pass at 2025-06-01T03:00:00Z"
    # Aligned: every value starts in the same column.
    starts = {len(line) - len(line[len(line.split(None, 1)[0]):].lstrip()) for line in human.stdout.splitlines()}
    assert len(starts) == 1
    machine = cli("status", "--json", sock=server.sock)
    data = json.loads(machine.stdout)
    assert data["nfe"] == 6 and data["settings_version"] == 3


@pytest.mark.parametrize(
    ("fast", "shown"),
    [
        ({"compiled": True, "cuda_graphs": True, "attention": "flash"}, "compile + CUDA graphs, attention flash"),
        (
            {"compiled": True, "cuda_graphs": True, "attention": "flash", "qkv_epilogue": True},
            "compile + CUDA graphs, attention flash, q/k rotated in the GEMM",
        ),
        ({"compiled": False, "cuda_graphs": True, "attention": "cudnn"}, "CUDA graphs, attention cudnn"),
        ({"compiled": False, "cuda_graphs": False, "attention": ""}, "off (eager)"),
    ],
)
def test_status_shows_the_fast_path_and_its_attention(fast: dict[str, object], shown: str) -> None:
    lines = dict(line.split(None, 1) if not line.startswith("fast path") else ("fast path", line[9:].strip())
                 for line in format_status({"model": {"fast_path": fast}}).splitlines())
    assert lines["fast path"] == shown


def test_status_formatter_tolerates_missing_keys() -> None:
    text = format_status({"version": "0.0.1"})
    assert "ishowttsd 0.0.1" in text and "never run" in text
    assert "NOT READY: loading model" in format_status({"ready": False, "not_ready_reason": "loading model"})


def test_set_nfe_prints_old_new_version_and_epss(server: StandIn) -> None:
    server.answer("POST", "/v1/nfe", {"old": 7, "new": 6, "version": 3, "epss": True})
    r = cli("set-nfe", "6", sock=server.sock)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "nfe: 7 -> 6 (settings version 3)"
    assert "EPSS" in r.stdout
    assert server.requests[-1] == ("POST", "/v1/nfe", {"nfe": 6, "validate": False})


def test_set_nfe_validate_streams_progress_and_exits_1_on_rollback(server: StandIn) -> None:
    async def validate(request: web.Request) -> web.StreamResponse:
        return await ndjson(request, [
            progress(1, 3, "Hello there."),
            progress(2, 3, "How are you?"),
            progress(3, 3, "quality gate"),
            {"event": "result", "ok": False, "rolled_back": True, "old": 7, "version": 4,
             "reasons": ["quality: mean distance 4.20 dB above max_distance 3.0"]},
        ])

    server.routes[("POST", "/v1/nfe")] = validate
    r = cli("set-nfe", "4", "--validate", sock=server.sock)
    assert r.returncode == 1, r.stderr
    assert "[1/3] measure: Hello there." in r.stderr and "[3/3] measure: quality gate" in r.stderr
    assert "validation FAILED" in r.stdout and "4.20 dB" in r.stdout and "rolled back" in r.stdout
    assert server.requests[-1][2] == {"nfe": 4, "validate": True}


def test_rollback_sends_to_and_prints_result(server: StandIn) -> None:
    server.answer("POST", "/v1/rollback", {"version": 5, "restored": {"nfe": 8},
                                           "changes": {"nfe": {"old": 6, "new": 8}}})
    r = cli("rollback", "--to", "2", sock=server.sock)
    assert r.returncode == 0
    assert r.stdout == "rolled back to version 2 as settings version 5: nfe 6 -> 8\n"
    assert server.requests[-1][2] == {"to": 2}
    cli("rollback", sock=server.sock)
    assert server.requests[-1][2] == {"to": None}


def test_history_table(server: StandIn) -> None:
    server.answer("GET", "/v1/history", {"versions": [
        {"version": 0, "time": None, "uid": None, "command": "config file", "changes": {}},
        {"version": 1, "time": "2025-06-01T10:00:00Z", "uid": 0, "command": "set-nfe 6",
         "changes": {"nfe": {"old": 7, "new": 6}}, "validation": {"ok": True}},
        {"version": 2, "time": "2025-06-01T10:05:00Z", "uid": 0, "command": "rollback",
         "changes": {"nfe": {"old": 6, "new": 7}}, "note": "rollback to 0",
         "validation": {"rollback_of": 1, "reasons": ["quality: too far"]}},
    ]})
    r = cli("history", sock=server.sock)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["version", "time", "user", "command", "changes", "note"]
    assert len(lines) == 4
    assert "nfe 7 -> 6" in lines[2] and "validated" in lines[2] and "root(0)" in lines[2]
    assert "rollback to 0" in lines[3] and "automatic rollback of version 1" in lines[3]
    last = cli("history", "--last", "1", "--json", sock=server.sock)
    assert [v["version"] for v in json.loads(last.stdout)] == [2]


def test_history_selfcheck_table_and_plot(server: StandIn, tmp_path: Path) -> None:
    server.answer("GET", "/v1/selfcheck/history", {
        "records": [RECORD, {**RECORD, "time": "2025-06-08T03:00:00Z"}],
        "thresholds": {"max_mean_rtf": 0.25, "max_rtf": 0.3, "max_cv": 0.1, "max_slowdown": 0.1},
    })
    r = cli("history", "--selfcheck", "--last", "5", sock=server.sock)
    assert r.returncode == 0, r.stderr
    assert "2025-06-08T03:00:00Z" in r.stdout and "pass" in r.stdout
    assert server.requests[-1][1] == "/v1/selfcheck/history?last=5"
    png = tmp_path / "trend.png"
    r = cli("history", "--selfcheck", "--plot", str(png), sock=server.sock)
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_self_check_progress_report_and_exit_codes(server: StandIn) -> None:
    verdict: dict[str, Any] = {"status": "pass", "reasons": []}

    async def selfcheck(request: web.Request) -> web.StreamResponse:
        record = {**RECORD, "verdict": verdict}
        return await ndjson(request, [progress(i, 4, f"text {i}") for i in range(1, 5)]
                            + [{"event": "result", "record": record}])

    server.routes[("POST", "/v1/selfcheck")] = selfcheck
    r = cli("self-check", "--max-slowdown", "10%", "--max-mean-rtf", "1e-9", "--compare-nfe", "32",
            sock=server.sock)
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith("[")] == [
        f"[{i}/4] measure: text {i}" for i in range(1, 5)
    ]
    assert server.requests[-1][2] == {"max_slowdown": 0.1, "max_mean_rtf": 1e-9, "compare_nfe": 32}
    assert "pass" in r.stdout.lower()

    verdict.update(status="warn", reasons=["too little history"])
    assert cli("self-check", sock=server.sock).returncode == 0
    verdict.update(status="fail", reasons=["mean RTF 0.200 above max_mean_rtf 1e-09"])
    r = cli("self-check", "--json", sock=server.sock)
    assert r.returncode == 1
    assert json.loads(r.stdout)["verdict"]["status"] == "fail"
    assert "mean RTF 0.200 above max_mean_rtf" in r.stderr


def test_stream_error_event_and_cut_stream(server: StandIn) -> None:
    async def refused(request: web.Request) -> web.StreamResponse:
        return await ndjson(request, [progress(1, 2, "x"), {"event": "error", "error": {
            "code": "busy", "message": "a self-check is already running"}}])

    server.routes[("POST", "/v1/selfcheck")] = refused
    r = cli("self-check", sock=server.sock)
    assert r.returncode == 5 and "already running" in r.stderr

    async def cut(request: web.Request) -> web.StreamResponse:
        return await ndjson(request, [progress(1, 2, "x")])

    server.routes[("POST", "/v1/selfcheck")] = cut
    r = cli("self-check", sock=server.sock)
    assert r.returncode == 4 and "before sending a result" in r.stderr


def test_clocks_human_and_json(server: StandIn) -> None:
    state = {"provider": "jetson", "configured_provider": "auto", "reason": "auto: found",
             "power_mode": 0, "power_mode_name": "MAXN", "expected_power_mode": 0,
             "gpu_devfreq": "/sys/class/devfreq/17000000.ga10b", "gpu_freq_hz": 1300500000,
             "gpu_min_freq_hz": 1300500000, "gpu_max_freq_hz": 1300500000, "gpu_governor": "nvhost_podgov",
             "locked": True, "problems": [], "gpu": None, "l4t_release": "# R35 (release), REVISION: 4.1"}
    server.answer("GET", "/v1/clocks", state)
    r = cli("clocks", sock=server.sock)
    assert r.returncode == 0, r.stderr
    assert "LOCKED" in r.stdout and "MAXN" in r.stdout and "1300" in r.stdout
    # A dict from another daemon version: shown generically rather than failing.
    server.answer("GET", "/v1/clocks", {"provider": "jetson", "locked": False, "gpu_freq_hz": 6e8, "new_key": 1})
    r = cli("clocks", sock=server.sock)
    assert r.returncode == 0 and "UNLOCKED" in r.stdout and "new_key" in r.stdout
    assert json.loads(cli("clocks", "--json", sock=server.sock).stdout)["locked"] is False


def _wav_b64(seconds: float, freq: float) -> str:
    t = np.arange(int(24000 * seconds)) / 24000
    buf = io.BytesIO()
    soundfile.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype("float32"), 24000, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


def test_quality_samples_writes_wavs_spectrograms_and_page(server: StandIn, tmp_path: Path) -> None:
    async def samples(request: web.Request) -> web.StreamResponse:
        pairs = [{"event": "pair", "category": cat, "text": f"A {cat} text.", "distance": 1.5,
                  "candidate_wav_b64": _wav_b64(0.3, 220), "reference_wav_b64": _wav_b64(0.3, 230)}
                 for cat in ("short", "technical")]
        return await ndjson(request, [progress(1, 2, "short"), *pairs,
                                      {"event": "result", "untrained": True, "seed": 1234}])

    server.routes[("POST", "/v1/quality-samples")] = samples
    r = cli("quality-samples", "--nfe", "6", "--against", "7", sock=server.sock, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "quality-samples-nfe6-vs-7"
    names = sorted(p.name for p in out.iterdir())
    wavs = [n for n in names if n.endswith(".wav")]
    assert len(wavs) == 4 and "index.html" in names
    assert sum(n.startswith("01-short-") for n in wavs) == 2 and sum(n.startswith("02-technical-") for n in wavs) == 2
    assert all("nfe" not in n for n in wavs), "names must not say which clip is the candidate"
    assert all(n.replace(".wav", ".png") in names for n in wavs)
    assert "untrained" in r.stderr
    page = (out / "index.html").read_text()
    assert all(n in page for n in wavs) and "A technical text." in page
    assert server.requests[-1][2] == {"nfe": 6, "against": 7}


def _ratings(candidate: dict[str, Any]) -> dict[str, Any]:
    reference = {"naturalness": 5, "clarity": 5, "prosody": 5, "artifacts": False}
    return {"schema": "ishowtts.ratings/1", "candidate_nfe": 6, "reference_nfe": 7,
            "items": [{"id": "short-1", "candidate": candidate, "reference": reference}]}


def test_quality_verdict_accept_reject_and_bad_file(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_ratings({"naturalness": 5, "clarity": 5, "prosody": 4, "artifacts": False})))
    r = cli("quality-verdict", str(good))
    assert r.returncode == 0 and r.stdout.startswith("ACCEPT"), r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_ratings({"naturalness": 3, "clarity": 3, "prosody": 3, "artifacts": True})))
    r = cli("quality-verdict", str(bad))
    assert r.returncode == 1 and r.stdout.startswith("REJECT")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert cli("quality-verdict", str(broken)).returncode == 2
    assert cli("quality-verdict", str(tmp_path / "absent.json")).returncode == 2


# --------------------------------------------------------------------------- rendering and cost


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_redraws_one_line_on_a_terminal() -> None:
    out = FakeTty()
    bar = Progress(out)
    bar.update(progress(1, 4, "The quick brown fox"))
    bar.update(progress(4, 4, "x" * 500))
    bar.finish()
    text = out.getvalue()
    assert "\n" not in text and text.count("\r") == 3
    assert "[######" in text and "1/4 measure: The quick brown fox" in text
    assert "4/4" in text and "…" in text  # the long text is cut to the terminal width


IMPORT_PROBE = """
import runpy, sys, time
sys.argv = ["ishowtts-admin", *sys.argv[1:]]
t0 = time.perf_counter()
try:
    runpy.run_module("ishowttsd.admin", run_name="__main__")
except SystemExit:
    pass
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("aiohttp", "torch", "f5_tts", "numpy", "matplotlib"))
print(repr((heavy, time.perf_counter() - t0)), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["status"], ["set-nfe", "6"]])
def test_cli_imports_nothing_heavy_and_starts_fast(server: StandIn, args: list[str]) -> None:
    server.answer("POST", "/v1/nfe", {"old": 7, "new": 6, "version": 1, "epss": True})
    t0 = time.perf_counter()
    r = subprocess.run([PYTHON, "-c", IMPORT_PROBE, "--socket", str(server.sock), *args],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    wall = time.perf_counter() - t0
    heavy, in_process = eval(r.stderr.strip().splitlines()[-1])
    assert heavy == []
    assert in_process < 0.5 and wall < 1.0, (in_process, wall)
