"""The objective NFE distance, audio checks, the gate and the human ratings rules."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import pytest

from ishowttsd.config import QualityConfig
from ishowttsd.engine.spec import SynthesisRequest
from ishowttsd.quality import (
    RATINGS_SCHEMA,
    UNTRAINED_NOTE,
    RatingsError,
    audio_checks,
    compare_audio,
    compare_nfe,
    gate,
    log_mel_distance,
    summarise_ratings,
    verdict_text,
)

SR = 24000


def voiced(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """A speech-like test signal: harmonics of a gliding pitch under a syllable envelope."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 3 * t))
    noise = np.random.default_rng(seed).normal(0, 0.002, t.size)
    return np.asarray(0.1 * x * envelope + noise)


def test_distance_is_zero_for_identical_audio() -> None:
    a = voiced()
    assert log_mel_distance(a, a.copy(), SR) == 0.0
    assert log_mel_distance(np.zeros(SR), np.zeros(SR), SR) == 0.0


def test_distance_grows_with_perturbation() -> None:
    a = voiced()
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, a.size)
    distances = [log_mel_distance(a, a + level * noise, SR) for level in (0.0005, 0.002, 0.008, 0.03, 0.1)]
    assert all(d > 0 for d in distances)
    assert distances == sorted(distances), distances


def test_distance_is_symmetric_and_ignores_gain() -> None:
    a, b = voiced(seed=0), voiced(seed=0) + 0.01 * np.random.default_rng(3).normal(size=int(1.5 * SR))
    assert log_mel_distance(a, b, SR) == pytest.approx(log_mel_distance(b, a, SR))
    # c0 (loudness) is left out: the same sound 6 dB quieter is (nearly) the same spectrum.
    assert log_mel_distance(a, 0.5 * a, SR) < 0.5


def test_distance_handles_lengths_channels_and_short_clips() -> None:
    a = voiced(1.0)
    assert log_mel_distance(a, np.concatenate([a, np.zeros(SR)]), SR) == 0.0  # cut to the shorter
    stereo = np.stack([a, a], axis=1)
    assert log_mel_distance(stereo, a, SR) == 0.0
    assert log_mel_distance(a[:100], a[:100] * -1.0 + 0.01, SR) >= 0.0
    assert log_mel_distance(voiced(1.0, seed=0), voiced(1.0, seed=0), 16000) == 0.0


def test_compare_audio_reports_duration_mismatch() -> None:
    a = voiced(1.0)
    result = compare_audio(a, np.concatenate([a, a[:2400]]), SR)
    assert result["duration_equal"] is False
    assert result["duration_delta_s"] == pytest.approx(-0.1)


def test_audio_checks() -> None:
    audio = np.concatenate([np.zeros(SR), 0.5 * np.ones(SR)])
    audio[10] = np.nan
    audio[SR : SR + 240] = 1.0
    checks = audio_checks(audio, SR)
    assert checks["non_finite"] == 1
    assert checks["duration_s"] == pytest.approx(2.0)
    assert checks["silence_ratio"] == pytest.approx(0.5)
    assert checks["clipping_ratio"] == pytest.approx(240 / (2 * SR))


def converging_engine(calls: list[SynthesisRequest]) -> Any:
    """Audio that converges as the NFE grows: the error shrinks like 1/NFE, same seed, same noise."""

    def synthesize(request: SynthesisRequest) -> np.ndarray:
        calls.append(request)
        base = voiced(0.5 + 0.02 * len(request.text), seed=request.seed or 0)
        error = np.random.default_rng(request.seed).normal(0, 1, base.size)
        return np.asarray(base + error * (0.05 / request.nfe))

    return synthesize


TEXTS = {"short": ("Hello there!", "Thanks."), "long": ("A much longer sentence for the test.",)}


