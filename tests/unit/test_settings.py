"""The versioned settings store: versions, rollback, persistence and recovery from bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ishowttsd.settings import (
    NothingToRollback,
    SettingsStore,
    UnknownSetting,
    UnknownVersion,
    has_epss,
    validate_nfe,
)

BASELINE = {"nfe": 7}


class RecordingLog:
    """A structlog-shaped logger that keeps what it was told."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append(("error", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))


def make(tmp_path: Path, log: RecordingLog | None = None, **kw: Any) -> SettingsStore:
    store = SettingsStore(tmp_path / "settings.json", BASELINE, log or RecordingLog(), **kw)
    store.load()
    return store


def test_fresh_store_is_the_baseline(tmp_path: Path) -> None:
    store = make(tmp_path, baseline_sources={"nfe": "default"})
    assert store.version == 0
    assert store.effective() == {"nfe": 7}
    assert store.sources() == {"nfe": "default"}
    assert not (tmp_path / "settings.json").exists()
    assert [v["version"] for v in store.history()] == [0]


def test_set_records_a_version_with_old_new_who_and_when(tmp_path: Path) -> None:
    store = make(tmp_path)
    v = store.set({"nfe": 6}, uid=1000, command="set-nfe 6")
    assert v.number == 1 and store.version == 1
    assert v.changes == {"nfe": {"old": 7, "new": 6}}
    assert store.effective() == {"nfe": 6}
    assert store.sources() == {"nfe": "runtime version 1"}
    rec = store.history()[1]
    assert rec["uid"] == 1000 and rec["command"] == "set-nfe 6"
    assert rec["time"].endswith("Z") and "T" in rec["time"]


@pytest.mark.parametrize("bad", [0, 65, "six", 6.0, True, None])
def test_bad_values_are_refused_and_nothing_is_written(tmp_path: Path, bad: Any) -> None:
    store = make(tmp_path)
    with pytest.raises(ValueError, match="nfe"):
        store.set({"nfe": bad}, uid=0, command="set-nfe")
    assert store.version == 0 and not (tmp_path / "settings.json").exists()


def test_unknown_keys_are_refused_naming_the_settable_ones(tmp_path: Path) -> None:
    store = make(tmp_path)
    with pytest.raises(UnknownSetting, match="settable: nfe"):
        store.set({"speed": 2}, uid=0, command="x")


def test_store_is_generic_over_allowed_keys(tmp_path: Path) -> None:
    def speed(v: Any) -> float:
        if not isinstance(v, (int, float)) or not 0.25 <= v <= 4:
            raise ValueError("speed must be from 0.25 to 4")
        return float(v)

    store = SettingsStore(tmp_path / "s.json", {"nfe": 7, "speed": 1.0}, RecordingLog(),
                          allowed={"nfe": validate_nfe, "speed": speed})
    store.load()
    store.set({"speed": 2}, uid=0, command="set speed")
    store.set({"nfe": 8}, uid=0, command="set nfe")
    assert store.effective() == {"nfe": 8, "speed": 2.0}
    assert store.sources() == {"nfe": "runtime version 2", "speed": "runtime version 1"}
    store.rollback(to=1, uid=0)
    assert store.effective() == {"nfe": 7, "speed": 2.0}
    assert store.history()[-1]["changes"] == {"nfe": {"old": 8, "new": 7}}


