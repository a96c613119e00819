"""Issue 5: the self-check through the real daemon and `ishowtts-admin`."""

from __future__ import annotations

import copy
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from daemon_harness import post_json, running_daemon

from ishowttsd.selfcheck import History

# Small and quick on two CPU cores; the CV bound is loosened in tests because other tests
# share the CPU (the CV rule itself is covered by unit tests).
CONFIG = """
[selfcheck]
repeats = 2
warmup = 1
texts_per_category = 1
"""
LOOSE = ("--max-cv", "5", "--max-rtf", "100", "--max-mean-rtf", "100")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with running_daemon(tmp_path_factory.mktemp("selfcheck"), config=CONFIG) as d:
        yield d


def history_path(d) -> Path:  # type: ignore[no-untyped-def]
    return d.workdir / ".dev" / "state" / "selfcheck.jsonl"


def read_history(d) -> list[dict]:  # type: ignore[no-untyped-def]
    # The daemon's own reader: it skips a torn line (tested below) instead of failing.
    return History(history_path(d)).read()


def test_selfcheck_appends_one_complete_line_and_exits_0(daemon) -> None:  # type: ignore[no-untyped-def]
    before = len(read_history(daemon)) if history_path(daemon).exists() else 0
    r = daemon.admin("self-check", *LOOSE)
    assert r.returncode == 0, r.stdout + r.stderr
    records = read_history(daemon)
    assert len(records) == before + 1
    rec = records[-1]
    assert set(rec["categories"]) == {"short", "medium", "long", "technical", "emotional", "streaming"}
    for key in ("rtf_mean", "rtf_median", "rtf_min", "rtf_max", "rtf_p95", "rtf_cv", "audio_seconds_total"):
        assert rec["stats"][key] is not None, key
    assert rec["stats"]["ttfa_mean"] is not None, "streaming time to first audio is measured"
    ctx = rec["context"]
    assert ctx["nfe"] == 7 and ctx["model"] == "tiny" and ctx["untrained"] is True and ctx["device"] == "cpu"
    assert ctx["settings_version"] == 0 and ctx["daemon_version"]
    assert rec["verdict"]["status"] in ("pass", "warn")
    assert "short" in r.stdout and "verdict" in r.stdout.lower()
    status = json.loads(daemon.admin("status", "--json").stdout)
    assert status["selfcheck"]["status"] == rec["verdict"]["status"]


def test_impossible_mean_rtf_exits_1_naming_the_reason(daemon) -> None:  # type: ignore[no-untyped-def]
    r = daemon.admin("self-check", "--max-mean-rtf", "1e-9", "--max-cv", "5", "--max-rtf", "100")
    assert r.returncode == 1
    assert "max_mean_rtf" in r.stdout + r.stderr
    assert read_history(daemon)[-1]["verdict"]["status"] == "fail"


def _fake_history(template: dict, n: int, factor: float, nfe: int | None = None) -> list[str]:
    lines = []
    for _ in range(n):
        rec = copy.deepcopy(template)
        for key in ("rtf_mean", "rtf_median", "rtf_min", "rtf_max", "rtf_p95"):
            rec["stats"][key] = rec["stats"][key] * factor
        if nfe is not None:
            rec["context"]["nfe"] = nfe
        lines.append(json.dumps(rec))
    return lines


def test_slowdown_against_comparable_runs_only(daemon) -> None:  # type: ignore[no-untyped-def]
    r = daemon.admin("self-check", *LOOSE)
    assert r.returncode == 0, r.stdout
    current = read_history(daemon)[-1]
    # Ten earlier runs twice as fast, as real runs would have written them.
    history_path(daemon).write_text("\n".join(_fake_history(current, 10, 0.5)) + "\n")
    r = daemon.admin("self-check", *LOOSE)
    assert r.returncode == 1, r.stdout
    assert "slow" in (r.stdout + r.stderr).lower()
    # The same history at another NFE is not comparable: no slowdown verdict.
    history_path(daemon).write_text("\n".join(_fake_history(current, 10, 0.5, nfe=32)) + "\n")
    r = daemon.admin("self-check", *LOOSE)
    assert r.returncode == 0, r.stdout
    assert read_history(daemon)[-1]["verdict"]["status"] == "warn"


def test_truncated_history_line_is_tolerated(daemon) -> None:  # type: ignore[no-untyped-def]
    with history_path(daemon).open("a") as fh:
        fh.write('{"schema": 1, "kind": "selfcheck", "stats": {"rtf_me')
    r = daemon.admin("self-check", *LOOSE)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = history_path(daemon).read_text().splitlines()
    assert json.loads(lines[-1])["kind"] == "selfcheck"
    r = daemon.admin("history", "--selfcheck")
    assert r.returncode == 0 and r.stdout.strip()


def test_live_requests_during_a_selfcheck_are_all_answered(daemon) -> None:  # type: ignore[no-untyped-def]
    from daemon_harness import BIN, base_env

    proc = subprocess.Popen([str(BIN / "ishowtts-admin"), "--socket", str(daemon.admin_socket), "self-check",
                             "--json", *LOOSE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=base_env())
    statuses: list[int] = []

    def client(i: int) -> None:
        statuses.append(post_json(daemon.url + "/v1/audio/speech",
                                  {"input": f"Live request number {i}.", "response_format": "wav"})[0])

    started = len([e for e in daemon.events() if e.get("event") == "self-check started"])
    deadline = time.monotonic() + 30
    while len([e for e in daemon.events() if e.get("event") == "self-check started"]) == started:
        assert time.monotonic() < deadline, "self-check did not start"
        time.sleep(0.02)
    threads = []
    for i in range(8):
        t = threading.Thread(target=client, args=(i,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join(120)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert statuses == [200] * 8
    record = read_history(daemon)[-1]
    assert record["traffic"]["interleaved"] is True and record["traffic"]["requests"] >= 1


def test_history_plot_writes_a_png(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    png = tmp_path / "trend.png"
    r = daemon.admin("history", "--selfcheck", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
