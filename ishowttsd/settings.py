"""Runtime settings overlay: versioned, written atomically, rolled back as new versions.

The operator's config file is the *baseline*.  Changes made through the admin socket are
*versions* in ``<state_dir>/settings.json``; each version stores what changed (old and new
effective values) and the whole runtime overlay after it, so that the effective settings of any
version can be rebuilt exactly and a rollback is just "make that overlay current again" recorded
as a new version.  History is never rewritten.

State on disk is input like any other: a corrupt file is never fatal and never silently
dropped.  One previous good copy (``settings.json.bak``) is kept for recovery, and files that
cannot be read are renamed aside for the operator to inspect.

This module imports neither torch nor f5_tts: the admin server and tests use it freely.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ishowttsd.durable import atomic_write
from ishowttsd.engine.spec import EPSS_STEPS, MAX_NFE, MIN_NFE

FORMAT = 1
_MISSING = object()
Validator = Callable[[Any], Any]
# A structlog-style logger (``log.error(event, **fields)``), a ``logging.Logger``, or a plain
# callable ``log(level, event, **fields)``.
LogSink = Any


class SettingsError(Exception):
    """Base class of the store's refusals; the admin server maps them to 4xx answers."""


class NothingToRollback(SettingsError):
    """There is no earlier version, or the target already equals the current settings."""


class UnknownVersion(SettingsError):
    """A version number that is not in the history."""


class UnknownSetting(SettingsError, ValueError):
    """A key that is not settable at run time."""


class CorruptState(Exception):
    """A settings file that cannot be trusted (bad JSON, wrong shape, invalid value)."""


