"""Issue 4: `ishowtts-admin` against the real daemon over its Unix socket."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from daemon_harness import post_json, running_daemon


def status_json(d) -> dict:  # type: ignore[no-untyped-def]
    r = d.admin("status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def last_synthesis_nfe(d) -> int:  # type: ignore[no-untyped-def]
    before = len([e for e in d.events() if e.get("event") == "synthesis done"])
    status, _, _ = post_json(d.url + "/v1/audio/speech", {"input": "Checking the steps.", "response_format": "wav"})
    assert status == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done = [e for e in d.events() if e.get("event") == "synthesis done"]
        if len(done) > before:
            return int(done[-1]["nfe"])
        time.sleep(0.05)
    raise AssertionError("no synthesis log line")


def test_set_nfe_survives_restart_rollback_and_history(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as d:
        st = status_json(d)
        assert st["nfe"] == 7 and st["settings_version"] == 0 and st["untrained"] is True
        assert st["settings"]["nfe"]["source"] == "default"
        r = d.admin("set-nfe", "6")
        assert r.returncode == 0, r.stderr
        assert "7 -> 6" in r.stdout and "EPSS" in r.stdout
        st = status_json(d)
        assert st["nfe"] == 6 and st["settings_version"] == 1
        assert st["settings"]["nfe"]["source"] == "runtime version 1"
        assert last_synthesis_nfe(d) == 6
        audit = [e for e in d.events() if e.get("logger") == "ishowttsd.audit"]
        assert audit and audit[-1]["command"] == "/v1/nfe" and audit[-1]["uid"] == os.getuid()
        assert audit[-1]["arguments"] == {"nfe": 6, "validate": False} and audit[-1]["result"] == "ok"
    with running_daemon(tmp_path) as d:
        assert status_json(d)["nfe"] == 6, "the setting survives a restart"
        r = d.admin("rollback")
        assert r.returncode == 0, r.stderr
        assert status_json(d)["nfe"] == 7
        assert last_synthesis_nfe(d) == 7
        r = d.admin("history")
        assert r.returncode == 0
        lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
        assert sum(1 for ln in lines if ln.lstrip().split()[0] in {"0", "1", "2"}) >= 2, r.stdout
        versions = json.loads(subprocess.run(
            ["curl", "-sS", "--unix-socket", str(d.admin_socket), "http://localhost/v1/history"],
            capture_output=True, text=True, check=True).stdout)["versions"]
        assert [v["version"] for v in versions][-2:] == [1, 2]
        assert versions[-1]["changes"]["nfe"] == {"old": 6, "new": 7}


@pytest.mark.parametrize(("arg", "codes"), [("0", {5}), ("65", {5}), ("six", {2}), ("-1", {2, 5})])
def test_bad_nfe_refused_and_unchanged(tmp_path: Path, arg: str, codes: set[int]) -> None:
    with running_daemon(tmp_path) as d:
        r = d.admin("set-nfe", arg)
        assert r.returncode in codes, (r.returncode, r.stderr)
        assert r.stderr.strip(), "a clear message"
        assert status_json(d)["nfe"] == 7


def test_rollback_with_nothing_to_roll_back_exits_5(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as d:
        r = d.admin("rollback")
        assert r.returncode == 5 and "nothing" in r.stderr.lower()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to run as nobody")
def test_user_outside_the_group_gets_exit_3() -> None:
    # pytest's tmp_path is private to root; nobody must reach the socket's directory so that
    # the socket's own mode (0660) is what refuses it.
    workdir = Path(tempfile.mkdtemp(prefix="ishowtts-nobody-"))
    workdir.chmod(0o755)
    with running_daemon(workdir) as d:
        for p in (workdir / ".dev", workdir / ".dev" / "run"):
            p.chmod(0o755)
        assert oct(d.admin_socket.stat().st_mode & 0o777) == "0o660"
        r = d.admin("set-nfe", "6", user="nobody")
        assert r.returncode == 3, (r.returncode, r.stderr)
        assert "permission" in r.stderr.lower()
        assert status_json(d)["nfe"] == 7


def test_daemon_not_reachable_exits_4_with_hint(tmp_path: Path) -> None:
    from daemon_harness import BIN, base_env

    r = subprocess.run([str(BIN / "ishowtts-admin"), "--socket", str(tmp_path / "none.sock"), "status"],
                       capture_output=True, text=True, env=base_env(), timeout=30)
    assert r.returncode == 4 and "none.sock" in r.stderr and "systemctl status ishowttsd" in r.stderr


def test_truncated_settings_recovered_from_last_good_copy(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as d:
        assert d.admin("set-nfe", "6").returncode == 0
        assert d.admin("set-nfe", "5").returncode == 0
    settings = tmp_path / ".dev" / "state" / "settings.json"
    data = settings.read_bytes()
    settings.write_bytes(data[: len(data) // 2])
    with running_daemon(tmp_path) as d:
        st = status_json(d)
        assert st["nfe"] == 6, "the last good copy (before the last write) is used"
        assert any(e.get("level") == "error" and "settings" in e.get("event", "") for e in d.events())


def test_curl_over_the_socket(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as d:
        out = subprocess.run(["curl", "-sS", "--unix-socket", str(d.admin_socket), "http://localhost/v1/status"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        st = json.loads(out)
        assert st["nfe"] == 7 and st["model"]["architecture"] == "tiny"
        out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "--unix-socket", str(d.admin_socket),
                              "-X", "POST", "-d", "{bad", "http://localhost/v1/nfe"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        body, code = out.rsplit("\n", 1)
        assert code == "400" and json.loads(body)["error"]["code"] == "invalid_json"
        out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "--unix-socket", str(d.admin_socket),
                              "http://localhost/v1/frobnicate"], capture_output=True, text=True, check=True).stdout
        body, code = out.rsplit("\n", 1)
        assert code == "404" and json.loads(body)["error"]["code"] == "unknown_command"


def test_status_human_output(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as d:
        r = d.admin("status")
        assert r.returncode == 0
        for needle in ("tiny", "untrained", "nfe", "7", "cpu", "default"):
            assert needle in r.stdout, needle
        # On the CPU the fast path is off (compile and CUDA graphs are GPU-only).
        assert any(line.startswith("fast path") and line.endswith("off (eager)") for line in r.stdout.splitlines())


def test_reload_with_broken_config_keeps_serving(tmp_path: Path) -> None:
    with running_daemon(tmp_path, config="[limits]\nqueue_size = 4\n") as d:
        (tmp_path / "test.toml").write_text("[limits]\nqueue_sizes = 4\n")
        r = d.admin("reload")
        assert r.returncode != 0 and "queue_sizes" in r.stderr
        assert post_json(d.url + "/v1/audio/speech", {"input": "still serving", "response_format": "wav"})[0] == 200


def make_tiny_checkpoint(path: Path, seed: int) -> None:
    """A real checkpoint file, laid out as upstream saves them (EMA weights)."""
    code = f"""