def test_compare_nfe_summary() -> None:
    calls: list[SynthesisRequest] = []
    events: list[dict[str, Any]] = []
    result = compare_nfe(
        converging_engine(calls), texts=TEXTS, voice_id="default", candidate_nfe=6, reference_nfe=32,
        seed=7, sample_rate=SR, untrained=True, progress=events.append,
    )
    assert {(r.nfe, r.seed) for r in calls} == {(6, 7), (32, 7)}
    assert len(result["texts"]) == 3
    assert set(result["categories"]) == {"short", "long"}
    assert result["categories"]["short"]["texts"] == 2
    worst = max(e["distance_db"] for e in result["texts"])
    assert result["worst_distance_db"] == worst
    assert result["worst_text"]["id"] in {e["id"] for e in result["texts"]}
    assert all(e["duration_equal"] for e in result["texts"])
    assert result["note"] == UNTRAINED_NOTE
    assert [e["done"] for e in events] == [1, 2, 3]


def test_compare_nfe_distance_shrinks_towards_the_reference() -> None:
    calls: list[SynthesisRequest] = []
    means = [
        compare_nfe(converging_engine(calls), texts=TEXTS, voice_id="v", candidate_nfe=nfe, reference_nfe=32,
                    seed=1, sample_rate=SR, untrained=False)["mean_distance_db"]
        for nfe in (16, 8, 4)
    ]
    assert means == sorted(means)