def test_rollback_is_a_new_version_and_history_is_kept(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.set({"nfe": 6}, uid=1000, command="set-nfe 6")
    v = store.rollback(None, uid=0)
    assert v.number == 2 and v.note == "rollback to 0"
    assert v.changes == {"nfe": {"old": 6, "new": 7}}
    assert store.effective() == {"nfe": 7}
    # Back to the config file's value: the source says so, not "runtime".
    assert store.sources() == {"nfe": "config file"}
    assert [h["version"] for h in store.history()] == [0, 1, 2]
    # A second rollback goes to the version before the current one (1): it toggles.
    store.rollback(None, uid=0)
    assert store.effective() == {"nfe": 6} and store.version == 3


def test_rollback_to_a_named_version(tmp_path: Path) -> None:
    store = make(tmp_path)
    for n in (6, 5, 4):
        store.set({"nfe": n}, uid=0, command=f"set-nfe {n}")
    v = store.rollback(to=1, uid=0)
    assert store.effective() == {"nfe": 6} and v.number == 4 and v.note == "rollback to 1"
    assert store.sources() == {"nfe": "runtime version 4"}
    with pytest.raises(UnknownVersion):
        store.rollback(to=9, uid=0)
    with pytest.raises(UnknownVersion):
        store.rollback(to=-1, uid=0)


def test_nothing_to_rollback(tmp_path: Path) -> None:
    store = make(tmp_path)
    with pytest.raises(NothingToRollback, match="nothing to roll back"):
        store.rollback(None, uid=0)
    store.set({"nfe": 6}, uid=0, command="set-nfe 6")
    with pytest.raises(NothingToRollback):
        store.rollback(to=1, uid=0)  # already the current state
    assert store.version == 1


def test_settings_survive_a_new_store_on_the_same_path(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.set({"nfe": 6}, uid=1000, command="set-nfe 6")
    store.annotate(1, {"ok": True, "reasons": []})
    again = make(tmp_path)
    assert again.version == 1 and again.effective() == {"nfe": 6}
    assert again.history() == store.history()
    assert again.history()[1]["validation"] == {"ok": True, "reasons": []}


def test_rebase_keeps_runtime_overrides_over_a_new_config(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.set({"nfe": 6}, uid=0, command="set-nfe 6")
    store.rebase({"nfe": 10}, {"nfe": "config file"})
    assert store.effective() == {"nfe": 6}
    store.rollback(to=0, uid=0)
    assert store.effective() == {"nfe": 10} and store.sources() == {"nfe": "config file"}


def test_truncated_file_is_recovered_from_the_last_good_copy(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.set({"nfe": 6}, uid=0, command="set-nfe 6")
    store.set({"nfe": 5}, uid=0, command="set-nfe 5")
    main = tmp_path / "settings.json"
    main.write_bytes(main.read_bytes()[:40])  # power loss mid-write (without our atomic rename)
    log = RecordingLog()
    again = make(tmp_path, log)
    # The copy holds the state before the last write: version 1.
    assert again.version == 1 and again.effective() == {"nfe": 6}
    (level, event, fields), = log.lines
    assert level == "error" and event == "settings_corrupt_recovered"
    assert str(main) in fields["message"] and str(tmp_path / "settings.json.bak") in fields["message"]
    # The bad file is kept for the operator, and settings.json is whole again.
    assert len(list(tmp_path.glob("settings.json.corrupt-*"))) == 1
    assert json.loads(main.read_text())["versions"][-1]["version"] == 1


def test_both_files_corrupt_start_from_baseline_and_keep_the_bad_files(tmp_path: Path) -> None:
    (tmp_path / "settings.json").write_text('{"format": 1, "versions": [')
    (tmp_path / "settings.json.bak").write_text("not json at all")
    log = RecordingLog()
    store = make(tmp_path, log)
    assert store.version == 0 and store.effective() == BASELINE
    (level, event, fields), = log.lines
    assert level == "error" and event == "settings_corrupt_using_config"
    assert "settings.json and" in fields["message"] and "settings.json.bak" in fields["message"]
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert sorted(n.split(".corrupt-")[0] for n in kept) == ["settings.json", "settings.json.bak"]
    assert all(".corrupt-" in n for n in kept)
    # The store works on: the next change writes fresh files beside the kept bad ones.
    store.set({"nfe": 6}, uid=0, command="set-nfe 6")
    assert make(tmp_path).effective() == {"nfe": 6}


@pytest.mark.parametrize(
    "text",
    [
        '{"format": 1, "versions": [{"version": 1}]}',  # missing fields
        '{"format": 99, "versions": []}',  # a future format
        '[1, 2]',
        '{"format": 1, "versions": [{"version": 1, "time": "t", "uid": 0, "command": "c",'
        ' "changes": {}, "overrides": {"nfe": 500}}]}',  # a value the validator refuses
        '{"format": 1, "versions": [{"version": 2, "time": "t", "uid": 0, "command": "c",'
        ' "changes": {}, "overrides": {}}]}',  # numbering gap
    ],
)
def test_wrong_shapes_count_as_corrupt(tmp_path: Path, text: str) -> None:
    (tmp_path / "settings.json").write_text(text)
    log = RecordingLog()
    store = make(tmp_path, log)
    assert store.version == 0 and log.lines and log.lines[0][0] == "error"


def test_missing_main_file_falls_back_to_the_copy(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.set({"nfe": 6}, uid=0, command="set-nfe 6")
    store.set({"nfe": 5}, uid=0, command="set-nfe 5")
    (tmp_path / "settings.json").unlink()
    log = RecordingLog()
    again = make(tmp_path, log)
    assert again.effective() == {"nfe": 6} and log.lines[0][0] == "error"


def test_atomic_writes_leave_only_the_file_and_one_copy(tmp_path: Path) -> None:
    store = make(tmp_path)
    for n in (6, 5, 4):
        store.set({"nfe": n}, uid=0, command=f"set-nfe {n}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json", "settings.json.bak"]
    bak = json.loads((tmp_path / "settings.json.bak").read_text())
    assert [v["version"] for v in bak["versions"]] == [1, 2]


def test_a_failed_write_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = make(tmp_path)
    store.set({"nfe": 6}, uid=0, command="set-nfe 6")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", broken_fsync)
    with pytest.raises(OSError):
        store.set({"nfe": 5}, uid=0, command="set-nfe 5")
    monkeypatch.undo()
    assert store.version == 1 and store.effective() == {"nfe": 6}
    assert not list(tmp_path.glob("*.tmp"))
    assert make(tmp_path).effective() == {"nfe": 6}


def test_stdlib_logger_and_plain_callable_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "settings.json").write_text("garbage")
    seen: list[tuple[str, str]] = []
    store = SettingsStore(tmp_path / "settings.json", BASELINE,
                          lambda level, event, **f: seen.append((level, event)))
    store.load()
    assert seen == [("error", "settings_corrupt_using_config")]
    import logging

    (tmp_path / "settings.json").write_text("garbage")
    SettingsStore(tmp_path / "settings.json", BASELINE, logging.getLogger("t")).load()


def test_epss_steps() -> None:
    assert has_epss(6) and has_epss(16) and not has_epss(8)
