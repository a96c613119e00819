"""When a stream commits to its 200 (api._stream_speech): as soon as its job is under way on the
device, before the first audio exists, so the headers are out while the GPU works; a request
refused before that still gets its own status, and a failure after it ends the stream early.

The real aiohttp app and the real worker thread, with the tiny engine on the CPU told to overlap
as it does on CUDA (only an overlapping engine says it is under way before its first chunk)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp
import pytest

from ishowttsd import config
from ishowttsd.api import STREAM_FIRST_CHUNK_BYTES, create_app
from ishowttsd.engine.f5 import Engine
from ishowttsd.engine.spec import SynthesisRequest
from ishowttsd.metrics import Metrics
from ishowttsd.worker import ModelSlot, Worker

TEXT = "Welcome back to the stream, everyone. Stay tuned, and tell your friends about it."


class _Service:
    """What the API needs of the daemon, around a real worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.metrics = Metrics()
        self._config = config.build([])

    @property
    def config(self) -> config.Config:
        return self._config

    def not_ready_reason(self) -> str | None:
        return None

    def effective_nfe(self) -> int:
        return 7

    def voice_list(self) -> list[dict[str, Any]]:
        return []

    def model_untrained(self) -> bool:
        return True


@pytest.fixture()
def served(overlapping_worker: tuple[Worker, Engine, Any]) -> tuple[_Service, Engine, Any]:
    worker, engine, voice = overlapping_worker
    return _Service(worker), engine, voice


def _body(voice: str = "default") -> dict[str, Any]:
    return {"input": TEXT, "voice": voice, "response_format": "pcm", "stream": True, "seed": 5}


async def test_the_headers_go_out_while_the_first_chunk_is_on_the_device(served: Any, aiohttp_client: Any) -> None:
    service, engine, voice = served
    collected = threading.Event()
    release = threading.Event()
    collect = engine._collect

    def held_collect(pending: Any, timings: dict[str, float]) -> Any:
        release.wait(30)  # the first chunk "still on the device" until the test has the headers
        collected.set()
        return collect(pending, timings)

    engine._collect = held_collect  # type: ignore[method-assign]
    client = await client_for(service, aiohttp_client)
    resp = await client.post("/v1/audio/speech", json=_body())
    assert resp.status == 200 and resp.headers["Content-Type"] == "audio/pcm"
    assert not collected.is_set(), "the 200 waited for the first audio"
    release.set()
    body = await resp.read()
    engine._collect = collect  # type: ignore[method-assign]
    req = SynthesisRequest(text=TEXT, voice_id="default", seed=5)
    alone = engine.synthesize(voice, req, first_chunk_bytes=STREAM_FIRST_CHUNK_BYTES)
    assert alone.chunks >= 2 and body == alone.pcm.tobytes()


async def test_a_request_refused_before_it_is_under_way_gets_its_own_status(served: Any, aiohttp_client: Any) -> None:
    service, engine, _voice = served
    client = await client_for(service, aiohttp_client)
    resp = await client.post("/v1/audio/speech", json={**_body(), "input": "   "})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "empty_input"
    # Refused by the worker at the job's start: the configured voice's reference failed to load.
    worker = service.worker
    worker.call(lambda _slot: worker.install(ModelSlot(engine=engine, voices={}, spec=None))).result()
    resp = await client.post("/v1/audio/speech", json=_body())
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "unknown_voice"


async def test_a_failure_after_the_commit_ends_the_stream_early(served: Any, aiohttp_client: Any) -> None:
    service, engine, _voice = served

    def broken_collect(pending: Any, timings: dict[str, float]) -> Any:
        raise RuntimeError("the device failed")

    engine._collect = broken_collect  # type: ignore[method-assign]
    client = await client_for(service, aiohttp_client)
    resp = await client.post("/v1/audio/speech", json=_body())
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


async def test_a_client_gone_before_the_commit_drops_its_job(served: Any, aiohttp_client: Any) -> None:
    """The client leaves while its stream waits in the queue (no headers yet): the job is
    dropped, never launched.  (After the commit, a failed write stops it, as it always did.)"""
    service, engine, _voice = served
    launches: list[int] = []
    launch = engine._launch

    def counted_launch(*args: Any) -> Any:
        launches.append(1)
        return launch(*args)

    engine._launch = counted_launch  # type: ignore[method-assign]
    gate = threading.Event()
    service.worker.call(lambda _slot: gate.wait(30))  # the worker busy with something else
    # handler_cancellation as the daemon runs it: a client's leaving cancels its handler
    client = await client_for(service, aiohttp_client, handler_cancellation=True)
    post = asyncio.ensure_future(client.post("/v1/audio/speech", json=_body()))
    for _ in range(100):
        if service.worker.depth():
            break
        await asyncio.sleep(0.02)
    assert service.worker.depth() == 1
    post.cancel()  # the client goes away
    await asyncio.sleep(0.3)
    gate.set()
    for _ in range(100):
        if not service.worker.depth() and not service.worker._running:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    assert launches == []


async def client_for(service: _Service, aiohttp_client: Any, **server: Any) -> Any:
    return await aiohttp_client(create_app(service), server_kwargs=server)  # type: ignore[arg-type]
