"""bench/rtf.py runs for real on the CPU with the tiny model (issue 8: it must run in CI).

The numbers mean nothing on a tiny untrained model; what is checked is that every phase of the
GPU benchmark (stock infer_process, the engine, the daemon over HTTP) runs and reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_tiny_cpu(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("NOTIFY_SOCKET", None)
    cmd = [sys.executable, str(REPO / "bench" / "rtf.py"), "--tiny", "--device", "cpu", "--out", str(out),
           "--repeats", "1", "--warmup", "1", "--nfes", "7,6", "--stock-nfes", "7", "--clients", "1,4",
           "--throughput-requests", "4", "--single-start", "--ready-timeout", "60"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "rtf.json").read_text())
    assert data["errors"] == {}
    phases = data["phases"]
    assert phases["env"]["arch"] == "tiny"
    stock = phases["stock"]["nfe"]["7"]
    assert stock["median"] > 0 and stock["audio_s"] > 1
    eager = phases["engine"]["variants"]["eager"]
    assert set(eager["nfe"]) == {"7", "6"}
    # fp32 eager against itself on the CPU: the same computation, so no distance
    assert eager["nfe"]["7"]["distance_db_vs_fp32_eager"] < 1e-3
    assert eager["stream_first_audio"]["median"] > 0
    daemon = phases["daemon"]
    assert daemon["wav"]["audio_s"] > 1 and daemon["stream_first_audio"]["median"] > 0
    # The bare socket client (bench/raw_http.py) read the same WAV (it checks the byte count)
    # and a chunked stream's first audio.
    raw = daemon["wav_raw_client"]
    assert raw["audio_s"] == daemon["wav"]["audio_s"] and raw["median"] > 0
    assert daemon["stream_first_audio_raw_client"]["median"] > 0
    assert set(daemon["throughput"]) == {"1", "4"}
    assert daemon["cold_start_empty_cache_s"] > 0
    # the start-up phases from the daemon's own log lines, in order, ending at READY
    steps = daemon["cold_start_empty_cache_timeline"]
    assert steps[0][1] == "starting" and steps[-1][1] == "ready"
    assert any(what.startswith("warming up") for _, what in steps)
    times = [at for at, _ in steps]
    # The timeline is rounded to 10 ms and read off the log lines' wall-clock stamps, the start
    # time off the monotonic clock when /readyz first answered: allow the rounding (a flake seen).
    assert times == sorted(times) and 0 < times[-1] <= daemon["cold_start_empty_cache_s"] + 0.011
    # the timed WAV request's own log line, found by its request id
    side = daemon["wav_server_side"]
    assert side["requests"] == 1 and 0 < side["engine_total_s"] < daemon["wav"]["median"]
    table = (out / "table.md").read_text()
    assert "stock infer_process" in table and "HTTP e2e" in table and "bare socket client" in table


def test_http_stage_diagnostic_marks_every_stage_on_the_cpu(tmp_path: Path) -> None:
    """``bench/diag_http_stages.py`` wraps the daemon's request path by name from a shim; if a
    wrapped function is renamed or no longer called, its stage goes missing.  On the CPU with
    the tiny model: every stage is marked, in the order a request passes them."""
    out = tmp_path / "stages.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("NOTIFY_SOCKET", None)
    cmd = [sys.executable, str(REPO / "bench" / "diag_http_stages.py"), "--n", "2", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    # The daemon's own marks in the order a request passes them; the client's bytes come after
    # the daemon starts sending (not necessarily after its write returns).
    order = {
        "wav": ["data_received", "handler", "enqueued", "advance_in", "engine_tokens", "launch_in", "vocoder_queued",
                "launch_out", "job_done", "encode_start", "encoded", "send_start", "send_end"],
        "stream": ["data_received", "handler", "enqueued", "advance_in", "push", "loop_put", "prepare", "prepared",
                   "piece_encode", "piece_encoded", "first_sent"],
    }
    for kind, stages in order.items():
        assert set(stages) <= set(report[kind]), (kind, sorted(report[kind]))
        times = [report[kind][name] for name in stages]
        assert times == sorted(times), (kind, dict(zip(stages, times, strict=True)))
    assert report["wav"]["client_last_byte"] > report["wav"]["send_start"]
    assert report["stream"]["client_first_byte"] > report["stream"]["piece_encode"]
