"""Configuration: TOML files (+ conf.d drop-ins) -> frozen dataclasses.

Every mistake is a ``ConfigError`` naming the file, the key and the reason.  This module
imports neither torch nor f5_tts, so ``ishowttsd --check-config`` answers at once.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ishowttsd.engine.spec import (
    DEFAULT_VOICE_TEXT,
    MAX_NFE,
    MIN_NFE,
    UNTRAINED,
    ModelSpec,
    VoiceSpec,
    meta,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # Jetson's Ubuntu 22.04 has Python 3.10
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("/etc/ishowtts/ishowttsd.toml")
EX_CONFIG = 78


class ConfigError(Exception):
    """A configuration mistake, phrased for the operator."""


@dataclass(frozen=True)
class DaemonConfig:
    """`[daemon]`: where state lives and how the process stops."""

    state_dir: str = "/var/lib/ishowtts"
    runtime_dir: str = "/run/ishowtts"
    cache_dir: str = "/var/cache/ishowtts"
    # How long a running synthesis may take to finish after SIGTERM.
    drain_timeout_s: float = field(default=10.0, metadata=meta(min=0.0, max=600.0))
    # The worker must report progress within this many seconds or the watchdog is starved.
    heartbeat_stale_s: float = field(default=60.0, metadata=meta(min=1.0, max=3600.0))


@dataclass(frozen=True)
class HttpConfig:
    """`[http]`: the public speech API."""

    listen: str = "127.0.0.1:8080"
    # The event loop the API runs on: uvloop (libuv) wakes and hands a stream's first chunk
    # over faster than asyncio's own (bench/NOTES.md item 44); "asyncio" is the standard one.
    # Takes effect at restart.
    event_loop: str = field(default="uvloop", metadata=meta(choices=("uvloop", "asyncio")))


@dataclass(frozen=True)
class AdminConfig:
    """`[admin]`: the Unix control socket."""

    socket: str = "/run/ishowtts/admin.sock"
    # Group that owns the socket; its members may read status and history.
    group: str = "ishowtts"
    # Members of this group (and root, and the daemon's own user) may change things.
    admin_group: str = "ishowtts-admin"


@dataclass(frozen=True)
class LogConfig:
    """`[log]`: JSON lines to stdout, and optionally to a file."""

    level: str = field(default="info", metadata=meta(choices=("debug", "info", "warning", "error")))
    # Optional JSONL file; reopened on SIGUSR1 so logrotate can move it.
    file: str = ""


@dataclass(frozen=True)
class SynthesisConfig:
    """`[synthesis]`: defaults for every request."""

    nfe: int = field(default=7, metadata=meta(min=MIN_NFE, max=MAX_NFE))
    cfg_strength: float = field(default=2.0, metadata=meta(min=0.0, max=10.0))
    sway: float = field(default=-1.0, metadata=meta(min=-1.0, max=1.0))
    speed: float = field(default=1.0, metadata=meta(min=0.25, max=4.0))
    cross_fade_s: float = field(default=0.15, metadata=meta(min=0.0, max=1.0))
    target_rms: float = field(default=0.1, metadata=meta(min=0.01, max=1.0))
    default_voice: str = "default"


@dataclass(frozen=True)
class LimitsConfig:
    """`[limits]`: what one request may ask for, and how much may wait."""

    max_chars: int = field(default=2000, metadata=meta(min=1, max=100_000))
    queue_size: int = field(default=16, metadata=meta(min=1, max=10_000))
    request_timeout_s: float = field(default=120.0, metadata=meta(min=0.1, max=3600.0))
    max_body_bytes: int = field(default=1_048_576, metadata=meta(min=1024, max=64 * 1024 * 1024))


@dataclass(frozen=True)
class SelfcheckConfig:
    """`[selfcheck]`: the benchmark verdict's thresholds."""

    max_mean_rtf: float = field(default=0.25, metadata=meta(min=0.0))
    max_rtf: float = field(default=0.30, metadata=meta(min=0.0))
    max_cv: float = field(default=0.10, metadata=meta(min=0.0))
    max_slowdown: float = field(default=0.10, metadata=meta(min=0.0))
    repeats: int = field(default=3, metadata=meta(min=1, max=100))
    warmup: int = field(default=1, metadata=meta(min=0, max=100))
    # How many texts of each category to run (every category has at least 3).
    texts_per_category: int = field(default=3, metadata=meta(min=1, max=100))


@dataclass(frozen=True)
class ClocksConfig:
    """`[clocks]`: GPU clock locks (Jetson) and where to read their state."""

    provider: str = field(default="auto", metadata=meta(choices=("auto", "jetson", "none")))
    power_mode: int = field(default=0, metadata=meta(min=0, max=64))
    required: bool = False
    restore_on_stop: bool = False
    sysfs_root: str = "/sys"
    nvpmodel: str = "nvpmodel"
    jetson_clocks: str = "jetson_clocks"
    release_file: str = "/etc/nv_tegra_release"
    # Where `jetson_clocks --store` keeps the prior state for restore_on_stop.
    store_file: str = "/var/lib/ishowtts/jetson_clocks.conf"
    timeout_s: float = field(default=30.0, metadata=meta(min=0.1, max=600.0))


