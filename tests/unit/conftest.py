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
