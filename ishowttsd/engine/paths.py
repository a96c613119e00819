"""Where f5-tts keeps the files we use from it; torch-free, so cheap to import."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def f5_package_dir() -> Path:
    """The installed f5_tts directory (a namespace package: it has no ``__init__``)."""
    spec = importlib.util.find_spec("f5_tts")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("f5-tts is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def default_vocab() -> Path:
    """The vocab.txt f5-tts ships (the one its pretrained checkpoints were trained with)."""
    return f5_package_dir() / "infer" / "examples" / "vocab.txt"


def default_ref_audio() -> Path:
    """The reference clip f5-tts ships: basic_ref_en.wav."""
    return f5_package_dir() / "infer" / "examples" / "basic" / "basic_ref_en.wav"


def f5_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("f5-tts")
    except PackageNotFoundError:
        return "unknown"