import torch
from ishowttsd.engine.spec import ModelSpec
from ishowttsd.engine.f5 import Engine
engine = Engine.load(ModelSpec(architecture="tiny", weights="untrained", device="cpu", precision="fp32", seed={seed}),
                     vocoder="untrained")
state = {{"ema_model.transformer." + k: v for k, v in engine.dit.state_dict().items()}}
torch.save({{"ema_model_state_dict": state}}, "{path}")
"""
    from daemon_harness import base_env

    subprocess.run([os.sys.executable, "-c", code], check=True, env=base_env(), timeout=120)  # type: ignore[attr-defined]


def test_reload_with_changed_checkpoint_swaps_without_failed_requests(tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.pt"
    make_tiny_checkpoint(ckpt, seed=1)
    config = f'[model]\narchitecture = "tiny"\nweights = "{ckpt}"\ndevice = "cpu"\nvocoder = "untrained"\n'
    with running_daemon(tmp_path, config=config) as d:
        statuses: list[int] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                statuses.append(post_json(d.url + "/v1/audio/speech",
                                          {"input": "Keep talking.", "response_format": "wav", "seed": 1})[0])

        worker = threading.Thread(target=client)
        worker.start()
        time.sleep(0.5)
        make_tiny_checkpoint(ckpt, seed=2)
        r = d.admin("reload")
        time.sleep(0.5)
        stop.set()
        worker.join(60)
        assert r.returncode == 0, r.stderr
        reloaded = d.wait_event("reloaded", trigger="admin")
        assert reloaded["model_reloaded"] is True
        assert len(statuses) >= 3 and set(statuses) == {200}, statuses


def test_second_daemon_on_a_live_socket_refuses_to_start(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as d, running_daemon(tmp_path, wait=False, notify=False) as second:
        assert second.proc.wait(120) != 0
        assert any("another daemon is serving" in str(e.get("error", "")) for e in second.events())
        assert status_json(d)["ready"] is True, "the first daemon keeps serving"


def test_admin_body_limit_and_bad_values(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as d:
        big = '{"nfe": 6, "pad": "' + "x" * 70_000 + '"}'
        out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "--unix-socket", str(d.admin_socket),
                              "-X", "POST", "--data-binary", "@-", "http://localhost/v1/nfe"], input=big,
                             capture_output=True, text=True, check=True, timeout=30).stdout
        body, code = out.rsplit("\n", 1)
        assert code == "413" and json.loads(body)["error"]["code"] == "body_too_large"
        r = d.admin("rollback", "--to", "9")
        assert r.returncode == 5
        assert status_json(d)["nfe"] == 7
