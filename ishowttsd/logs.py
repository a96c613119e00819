"""Logging: structlog JSON lines to stdout (journald keeps them) and an optional JSONL file.

Standard-library loggers (aiohttp, torch, f5_tts, our own engine) go through the same
renderer, so every line has ts, level, logger and event.  Request context (request_id)
rides on contextvars.
"""

from __future__ import annotations

import hashlib
import logging
import logging.handlers
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
]


class LogSinks:
    """The handlers this process writes to; `reopen()` serves SIGUSR1 after logrotate."""

    def __init__(self, file_handler: logging.handlers.WatchedFileHandler | None) -> None:
        self._file_handler = file_handler

    def reopen(self) -> None:
        if self._file_handler is not None:
            self._file_handler.acquire()
            try:
                self._file_handler.close()
                self._file_handler.stream = self._file_handler._open()
            finally:
                self._file_handler.release()


def _formatter() -> logging.Formatter:
    return structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _key_order,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False, default=str),
        ],
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder()],
    )


def _key_order(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    # Keep a fixed key order for people reading journalctl: ts, level, logger, event first.
    ordered: dict[str, Any] = {k: event_dict.pop(k) for k in ("ts", "level", "logger", "event") if k in event_dict}
    ordered.update(event_dict)
    return ordered


def setup_logging(level: str = "info", file: str = "", stream: TextIO | None = None) -> LogSinks:
    """Route structlog and the standard library to JSON lines."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = _formatter()
    out = logging.StreamHandler(stream or sys.stdout)
    out.setFormatter(formatter)
    root.addHandler(out)
    file_handler = None
    if file:
        # WatchedFileHandler reopens by itself when logrotate moves the file; SIGUSR1 forces it.
        file_handler = logging.handlers.WatchedFileHandler(file, encoding="utf-8")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    root.setLevel(level.upper())
    # Third-party chatter at info level is noise in the journal.
    for noisy in ("aiohttp.access", "matplotlib", "numba", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return LogSinks(file_handler)


def get_logger(name: str) -> Any:
    return structlog.stdlib.get_logger(name)


def text_fingerprint(text: str) -> dict[str, Any]:
    """What may be logged about text to be spoken: its length and a hash, never the text."""
    return {"text_len": len(text), "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]}