def validate_nfe(value: Any) -> int:
    """NFE steps: an integer from MIN_NFE to MAX_NFE (bool and float are refused, not coerced)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"nfe must be an integer from {MIN_NFE} to {MAX_NFE}, not {value!r}")
    if not MIN_NFE <= value <= MAX_NFE:
        raise ValueError(f"nfe must be from {MIN_NFE} to {MAX_NFE}, not {value}")
    return value


def has_epss(nfe: int) -> bool:
    """Whether upstream f5-tts has an Empirically Pruned Step Sampling table for this step count."""
    return nfe in EPSS_STEPS


# The keys settable at run time today, with their validators.
DEFAULT_ALLOWED: dict[str, Validator] = {"nfe": validate_nfe}


@dataclass(frozen=True)
class Version:
    """One settings version as recorded in settings.json."""

    number: int
    time: str
    uid: int
    command: str
    # key -> {"old": effective value before, "new": effective value after}
    changes: dict[str, dict[str, Any]]
    # The whole runtime overlay after this version (keys set at run time and their values).
    overrides: dict[str, Any]
    note: str | None = None
    validation: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.extra,
            "version": self.number,
            "time": self.time,
            "uid": self.uid,
            "command": self.command,
            "changes": self.changes,
            "overrides": self.overrides,
        }
        if self.note is not None:
            out["note"] = self.note
        if self.validation is not None:
            out["validation"] = self.validation
        return out


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class SettingsStore:
    """Baseline config values plus a persisted, versioned runtime overlay.

    Not async: every call is short (one small fsynced file), so the admin server may call it
    from the event loop.  A lock makes it safe from threads too.
    """

    def __init__(
        self,
        path: Path,
        baseline: Mapping[str, Any],
        log: LogSink = None,
        *,
        allowed: Mapping[str, Validator] | None = None,
        baseline_sources: Mapping[str, str] | None = None,
    ) -> None:
        """``baseline_sources`` names where each baseline value came from: "default" or
        "config file" (keys not named count as "config file")."""
        self.path = Path(path)
        self.bak_path = self.path.with_name(self.path.name + ".bak")
        self._allowed: dict[str, Validator] = dict(DEFAULT_ALLOWED if allowed is None else allowed)
        self._baseline: dict[str, Any] = dict(baseline)
        self._baseline_sources: dict[str, str] = dict(baseline_sources or {})
        self._log = log
        self._versions: list[Version] = []
        self._lock = threading.RLock()

    # ----- reading -----------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._versions[-1].number if self._versions else 0

    def effective(self) -> dict[str, Any]:
        with self._lock:
            return {**self._baseline, **self._overrides_at(self.version)}

    def sources(self) -> dict[str, str]:
        """Per key: "default", "config file" or "runtime version N" (the version that set it)."""
        with self._lock:
            out = {key: self._baseline_sources.get(key, "config file") for key in self._baseline}
            for key in self._overrides_at(self.version):
                out[key] = f"runtime version {self._setter_of(key)}"
            return out

    def history(self) -> list[dict[str, Any]]:
        """Every version, oldest first, starting with version 0 (the config file alone)."""
        with self._lock:
            zero: dict[str, Any] = {
                "version": 0,
                "time": None,
                "uid": None,
                "command": "config file",
                "changes": {},
                "overrides": {},
            }
            return [zero, *(v.to_json() for v in self._versions)]

    def get(self, number: int) -> Version:
        for v in self._versions:
            if v.number == number:
                return v
        raise UnknownVersion(f"settings version {number} does not exist (latest is {self.version})")

    # ----- changing --------------------------------------------------------------------------

    def set(self, changes: Mapping[str, Any], *, uid: int, command: str, note: str | None = None) -> Version:
        """Validate and record ``changes`` as a new version; nothing is written if any is bad."""
        if not changes:
            raise ValueError("no settings to change")
        with self._lock:
            clean = {key: self._validate(key, value) for key, value in changes.items()}
            overrides = {**self._overrides_at(self.version), **clean}
            return self._append(overrides, set(clean), uid=uid, command=command, note=note)

    def rollback(self, to: int | None = None, *, uid: int) -> Version:
        """Make version ``to`` (default: the one before the current) current again, as a new version.

        Rolling back twice therefore toggles between two states, like ``helm rollback``; the
        history keeps every step.
        """
        with self._lock:
            current = self.version
            if to is None:
                if current == 0:
                    raise NothingToRollback("nothing to roll back: no runtime settings have been changed")
                to = current - 1
            if to < 0 or to > current:
                raise UnknownVersion(f"settings version {to} does not exist (latest is {current})")
            target, now = self._overrides_at(to), self._overrides_at(current)
            if target == now:
                raise NothingToRollback(f"nothing to roll back: settings already equal version {to}")
            touched = {k for k in set(target) | set(now) if target.get(k, _MISSING) != now.get(k, _MISSING)}
            return self._append(target, touched, uid=uid, command="rollback", note=f"rollback to {to}")

    def annotate(self, version: int, validation: Mapping[str, Any]) -> None:
        """Attach a validation result (set-nfe --validate) to a recorded version."""
        with self._lock:
            old = self.get(version)
            new = dataclasses.replace(old, validation=dict(validation))
            self._commit([new if v.number == version else v for v in self._versions])

    def rebase(self, baseline: Mapping[str, Any], baseline_sources: Mapping[str, str] | None = None) -> None:
        """A reloaded config becomes the new baseline; runtime overrides stay on top of it."""
        with self._lock:
            self._baseline = dict(baseline)
            self._baseline_sources = dict(baseline_sources or {})

    # ----- persistence -----------------------------------------------------------------------

    def load(self) -> None:
        """Read settings.json; recover from the .bak copy, or start from the baseline, never crash."""
        with self._lock:
            main_err: Exception
            if self.path.exists():
                try:
                    self._versions = self._read(self.path)
                    return
                except (CorruptState, OSError) as exc:
                    main_err = exc
            elif self.bak_path.exists():
                # Someone removed settings.json by hand; the copy still holds the operator's changes.
                main_err = FileNotFoundError(f"{self.path} is missing")
            else:
                self._versions = []
                return
            self._recover(main_err)

    def _recover(self, main_err: Exception) -> None:
        try:
            versions = self._read(self.bak_path)
        except (CorruptState, OSError) as bak_err:
            kept = [self._set_aside(p) for p in (self.path, self.bak_path) if p.exists()]
            self._versions = []
            self._emit(
                "error", "settings_corrupt_using_config",
                message=f"{self.path} and {self.bak_path} are unreadable; using the config file alone. "
                f"The bad files are kept as {', '.join(kept)}",
                file=str(self.path), file_error=str(main_err),
                backup=str(self.bak_path), backup_error=str(bak_err), kept_aside=kept,
            )
            return
        kept_main = self._set_aside(self.path) if self.path.exists() else "(missing)"
        self._versions = versions
        # Write the recovered state back so settings.json is whole again at once.
        self._commit(versions)
        self._emit(
            "error", "settings_corrupt_recovered",
            message=f"{self.path} is unreadable ({main_err}); recovered version {self.version} "
            f"from {self.bak_path}; the bad file is kept as {kept_main}",
            file=str(self.path), file_error=str(main_err), backup=str(self.bak_path),
            version=self.version, kept_aside=kept_main,
        )

    def _set_aside(self, path: Path) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest = path.with_name(f"{path.name}.corrupt-{stamp}")
        n = 1
        while dest.exists():
            dest = path.with_name(f"{path.name}.corrupt-{stamp}.{n}")
            n += 1
        os.replace(path, dest)
        return str(dest)

    def _read(self, path: Path) -> list[Version]:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptState(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("versions"), list):
            raise CorruptState(f"{path}: expected an object with a 'versions' list")
        if doc.get("format") != FORMAT:
            raise CorruptState(f"{path}: unknown format {doc.get('format')!r} (expected {FORMAT})")
        versions = [self._parse_version(path, i, raw) for i, raw in enumerate(doc["versions"])]
        if [v.number for v in versions] != list(range(1, len(versions) + 1)):
            raise CorruptState(f"{path}: version numbers are not 1, 2, 3, ...")
        return versions

    def _parse_version(self, path: Path, index: int, raw: Any) -> Version:
        where = f"{path}: versions[{index}]"
        if not isinstance(raw, dict):
            raise CorruptState(f"{where}: not an object")
        known = {"version", "time", "uid", "command", "changes", "overrides", "note", "validation"}
        try:
            number, when, uid, command = raw["version"], raw["time"], raw["uid"], raw["command"]
            changes, overrides = raw["changes"], raw["overrides"]
        except KeyError as exc:
            raise CorruptState(f"{where}: missing {exc.args[0]!r}") from exc
        ok = (
            isinstance(number, int) and isinstance(when, str) and isinstance(uid, int)
            and isinstance(command, str) and isinstance(changes, dict) and isinstance(overrides, dict)
            and isinstance(raw.get("note"), (str, type(None)))
            and isinstance(raw.get("validation"), (dict, type(None)))
        )
        if not ok:
            raise CorruptState(f"{where}: a field has the wrong type")
        for key, value in overrides.items():
            try:
                overrides[key] = self._validate(key, value)
            except ValueError as exc:
                raise CorruptState(f"{where}: overrides: {exc}") from exc
        return Version(
            number=number, time=when, uid=uid, command=command, changes=changes, overrides=overrides,
            note=raw.get("note"), validation=raw.get("validation"),
            extra={k: v for k, v in raw.items() if k not in known},
        )

    def _append(
        self, overrides: dict[str, Any], touched: Iterable[str], *, uid: int, command: str, note: str | None
    ) -> Version:
        """Record ``overrides`` as the new current overlay; ``touched`` are the keys it changed."""
        before = self.effective()
        after = {**self._baseline, **overrides}
        changes = {k: {"old": before.get(k), "new": after.get(k)} for k in sorted(touched)}
        new = Version(
            number=self.version + 1, time=_utc_now(), uid=uid, command=command,
            changes=changes, overrides=overrides, note=note,
        )
        self._commit([*self._versions, new])
        return new

    def _commit(self, versions: list[Version]) -> None:
        """Persist ``versions`` and only then make them current (a failed write changes nothing)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The state before this change is the "last good copy".
        atomic_write(self.bak_path, _dump(self._versions))
        atomic_write(self.path, _dump(versions))
        self._versions = versions

    # ----- helpers -----------------------------------------------------------------------------

    def _validate(self, key: str, value: Any) -> Any:
        validator = self._allowed.get(key)
        if validator is None:
            settable = ", ".join(sorted(self._allowed)) or "none"
            raise UnknownSetting(f"{key!r} cannot be changed at run time (settable: {settable})")
        return validator(value)

    def _overrides_at(self, number: int) -> dict[str, Any]:
        if number == 0:
            return {}
        return dict(self.get(number).overrides)

    def _setter_of(self, key: str) -> int:
        """The latest version whose change gave ``key`` its current runtime value."""
        for v in reversed(self._versions):
            if key in v.changes:
                return v.number
        return self.version

    def _emit(self, level: str, event: str, **fields: Any) -> None:
        log = self._log
        if log is None:
            log = logging.getLogger(__name__)
        if isinstance(log, logging.Logger):
            text = fields.pop("message", event)
            getattr(log, level)("%s %s", text, json.dumps(fields, default=str))
        elif hasattr(log, level):
            getattr(log, level)(event, **fields)
        else:
            log(level, event, **fields)


def _dump(versions: list[Version]) -> bytes:
    doc = {"format": FORMAT, "versions": [v.to_json() for v in versions]}
    return (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode("utf-8")
