"""Self-check statistics, verdict rules, JSONL history and the suite's orchestration."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ishowttsd.config import SelfcheckConfig
from ishowttsd.engine.spec import SynthesisRequest
from ishowttsd.selfcheck import (
    HISTORY_WINDOW,
    MIN_HISTORY,
    STREAMING_CATEGORY,
    TEXTS,
    History,
    SelfcheckError,
    Timed,
    basic_stats,
    evaluate,
    format_history,
    format_report,
    percentile,
    repeat_cv,
    run_suite,
)

CONTEXT: dict[str, Any] = {
    "model": "tiny",
    "weights": "untrained",
    "precision": "fp32",
    "device": "cpu",
    "gpu_name": None,
    "clocks_locked": False,
    "power_mode": None,
    "daemon_version": "0.1.0",
}
THRESHOLDS = SelfcheckConfig()


def stats(mean: float = 0.2, peak: float = 0.22, cv: float | None = 0.02) -> dict[str, Any]:
    return {"rtf_mean": mean, "rtf_max": peak, "rtf_cv": cv}


def past_runs(n: int, mean: float, nfe: int = 7, ctx: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """History records shaped as run_suite writes them."""
    return [
        {"time": f"2025-01-{i + 1:02d}T00:00:00+00:00", "context": {**CONTEXT, "nfe": nfe, **(ctx or {})},
         "stats": stats(mean), "verdict": {"status": "pass"}}
        for i in range(n)
    ]


# --------------------------------------------------------------------------- statistics


def test_basic_stats_on_known_numbers() -> None:
    s = basic_stats([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s["mean"] == 3.0
    assert s["median"] == 3.0
    assert (s["min"], s["max"]) == (1.0, 5.0)
    assert s["p95"] == pytest.approx(4.8)
    assert s["std"] == pytest.approx(math.sqrt(2.5))  # sample std, n - 1
    assert s["cv"] == pytest.approx(math.sqrt(2.5) / 3.0)


def test_percentile_matches_numpy() -> None:
    values = [0.31, 0.12, 0.2, 0.25, 0.18, 0.22, 0.19]
    for q in (0, 50, 90, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_basic_stats_empty_and_single() -> None:
    assert basic_stats([])["mean"] is None
    assert basic_stats([0.2])["cv"] == 0.0


def test_repeat_cv_is_run_to_run_not_across_texts() -> None:
    # Two texts with very different RTFs but perfectly repeatable: no instability.
    assert repeat_cv([[0.5, 0.5, 0.5], [0.1, 0.1, 0.1]]) == 0.0
    # One text with cv 0.1414..., one with 0: root mean square is 0.1.
    assert repeat_cv([[0.9, 1.1], [1.0, 1.0]]) == pytest.approx(0.1)
    assert repeat_cv([[0.2], [0.3]]) is None  # no repeats, no CV


# --------------------------------------------------------------------------- verdict


def test_evaluate_passes_with_enough_comparable_history() -> None:
    v = evaluate(stats(), past_runs(10, 0.2), {**CONTEXT, "nfe": 7}, THRESHOLDS)
    assert v["status"] == "pass", v["reasons"]
    assert v["reasons"] == []
    assert v["baseline"]["median_rtf"] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"mean": 0.26}, "max_mean_rtf"),
        ({"peak": 0.31}, "max_rtf"),
        ({"cv": 0.11}, "max_cv"),
    ],
)
def test_evaluate_each_threshold_fails(kwargs: dict[str, float], needle: str) -> None:
    history = past_runs(10, kwargs.get("mean", 0.2))
    v = evaluate(stats(**kwargs), history, {**CONTEXT, "nfe": 7}, THRESHOLDS)
    assert v["status"] == "fail"
    assert len(v["failures"]) == 1
    assert needle in v["failures"][0]


def test_evaluate_lists_every_reason() -> None:
    v = evaluate(stats(mean=0.5, peak=0.6, cv=0.5), past_runs(10, 0.1), {**CONTEXT, "nfe": 7}, THRESHOLDS)
    assert len(v["failures"]) == 4
    text = " ".join(v["reasons"])
    for needle in ("max_mean_rtf", "max_rtf", "max_cv", "max_slowdown"):
        assert needle in text


def test_slowdown_against_ten_comparable_runs_twice_as_fast_fails() -> None:
    loose = dataclasses.replace(THRESHOLDS, max_mean_rtf=10.0, max_rtf=10.0)
    v = evaluate(stats(mean=0.2, peak=0.21), past_runs(HISTORY_WINDOW, 0.1), {**CONTEXT, "nfe": 7}, loose)
    assert v["status"] == "fail"
    assert any("comparable runs" in r and "+100%" in r for r in v["failures"])


def test_same_history_at_another_nfe_does_not_fail_but_warns() -> None:
    loose = dataclasses.replace(THRESHOLDS, max_mean_rtf=10.0, max_rtf=10.0)
    history = past_runs(HISTORY_WINDOW, 0.1, nfe=32)
    v = evaluate(stats(mean=0.2, peak=0.21), history, {**CONTEXT, "nfe": 7}, loose)
    assert v["status"] == "warn"
    assert v["failures"] == []
    assert any("only 0 comparable" in r and f"needs {MIN_HISTORY}" in r for r in v["warnings"])


@pytest.mark.parametrize("field", ["model", "weights", "precision", "device", "clocks_locked"])
def test_other_context_is_not_comparable(field: str) -> None:
    history = past_runs(HISTORY_WINDOW, 0.1, ctx={field: "something else"})
    v = evaluate(stats(mean=0.2, peak=0.21), history, {**CONTEXT, "nfe": 7}, THRESHOLDS)
    assert v["status"] == "warn"


def test_slowdown_uses_only_the_last_ten_comparable_runs() -> None:
    # Old slow runs beyond the window must not mask a regression against the recent fast ones.
    history = past_runs(20, 0.4) + past_runs(HISTORY_WINDOW, 0.1)
    v = evaluate(stats(mean=0.2, peak=0.21), history, {**CONTEXT, "nfe": 7}, THRESHOLDS)
    assert any("max_slowdown" in r for r in v["failures"])


def test_short_history_warns_with_count() -> None:
    v = evaluate(stats(), past_runs(4, 0.2), {**CONTEXT, "nfe": 7}, THRESHOLDS)
    assert v["status"] == "warn"
    assert any("4 of 10" in r for r in v["warnings"])


def test_unmeasured_cv_warns() -> None:
    v = evaluate(stats(cv=None), past_runs(10, 0.2), {**CONTEXT, "nfe": 7}, THRESHOLDS)
    assert v["status"] == "warn"
    assert any("repeats" in r for r in v["warnings"])


# --------------------------------------------------------------------------- history


def test_history_appends_whole_lines(tmp_path: Path) -> None:
    history = History(tmp_path / "state" / "selfcheck.jsonl")
    assert history.read() == []
    for i in range(3):
        history.append({"n": i, "text": "ünïcode"})
    raw = history.path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert [json.loads(line)["n"] for line in lines] == [0, 1, 2]
    assert [r["n"] for r in history.last(2)] == [1, 2]
    assert history.last(0) == []


def test_history_tolerates_a_truncated_last_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    history = History(tmp_path / "selfcheck.jsonl")
    history.append({"n": 1})
    history.append({"n": 2})
    with history.path.open("ab") as fh:
        fh.write(b'{"n": 3, "stats": {"rtf_me')  # power lost mid-write
    with caplog.at_level(logging.WARNING, logger="ishowttsd.selfcheck"):
        assert [r["n"] for r in history.read()] == [1, 2]
    assert any("truncated" in rec.getMessage() for rec in caplog.records)
    # The next append starts on a fresh line, so the new record survives whole.
    history.append({"n": 4})
    assert [r["n"] for r in history.read()] == [1, 2, 4]


def test_history_skips_garbage_and_non_objects(tmp_path: Path) -> None:
    path = tmp_path / "selfcheck.jsonl"
    path.write_bytes(b'{"n": 1}\n\xff\xfe\n[1, 2]\n\n{"n": 2}\n')
    assert [r["n"] for r in History(path).read()] == [1, 2]


def test_history_refuses_nan(tmp_path: Path) -> None:
    history = History(tmp_path / "selfcheck.jsonl")
    with pytest.raises(ValueError):
        history.append({"rtf": float("nan")})
    assert not history.path.exists() or history.path.read_bytes() == b""


# --------------------------------------------------------------------------- run_suite


class FakeEngine:
    """A pure function of the request: audio length from the text, cost from the NFE."""

    def __init__(self) -> None:
        self.calls: list[tuple[SynthesisRequest, bool]] = []
        self.served = 0

    def __call__(self, request: SynthesisRequest, streaming: bool) -> Timed:
        self.calls.append((request, streaming))
        audio = 0.5 + 0.06 * len(request.text)
        wall = audio * 0.02 * request.nfe  # RTF 0.14 at NFE 7
        return Timed(audio_seconds=audio, wall_seconds=wall, first_audio_seconds=0.05 if streaming else None)

    def traffic(self) -> int:
        # Every call to traffic_seen() finds one more live request served meanwhile.
        self.served += 1
        return self.served


def suite(engine: FakeEngine, **kwargs: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    thresholds = kwargs.pop("thresholds", dataclasses.replace(THRESHOLDS, repeats=2, warmup=1))
    record = run_suite(
        engine, voice_id="default", nfe=7, thresholds=thresholds, context=CONTEXT,
        progress=events.append, traffic_seen=engine.traffic, **kwargs,
    )
    return record, events


def test_run_suite_warms_up_then_repeats_every_text() -> None:
    engine = FakeEngine()
    record, events = suite(engine)
    n_texts = sum(len(t[:3]) for t in TEXTS.values())
    warmups = n_texts  # every text once per warm-up round, so no timed run is a first of its length
    assert len(engine.calls) == warmups + 2 * n_texts
    # Warm-up first, every text in the mode it is timed in.
    warm = engine.calls[:warmups]
    assert sorted(r.text for r, _ in warm) == sorted(t for ts in TEXTS.values() for t in ts[:3])
    assert all(streaming == (r.text in TEXTS[STREAMING_CATEGORY]) for r, streaming in warm)
    assert all(e["phase"] == "warmup" for e in events[:warmups])
    # Every timed text ran `repeats` times with the same seed and NFE.
    assert {(r.seed, r.nfe, r.voice_id) for r, _ in engine.calls} == {(1234, 7, "default")}
    assert len(record["texts"]) == n_texts
    assert all(len(t["runs"]) == 2 for t in record["texts"])
    # Only the streaming category runs in streaming mode.
    for t in record["texts"]:
        assert t["streaming"] == (t["category"] == STREAMING_CATEGORY)


def test_run_suite_progress_events() -> None:
    engine = FakeEngine()
    _, events = suite(engine)
    assert [e["done"] for e in events] == list(range(1, len(events) + 1))
    assert {e["total"] for e in events} == {len(events)}
    assert all(e["event"] == "progress" and len(e["text"]) <= 40 for e in events)
    assert {e["category"] for e in events if e["phase"] == "timed"} == set(TEXTS)


def test_run_suite_record() -> None:
    engine = FakeEngine()
    record, _ = suite(engine)
    json.dumps(record, allow_nan=False)  # JSON-able as the history needs it
    s = record["stats"]
    assert s["rtf_mean"] == pytest.approx(0.14)
    assert s["rtf_cv"] == pytest.approx(0.0)
    assert s["ttfa_mean"] == pytest.approx(0.05)
    assert s["audio_seconds_total"] > 0
    assert set(record["categories"]) == set(TEXTS)
    assert record["context"]["nfe"] == 7
    assert record["traffic"] == {"before": 1, "after": 2, "requests": 1, "interleaved": True}
    # No history: the slowdown rule could not run, which is a warning, not a failure.
    assert record["verdict"]["status"] == "warn"
    assert record["compare_nfe"] is None
    assert record["time"].endswith("+00:00")


def test_run_suite_compare_nfe_and_history() -> None:
    engine = FakeEngine()
    history = [{"context": {**CONTEXT, "nfe": 7}, "stats": stats(0.07)}] * 10
    record, _ = suite(engine, compare_nfe=32, history=history)
    assert record["compare_nfe"]["nfe"] == 32
    assert record["compare_nfe"]["speedup"] == pytest.approx(32 / 7)
    assert {r.nfe for r, _ in engine.calls} == {7, 32}
    assert record["verdict"]["status"] == "fail"  # twice as slow as the history
    assert any("max_slowdown" in r for r in record["verdict"]["reasons"])


def test_run_suite_rejects_empty_audio() -> None:
    def silent(request: SynthesisRequest, streaming: bool) -> Timed:
        return Timed(audio_seconds=0.0, wall_seconds=0.1, first_audio_seconds=None)

    with pytest.raises(SelfcheckError, match="no audio"):
        run_suite(silent, voice_id="default", nfe=7, thresholds=THRESHOLDS, context=CONTEXT,
                  progress=lambda e: None, traffic_seen=lambda: 0)


# --------------------------------------------------------------------------- output


def test_format_report_and_history() -> None:
    engine = FakeEngine()
    record, _ = suite(engine, compare_nfe=32)
    report = format_report(record)
    for cat in TEXTS:
        assert cat in report
    assert "verdict: WARN" in report
    assert "untrained" in report
    assert "NFE 32" in report
    table = format_history([record, record], last=1)
    assert len(table.splitlines()) == 3  # header, rule, one row
    assert "0.140" in table
    assert format_history([], last=5) == "no self-check history yet"


def test_plot_history_writes_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from ishowttsd.plots import plot_history

    records = past_runs(5, 0.2) + past_runs(3, 0.4, nfe=32) + [{"time": "garbage"}]
    out = plot_history(records, tmp_path / "trend.png", THRESHOLDS)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = plot_history([], tmp_path / "empty.png", THRESHOLDS)
    assert empty.stat().st_size > 0