@dataclass(frozen=True)
class QualityConfig:
    """`[quality]`: the objective NFE quality gate."""

    reference_nfe: int = field(default=32, metadata=meta(min=MIN_NFE, max=MAX_NFE))
    # Mean log-mel distance (dB) to the reference NFE allowed, and the worst single text.
    max_distance: float = field(default=3.0, metadata=meta(min=0.0))
    max_worst_distance: float = field(default=5.0, metadata=meta(min=0.0))
    seed: int = field(default=1234, metadata=meta(min=0, max=2**31 - 1))


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig = DaemonConfig()
    http: HttpConfig = HttpConfig()
    admin: AdminConfig = AdminConfig()
    log: LogConfig = LogConfig()
    model: ModelSpec = ModelSpec()  # noqa: RUF009 - frozen, so sharing the default is safe
    synthesis: SynthesisConfig = SynthesisConfig()
    limits: LimitsConfig = LimitsConfig()
    selfcheck: SelfcheckConfig = SelfcheckConfig()
    clocks: ClocksConfig = ClocksConfig()
    quality: QualityConfig = QualityConfig()
    voices: tuple[VoiceSpec, ...] = (VoiceSpec(id="default", reference_text=DEFAULT_VOICE_TEXT),)
    # Files that made this config, in the order they were applied (for status and errors).
    sources: tuple[str, ...] = ()

    @property
    def state_dir(self) -> Path:
        return Path(self.daemon.state_dir)

    def voice(self, voice_id: str) -> VoiceSpec | None:
        return next((v for v in self.voices if v.id == voice_id), None)


SECTIONS: dict[str, type] = {
    f.name: type(f.default) for f in dataclasses.fields(Config) if f.name not in ("voices", "sources")
}


def dev_layer(cwd: Path, port: int | None) -> dict[str, Any]:
    """The settings `--dev` lays under any --config: a whole daemon under ./.dev/, no root."""
    dev = cwd / ".dev"
    layer: dict[str, Any] = {
        "daemon": {
            "state_dir": str(dev / "state"),
            "runtime_dir": str(dev / "run"),
            "cache_dir": str(dev / "cache"),
        },
        "http": {"listen": "127.0.0.1:8080"},
        "admin": {"socket": str(dev / "run" / "admin.sock"), "group": "", "admin_group": ""},
        "model": {"architecture": "tiny", "weights": UNTRAINED, "device": "cpu", "precision": "fp32"},
        "clocks": {"provider": "none", "store_file": str(dev / "state" / "jetson_clocks.conf")},
        # The shipped thresholds are for a GPU; a shared CPU running the tiny model is slower
        # and noisier, and a newcomer's first self-check should measure, not cry wolf.
        "selfcheck": {"max_mean_rtf": 1.0, "max_rtf": 2.0, "max_cv": 0.5},
    }
    if port is not None:
        layer["http"]["listen"] = f"127.0.0.1:{port}"
    return layer


def load(path: Path | None, *, dev: bool = False, port: int | None = None, cwd: Path | None = None) -> Config:
    """Load a config file and its conf.d drop-ins (sorted) over the defaults.

    With ``dev``, the dev layer comes first and ``path`` (if any) is applied over it.
    ``port`` overrides the HTTP port last, as the command line should.
    """
    layers: list[tuple[str, dict[str, Any]]] = []
    if dev:
        layers.append(("--dev defaults", dev_layer(cwd or Path.cwd(), None)))
    if path is None and not dev:
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        layers.extend(_read_with_dropins(path))
    if port is not None:
        layers.append(("--port", {"http": {"listen": f"127.0.0.1:{port}"}}))
    return build(layers)


def _read_with_dropins(path: Path) -> list[tuple[str, dict[str, Any]]]:
    layers = [(str(path), _read_toml(path))]
    dropin_dir = path.parent / "conf.d"
    if dropin_dir.is_dir():
        for dropin in sorted(dropin_dir.glob("*.toml")):
            layers.append((str(dropin), _read_toml(dropin)))
    return layers


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def build(layers: list[tuple[str, dict[str, Any]]]) -> Config:
    """Merge layers (later wins, key by key) and validate into a Config."""
    merged: dict[str, dict[str, tuple[str, Any]]] = {name: {} for name in SECTIONS}
    voices: tuple[str, list[Any]] | None = None
    for source, data in layers:
        for section, body in data.items():
            if section == "voices":
                if not isinstance(body, list):
                    raise ConfigError(f"{source}: [[voices]]: must be an array of tables ([[voices]])")
                voices = (source, body)
                continue
            if section not in SECTIONS:
                known = ", ".join([*SECTIONS, "voices"])
                raise ConfigError(f"{source}: unknown section [{section}] (known: {known})")
            if not isinstance(body, dict):
                raise ConfigError(f"{source}: {section}: must be a table [{section}]")
            for key, value in body.items():
                merged[section][key] = (source, value)
    sections = {name: _make(cls, name, merged[name]) for name, cls in SECTIONS.items()}
    cfg = Config(**sections, sources=tuple(s for s, _ in layers))
    if voices is not None:
        cfg = dataclasses.replace(cfg, voices=_make_voices(*voices))
    _check_cross_field(cfg, dict(layers))
    return cfg