def test_compare_nfe_on_pair_hook_adds_fields() -> None:
    seen: list[tuple[str, int, int]] = []

    def hook(entry: dict[str, Any], cand: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
        seen.append((entry["id"], cand.size, ref.size))
        return {"candidate_wav": f"{entry['id']}.wav"}

    result = compare_nfe(converging_engine([]), texts=TEXTS, voice_id="v", candidate_nfe=6, reference_nfe=32,
                         seed=1, sample_rate=SR, untrained=False, on_pair=hook)
    assert [s[0] for s in seen] == ["short-1", "short-2", "long-1"]
    assert result["texts"][0]["candidate_wav"] == "short-1.wav"
    assert result["note"] is None


# --------------------------------------------------------------------------- gate


def comparison(**overrides: Any) -> dict[str, Any]:
    result = compare_nfe(converging_engine([]), texts=TEXTS, voice_id="v", candidate_nfe=6, reference_nfe=32,
                         seed=1, sample_rate=SR, untrained=False)
    result.update(overrides)
    return result


def test_gate_passes_when_loose_and_fails_when_strict() -> None:
    result = comparison()
    assert gate(result, QualityConfig(max_distance=100.0, max_worst_distance=100.0)) == {
        "status": "pass", "reasons": [], "notes": []
    }
    strict = gate(result, QualityConfig(max_distance=0.0, max_worst_distance=0.0))
    assert strict["status"] == "fail"
    assert any("max_distance" in r for r in strict["reasons"])
    assert any("max_worst_distance" in r for r in strict["reasons"])


def test_gate_fails_on_broken_audio_and_duration() -> None:
    result = comparison()
    loose = QualityConfig(max_distance=100.0, max_worst_distance=100.0)
    broken = copy.deepcopy(result)
    broken["texts"][0]["candidate"]["non_finite"] = 3
    broken["texts"][1]["duration_equal"] = False
    broken["texts"][1]["duration_delta_s"] = 0.2
    broken["texts"][2]["candidate"]["silence_ratio"] = 0.9
    broken["texts"][2]["candidate"]["clipping_ratio"] = 0.05
    verdict = gate(broken, loose)
    assert verdict["status"] == "fail"
    text = " | ".join(verdict["reasons"])
    for needle in ("non-finite", "durations differ", "silent", "clips"):
        assert needle in text


def test_gate_fails_with_nothing_compared() -> None:
    assert gate({"texts": [], "mean_distance_db": None, "worst_distance_db": None}, QualityConfig())["status"] == "fail"


def test_gate_passes_the_untrained_note_on() -> None:
    result = comparison(untrained=True, note=UNTRAINED_NOTE)
    v = gate(result, dataclasses.replace(QualityConfig(), max_distance=100.0, max_worst_distance=100.0))
    assert v["notes"] == [UNTRAINED_NOTE]


# --------------------------------------------------------------------------- ratings


def side(n: int = 4, c: int = 4, p: int = 4, artifacts: bool = False) -> dict[str, Any]:
    return {"naturalness": n, "clarity": c, "prosody": p, "artifacts": artifacts, "notes": ""}


def ratings(items: list[tuple[dict[str, Any], dict[str, Any]]], decision: str | None = "accept") -> dict[str, Any]:
    return {
        "schema": RATINGS_SCHEMA,
        "candidate_nfe": 6,
        "reference_nfe": 7,
        "seed": 1,
        "untrained": False,
        "items": [
            {"id": f"t-{i}", "category": "short", "text": "x", "order": {"A": "candidate", "B": "reference"},
             "candidate": cand, "reference": ref}
            for i, (cand, ref) in enumerate(items, start=1)
        ],
        "overall": {"decision": decision, "notes": ""},
    }


def test_ratings_accept() -> None:
    summary = summarise_ratings(ratings([(side(4, 5, 4), side(5, 5, 4)), (side(5, 4, 4), side(5, 4, 4))]))
    assert summary["decision"] == "ACCEPT", summary["reasons"]
    assert summary["drop"] == pytest.approx((13.5 - 13.0) / 13.5)
    text = verdict_text(summary)
    assert text.startswith("ACCEPT: NFE 6 against NFE 7")
    assert "naturalness" in text


def test_ratings_accept_without_rater_decision() -> None:
    assert summarise_ratings(ratings([(side(), side())], decision=None))["decision"] == "ACCEPT"


@pytest.mark.parametrize(
    ("items", "decision", "needle"),
    [
        ([(side(artifacts=True), side())], "accept", "artifacts"),
        ([(side(4, 4, 4), side(5, 5, 5))], "accept", "subjective drop"),
        ([(side(3, 5, 5), side(3, 5, 5))], "accept", "naturalness"),
        ([(side(), side()), (side(None, 4, 4), side())], "accept", "not fully rated"),  # type: ignore[arg-type]
        ([(side(), side())], "reject", "rater chose reject"),
        ([], None, "no pair"),
    ],
)
def test_ratings_reject_reasons(items: list[Any], decision: str | None, needle: str) -> None:
    summary = summarise_ratings(ratings(items, decision))
    assert summary["decision"] == "REJECT"
    assert any(needle in r for r in summary["reasons"]), summary["reasons"]
    assert verdict_text(summary).startswith("REJECT")


def test_ratings_drop_just_under_ten_percent_accepts() -> None:
    # reference 5,5,5 (15) against 5,5,4 (14): a 6.7 % drop.
    assert summarise_ratings(ratings([(side(5, 5, 4), side(5, 5, 5))]))["decision"] == "ACCEPT"


def test_artifacts_in_both_clips_are_a_note_not_a_rejection() -> None:
    summary = summarise_ratings(ratings([(side(artifacts=True), side(artifacts=True))]))
    assert summary["decision"] == "ACCEPT"
    assert any("both clips" in n for n in summary["notes"])


def test_rater_accept_overruled_by_rules_is_noted() -> None:
    summary = summarise_ratings(ratings([(side(3, 3, 3), side(5, 5, 5))], "accept"))
    assert summary["decision"] == "REJECT"
    assert any("rater chose accept" in n for n in summary["notes"])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.update(schema="something/2"),
        lambda r: r.update(items="nope"),
        lambda r: r["items"][0]["candidate"].update(naturalness=6),
        lambda r: r["items"][0]["candidate"].update(clarity=2.5),
        lambda r: r["items"][0]["candidate"].update(prosody=True),
        lambda r: r["items"][0]["reference"].update(artifacts="maybe"),
        lambda r: r["items"][0].update(reference=None),
    ],
)
def test_malformed_ratings_raise(mutate: Any) -> None:
    data = ratings([(side(), side())])
    mutate(data)
    with pytest.raises(RatingsError):
        summarise_ratings(data)
