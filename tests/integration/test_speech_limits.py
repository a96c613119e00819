"""Issue 3: cancelled and timed-out requests do not cost GPU time, and never leave a 5xx."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

from daemon_harness import get, post_json, running_daemon

LONG = {"text": "A long stretch of speech to keep the worker busy.", "fix_duration": 60.0, "nfe_step": 32}


def _abandon(port: int, text: str) -> None:
    """Send a request and hang up without reading the answer, as a closed browser tab does."""
    body = json.dumps({"input": text, "response_format": "wav"}).encode()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.3)


def test_queued_work_of_a_disconnected_client_is_dropped(tmp_path: Path) -> None:
    with running_daemon(tmp_path, config="[limits]\nqueue_size = 16\nrequest_timeout_s = 600\n") as d:
        busy = threading.Thread(target=lambda: post_json(d.url + "/api/tts", LONG, timeout=600), daemon=True)
        busy.start()
        time.sleep(1.0)  # the long job is running; what follows waits in the queue
        for i in range(3):
            _abandon(d.port, f"Nobody will hear sentence {i}.")
        dropped = [d.wait_event("dropped queued job: its client is gone", timeout=300)]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            dropped = [e for e in d.events() if e.get("event") == "dropped queued job: its client is gone"]
            if len(dropped) >= 3:
                break
            time.sleep(0.2)
        assert len(dropped) == 3
        done = [e for e in d.events() if e.get("event") == "synthesis done"]
        assert all(e["text_len"] != len("Nobody will hear sentence 0.") for e in done)
        assert get(d.url + "/healthz")[0] == 200


def test_request_timeout_is_503_with_retry_after(tmp_path: Path) -> None:
    with running_daemon(tmp_path, config="[limits]\nrequest_timeout_s = 0.5\n") as d:
        status, headers, body = post_json(d.url + "/api/tts", LONG, timeout=120)
        assert status == 503 and headers.get("Retry-After")
        assert json.loads(body)["error"]["code"] == "timeout"
        # The timed-out job stops at its next chunk boundary (this one has a single long chunk,
        # so it runs to its end); meanwhile others time out too, then the daemon serves again.
        seen = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status, _, body = post_json(d.url + "/v1/audio/speech",
                                        {"input": "Still here.", "response_format": "wav"}, timeout=60)
            seen.append(status)
            if status == 200:
                break
            assert status == 503 and json.loads(body)["error"]["code"] == "timeout"
        assert seen[-1] == 200, seen