def _make(cls: type, section: str, values: Mapping[str, tuple[str, Any]]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, (source, value) in values.items():
        if key not in fields:
            raise ConfigError(
                f"{source}: [{section}] {key}: unknown key (known: {', '.join(fields)})"
            )
        kwargs[key] = _check_value(source, f"[{section}] {key}", hints[key], fields[key].metadata, value)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        source = next(iter(values.values()))[0] if values else "config"
        raise ConfigError(f"{source}: [{section}]: {exc}") from None


def _make_voices(source: str, entries: list[Any]) -> tuple[VoiceSpec, ...]:
    voices: list[VoiceSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"[[voices]] #{i + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: {where}: must be a table")
        if "id" not in entry:
            raise ConfigError(f"{source}: {where} id: missing (every voice needs an id)")
        if not isinstance(entry["id"], str) or not entry["id"].strip():
            raise ConfigError(f"{source}: {where} id: must be a non-empty string")
        if entry["id"] in seen:
            raise ConfigError(f"{source}: {where} id: duplicate voice id {entry['id']!r}")
        seen.add(entry["id"])
        voice = _make(VoiceSpec, f"voices.{entry['id']}", {k: (source, v) for k, v in entry.items()})
        if voice.reference_audio and not voice.reference_text.strip():
            raise ConfigError(
                f"{source}: [voices.{voice.id}] reference_text: required with reference_audio "
                "(the exact transcript of the clip; there is no speech-recognition fallback)"
            )
        if not voice.reference_audio and not voice.reference_text.strip():
            voice = dataclasses.replace(voice, reference_text=DEFAULT_VOICE_TEXT)
        voices.append(voice)
    if not voices:
        raise ConfigError(f"{source}: [[voices]]: at least one voice is needed")
    return tuple(voices)


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _check_value(source: str, where: str, tp: Any, rules: Mapping[str, Any], value: Any) -> Any:
    optional = False
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional, tp = True, args[0]
    if optional and value is None:
        return None
    ok = (
        isinstance(value, bool)
        if tp is bool
        else isinstance(value, (int, float)) and not isinstance(value, bool)
        if tp is float
        else isinstance(value, tp) and not isinstance(value, bool)
    )
    if not ok:
        raise ConfigError(f"{source}: {where}: must be {_type_name(tp)}, got {value!r}")
    if tp is float:
        value = float(value)
    lo, hi, choices = rules.get("min"), rules.get("max"), rules.get("choices")
    if lo is not None and value < lo:
        raise ConfigError(f"{source}: {where}: {value!r} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{source}: {where}: {value!r} is above the maximum {hi}")
    if choices is not None and value not in choices:
        raise ConfigError(f"{source}: {where}: {value!r} is not one of {', '.join(map(str, choices))}")
    return value


def _source_of(layers: dict[str, dict[str, Any]], section: str, key: str) -> str:
    for source in reversed(list(layers)):
        if key in layers[source].get(section, {}):
            return source
    return "defaults"


def _check_cross_field(cfg: Config, layers: dict[str, dict[str, Any]]) -> None:
    host, sep, port = cfg.http.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        src = _source_of(layers, "http", "listen")
        raise ConfigError(f"{src}: [http] listen: {cfg.http.listen!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    device = cfg.model.device
    if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        src = _source_of(layers, "model", "device")
        raise ConfigError(f"{src}: [model] device: {device!r} is not auto, cpu, cuda or cuda:N")
    if cfg.voice(cfg.synthesis.default_voice) is None:
        src = _source_of(layers, "synthesis", "default_voice")
        ids = ", ".join(v.id for v in cfg.voices)
        raise ConfigError(
            f"{src}: [synthesis] default_voice: {cfg.synthesis.default_voice!r} is not a configured voice "
            f"(voices: {ids})"
        )
    if cfg.selfcheck.max_rtf < cfg.selfcheck.max_mean_rtf:
        src = _source_of(layers, "selfcheck", "max_rtf")
        raise ConfigError(f"{src}: [selfcheck] max_rtf: must be at least max_mean_rtf")


def model_files_missing(cfg: Config) -> list[str]:
    """Model files the config names that are not on disk (what `--fetch-model` would bring)."""
    missing: list[str] = []
    if cfg.model.weights != UNTRAINED and not Path(cfg.model.weights).is_file():
        missing.append(cfg.model.weights)
    vocoder = resolved_vocoder(cfg)
    if vocoder != UNTRAINED and not (Path(vocoder) / "config.yaml").is_file():
        missing.append(vocoder)
    return missing


def resolved_vocoder(cfg: Config) -> str:
    if cfg.model.vocoder:
        return cfg.model.vocoder
    if cfg.model.weights == UNTRAINED:
        return UNTRAINED
    return str(cfg.state_dir / "models" / "vocos-mel-24khz")
