"""A stream's chunks cross from the worker thread to the event loop (api.ChunkRelay): the worker
holds off its next chunk until the loop has sent the first audio, but never longer than the bound."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from ishowttsd.api import ChunkRelay
from ishowttsd.engine.text import Piece


def _worker(relay: ChunkRelay, chunks: int, returned: list[float]) -> threading.Thread:
    """A stand-in for the GPU worker thread: pushes chunks, noting when each push returned."""

    def run() -> None:
        for i in range(chunks):
            relay.push(Piece.of(np.full(4, float(i) / 8, dtype=np.float32)))
            returned.append(time.monotonic())
        relay.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_worker_waits_until_the_first_audio_is_sent() -> None:
    async def scenario() -> tuple[list[float], float, list[float]]:
        relay = ChunkRelay(asyncio.get_running_loop(), handoff_s=5.0)
        returned: list[float] = []
        thread = _worker(relay, 3, returned)
        first = await relay.pieces.get()
        assert isinstance(first, Piece) and first.audio[0] == 0.0
        await asyncio.sleep(0.05)  # the loop is sending the first audio; the worker must wait
        sent = time.monotonic()
        relay.first_sent()
        rest = []
        while (piece := await relay.next_piece()) is not None:
            rest.append(float(piece.audio[0]))
        await asyncio.to_thread(thread.join)
        return returned, sent, rest

    returned, sent, rest = asyncio.run(scenario())
    assert rest == [0.125, 0.25]
    assert returned[0] >= sent, "the first push returned before the first audio was sent"


def test_worker_waits_no_longer_than_the_bound() -> None:
    """A loop that never reports the first audio (busy, or its client gone) delays the worker by
    the bound once, not per chunk and not forever."""

    async def scenario() -> tuple[float, list[float]]:
        relay = ChunkRelay(asyncio.get_running_loop(), handoff_s=0.2)
        returned: list[float] = []
        start = time.monotonic()
        thread = _worker(relay, 3, returned)
        await asyncio.to_thread(thread.join)
        return start, returned

    start, returned = asyncio.run(scenario())
    assert 0.2 <= returned[0] - start < 2.0
    assert returned[2] - returned[0] < 0.1, "only the first chunk waits"
