"""The engine's exceptions, torch-free so that light callers (fetch-model, the CLI) can catch
them without importing torch.  ``engine.f5`` re-exports them."""

from __future__ import annotations


class EngineError(Exception):
    """The model cannot be loaded or warmed up; the message is for the operator."""


class VoiceError(EngineError):
    """One voice's reference is unusable; the message names the voice and says why."""


class Cancelled(EngineError):
    """``should_stop()`` returned True between chunks."""
