"""Shared fixtures.  Engine fixtures import torch lazily, so tests that do not use them stay light."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_engine() -> Any:
    """The tiny untrained model on CPU, loaded once per session.  Tests that change an engine
    (monkeypatching, precision switches) must load their own instead."""
    from ishowttsd.engine.f5 import Engine
    from ishowttsd.engine.spec import ModelSpec

    return Engine.load(ModelSpec(architecture="tiny", weights="untrained", device="cpu"), vocoder="untrained")


@pytest.fixture(scope="session")
def default_voice(tiny_engine: Any) -> Any:
    from ishowttsd.engine.spec import VoiceSpec

    return tiny_engine.prepare_voice(VoiceSpec(id="default"))


@pytest.fixture()
def overlapping_worker() -> Any:
    """A running worker thread serving a fresh tiny engine that overlaps its jobs as it does on
    CUDA (the next chunk or request queued before the last is waited for); yields (worker,
    engine, default voice) and stops the thread after the test."""
    from ishowttsd.engine.f5 import Engine
    from ishowttsd.engine.spec import ModelSpec, VoiceSpec
    from ishowttsd.worker import ModelSlot, Worker

    engine = Engine.load(ModelSpec(architecture="tiny", weights="untrained", device="cpu"), vocoder="untrained")
    engine.overlap = True
    voice = engine.prepare_voice(VoiceSpec(id="default"))
    worker = Worker(queue_size=8)
    worker.start()
    worker.call(lambda _slot: worker.install(ModelSlot(engine=engine, voices={"default": voice}, spec=None))).result()
    yield worker, engine, voice
    assert worker.shutdown(10)
