"""Issue 2: the real daemon process under a stand-in for systemd's notify socket."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from daemon_harness import base_env, free_port, get, post_json, running_daemon

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")


def test_notify_lifecycle_ready_watchdog_reload_stop(tmp_path: Path) -> None:
    with running_daemon(tmp_path, watchdog_usec=1_000_000) as d:
        n = d.notify
        assert n is not None
        ready = n.wait_for(lambda m: "READY=1" in m, 5)
        lines = n.lines()
        status_before_ready = [ln for ln in lines[: lines.index("READY=1")] if ln.startswith("STATUS=")]
        assert any("loading model" in s for s in status_before_ready), status_before_ready
        assert any("warming up" in s for s in status_before_ready), status_before_ready
        assert any(ln.startswith("EXTEND_TIMEOUT_USEC=") for ln in lines)
        assert "STATUS=ready" in ready
        # Pings at half of WATCHDOG_USEC (0.5 s) while the worker is healthy.
        before = sum(1 for ln in n.lines() if ln == "WATCHDOG=1")
        time.sleep(1.6)
        assert sum(1 for ln in n.lines() if ln == "WATCHDOG=1") - before >= 2

        mark = len(n.messages)
        d.signal(signal.SIGHUP)
        reloading = n.wait_for(lambda m: "RELOADING=1" in m, 10, after=mark)
        assert re.search(r"MONOTONIC_USEC=\d+", reloading)
        n.wait_for(lambda m: "READY=1" in m, 30, after=mark)
        d.wait_event("reloaded", trigger="SIGHUP")
        assert get(d.url + "/readyz")[0] == 200

        mark = len(n.messages)
        d.signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0
        n.wait_for(lambda m: "STOPPING=1" in m, 2, after=mark)
        assert not d.admin_socket.exists(), "the admin socket must be removed at stop"


def test_stdout_is_json_lines_with_required_fields(tmp_path: Path) -> None:
    secret = "the purple walrus sings at midnight"
    with running_daemon(tmp_path) as d:
        status, _, _ = post_json(d.url + "/v1/audio/speech", {"input": secret, "response_format": "wav"})
        assert status == 200
        done = d.wait_event("synthesis done")
    lines = [ln for ln in d.stdout_lines if ln.strip()]
    assert lines
    for line in lines:
        event = json.loads(line)  # every line is JSON
        for key in ("ts", "level", "event", "logger"):
            assert key in event, (key, line)
        assert ISO_UTC.match(event["ts"]), event["ts"]
    assert all(secret not in ln for ln in lines), "text to be spoken must never be logged verbatim"
    assert done["text_len"] == len(secret) and len(done["text_sha256"]) == 16
    assert done["request_id"], "request lines carry request_id"
    for stage in ("queue_wait_s", "text_prep_s", "ode_s", "vocoder_s", "encode_s", "rtf"):
        assert stage in done, stage


def test_runs_silently_without_notify_socket(tmp_path: Path) -> None:
    with running_daemon(tmp_path, notify=False) as d:
        assert get(d.url + "/healthz")[0] == 200
        d.signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0


def test_bad_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[limits]\nqueue_size = -3\n")
    r = subprocess.run([sys.executable, "-m", "ishowttsd", "--dev", "--config", str(cfg), "--port",
                        str(free_port())], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=base_env())
    assert r.returncode == 78
    assert "queue_size" in r.stderr and str(cfg) in r.stderr
    r = subprocess.run([sys.executable, "-m", "ishowttsd", "--check-config", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=30, env=base_env())
    assert r.returncode == 78 and "[limits] queue_size" in r.stderr and "below the minimum" in r.stderr


def test_sighup_with_broken_config_keeps_serving(tmp_path: Path) -> None:
    with running_daemon(tmp_path, config="[limits]\nqueue_size = 4\n") as d:
        assert d.notify is not None
        (tmp_path / "test.toml").write_text("[limits]\nqueue_size = 'many'\n")
        mark = len(d.notify.messages)
        d.signal(signal.SIGHUP)
        failed = d.wait_event("reload failed; the old config keeps serving")
        assert "queue_size" in failed["error"]
        d.notify.wait_for(lambda m: "READY=1" in m, 10, after=mark)
        status, _, body = post_json(d.url + "/v1/audio/speech", {"input": "still here", "response_format": "wav"})
        assert status == 200 and body[:4] == b"RIFF"


def test_missing_model_files_exit_78_with_instructions(tmp_path: Path) -> None:
    cfg = tmp_path / "real.toml"
    cfg.write_text(f'[model]\narchitecture = "F5TTS_v1_Base"\nweights = "{tmp_path}/nope.safetensors"\n')
    r = subprocess.run([sys.executable, "-m", "ishowttsd", "--dev", "--config", str(cfg), "--port",
                        str(free_port())], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=base_env())
    assert r.returncode == 78
    line = json.loads(next(ln for ln in r.stdout.splitlines() if "model files missing" in ln))
    assert "--fetch-model --accept-license" in line["event"]


def test_sigterm_answers_queued_requests_with_503_and_exits_0(tmp_path: Path) -> None:
    long_text = " ".join(["This sentence keeps the worker busy for a little while."] * 30)
    with running_daemon(tmp_path, config="[limits]\nqueue_size = 8\n") as d:
        results: list[int] = []

        def client() -> None:
            try:
                status, _, _ = post_json(d.url + "/v1/audio/speech", {"input": long_text, "response_format": "pcm"})
            except OSError:
                status = -1  # connection refused once the listener closed
            results.append(status)

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        d.signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert d.proc.wait(60) == 0
    assert results and set(results) <= {200, 503, -1}, results
    assert 503 in results, f"queued requests must be answered 503 at stop: {results}"


def test_log_file_sink_reopens_on_sigusr1(tmp_path: Path) -> None:
    log_file = tmp_path / "daemon.jsonl"
    with running_daemon(tmp_path, config=f'[log]\nfile = "{log_file}"\n') as d:
        assert log_file.exists() and json.loads(log_file.read_text().splitlines()[0])["event"]
        rotated = tmp_path / "daemon.jsonl.1"
        log_file.rename(rotated)
        d.signal(signal.SIGUSR1)
        d.wait_event("log file reopened")
        assert log_file.exists()
        assert any(json.loads(ln)["event"] == "log file reopened" for ln in log_file.read_text().splitlines())


def test_watchdog_pings_stop_while_the_worker_is_stuck(tmp_path: Path) -> None:
    # One job that keeps the worker inside a single long chunk (60 s of audio at 64 steps)
    # stands in for a hung GPU: the heartbeat goes stale and the pings must stop.
    config = "[daemon]\nheartbeat_stale_s = 1.0\ndrain_timeout_s = 0.5\n[limits]\nrequest_timeout_s = 600\n"
    with running_daemon(tmp_path, config=config, watchdog_usec=400_000) as d:
        n = d.notify
        assert n is not None
        time.sleep(0.6)
        assert "WATCHDOG=1" in n.lines(), "healthy: pings flow"
        body = {"text": "A long, long stretch of speech.", "fix_duration": 60.0, "nfe_step": 64}
        client = threading.Thread(target=lambda: post_json(d.url + "/api/tts", body, timeout=600), daemon=True)
        client.start()
        stale = d.wait_event("worker heartbeat stale; withholding watchdog ping", timeout=60)
        assert stale["heartbeat_age_s"] >= 1.0
        mark = len(n.messages)
        time.sleep(1.0)
        assert all("WATCHDOG=1" not in msg for _, msg in n.messages[mark:]), "no ping while the worker is stuck"


def test_event_loop_is_uvloop_unless_configured_otherwise(tmp_path: Path) -> None:
    """``[http] event_loop``: the daemon runs on uvloop by default and on asyncio's own loop when
    asked (the ready line names the loop it found running), streams and answers on either, and a
    reload that changes it says it waits for a restart."""
    for loop_name, config in (("uvloop", None), ("asyncio", '[http]\nevent_loop = "asyncio"\n')):
        work = tmp_path / loop_name
        work.mkdir()
        with running_daemon(work, config=config) as d:
            assert d.wait_event("ready")["event_loop"] == loop_name
            status, headers, body = post_json(d.url + "/v1/audio/speech", {
                "input": "Streaming on this loop.", "response_format": "pcm", "stream": True})
            assert status == 200 and headers.get("Transfer-Encoding") == "chunked" and len(body) > 4800
            if config is not None:
                (work / "test.toml").write_text('[http]\nevent_loop = "uvloop"\n')
                d.signal(signal.SIGHUP)
                assert d.wait_event("event_loop changes take effect at restart")["event_loop"] == "asyncio"
