"""fetch-model: refuses without the licence, fails clearly offline, verifies what it has.

No network: "offline" is a closed local port, and the one success-path test serves the files
from a local HTTP server.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ishowttsd.engine import fetch
from ishowttsd.engine.errors import EngineError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refuses_without_accepting_the_licence(tmp_path: Path) -> None:
    messages: list[str] = []
    with pytest.raises(fetch.LicenseNotAccepted) as info:
        fetch.fetch_model(tmp_path, accept_license=False, progress=messages.append)
    assert "CC-BY-NC-4.0" in str(info.value) and "--accept-license" in str(info.value)
    assert not (tmp_path / "models").exists()


def test_offline_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(EngineError, match="needs network access"):
        fetch.fetch_model(tmp_path, accept_license=True, progress=lambda _: None, endpoint=endpoint)
    assert not list((tmp_path / "models").rglob("*.partial"))


def test_hf_hub_offline_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EngineError, match="HF_HUB_OFFLINE"):
        fetch.fetch_model(tmp_path, accept_license=True, progress=lambda _: None)


def test_fetch_does_not_import_torch() -> None:
    # `ishowttsd fetch-model` should not pay for torch: errors live in a torch-free module.
    import subprocess

    code = "import sys, ishowttsd.engine.fetch; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict[str, bytes]]]:
    """A local HTTP server that serves small stand-ins for every asset, with matching pins."""
    blobs = {a.path: f"contents of {a.path}\n".encode() * 3 for a in fetch.ASSETS}
    pinned = tuple(
        replace(a, size=len(blobs[a.path]), sha256=hashlib.sha256(blobs[a.path]).hexdigest() if a.sha256 else None)
        for a in fetch.ASSETS
    )
    monkeypatch.setattr(fetch, "ASSETS", pinned)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.split("/resolve/", 1)[1].split("/", 1)[1]
            body = blobs.get(name)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", blobs
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_verifies_and_lays_out_files(tmp_path: Path, fake_hub: tuple[str, dict[str, bytes]]) -> None:
    endpoint, blobs = fake_hub
    messages: list[str] = []
    paths = fetch.fetch_model(tmp_path, accept_license=True, progress=messages.append, endpoint=endpoint)
    models = tmp_path / "models"
    assert paths == {
        "weights": models / "F5TTS_v1_Base" / "model_1250000.safetensors",
        "vocab": models / "F5TTS_v1_Base" / "vocab.txt",
        "vocoder": models / "vocos-mel-24khz",
    }
    assert paths["weights"].read_bytes() == blobs["F5TTS_v1_Base/model_1250000.safetensors"]
    assert (paths["vocoder"] / "config.yaml").is_file() and (paths["vocoder"] / "pytorch_model.bin").is_file()
    assert (models / "MANIFEST.json").is_file()
    assert any("CC-BY-NC-4.0" in m for m in messages)
    # a second run re-verifies instead of downloading the pinned files again
    messages.clear()
    fetch.fetch_model(tmp_path, accept_license=True, progress=messages.append, endpoint=endpoint)
    assert sum("present, sha256 verified" in m for m in messages) == 2


def test_hash_mismatch_is_refused(
    tmp_path: Path, fake_hub: tuple[str, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, _ = fake_hub
    bad = tuple(replace(a, sha256="0" * 64) if a.key == "weights" else a for a in fetch.ASSETS)
    monkeypatch.setattr(fetch, "ASSETS", bad)
    with pytest.raises(EngineError, match="does not match the pinned"):
        fetch.fetch_model(tmp_path, accept_license=True, progress=lambda _: None, endpoint=endpoint)
    assert not (tmp_path / "models" / "F5TTS_v1_Base" / "model_1250000.safetensors").exists()
