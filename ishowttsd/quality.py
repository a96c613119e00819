"""NFE quality guard: an objective distance to a high-NFE reference, and the human ratings rules.

This module imports neither torch nor f5_tts (numpy only): the daemon hands
:func:`compare_nfe` a ``synthesize_audio`` callable that returns the engine's mono float
audio for a :class:`~ishowttsd.engine.spec.SynthesisRequest`.

The distance
------------
:func:`log_mel_distance` is a **mel-cepstral distortion (MCD) in dB**, computed frame by frame:

1. STFT with a Hann window, ``n_fft`` 1024 and hop 256 at 24 kHz (scaled with the rate);
2. power spectrum onto 80 triangular mel bands (Slaney mel scale, 0 Hz to Nyquist);
3. natural log, with one shared floor 80 dB under the louder signal's peak band energy, so
   silence in both signals compares equal and the measure is symmetric;
4. DCT-II (orthonormal) over the bands, keeping cepstra c1..c13 (c0, the loudness, is
   dropped: the engine normalises loudness anyway);
5. per frame ``(10 / ln 10) * sqrt(2 * sum_d (c_d - c'_d)^2)``, averaged over frames.

It is 0 for identical audio and grows as the spectral envelopes part.  There is no dynamic
time warping: the same text, voice and seed give both NFEs the same duration and the same
initial noise, so the outputs are time-aligned by construction, and a timing change is part
of what should be measured.  If lengths differ anyway, both are cut to the shorter one and
the mismatch is reported separately (``duration_equal``, and the gate fails on it).

Calibrating the gate on a real checkpoint
-----------------------------------------
The defaults (``[quality] max_distance = 3.0``, ``max_worst_distance = 5.0`` dB) are a
starting point, not truth.  On the checkpoint you serve:

1. run ``ishowtts-admin quality-samples --nfe 16 --against 32`` and note the mean and worst
   distance: 16 steps is generally indistinguishable from 32, so this is the
   "no audible change" scale;
2. run it for the NFE you want (e.g. ``--nfe 6 --against 32``), listen to the page, and rate;
3. if the ratings ACCEPT, set ``max_distance`` a little above that NFE's mean distance (and
   ``max_worst_distance`` above its worst); if they REJECT, set it between the 16-vs-32
   distance and that NFE's distance.

With **untrained** (random) weights the output is noise, and the distance measures only how
far the ODE solver is from its converged (reference NFE) answer, not how speech sounds.
Every result made from untrained weights says so.

The ratings (what the listening page downloads)
-----------------------------------------------
``ratings.json`` (schema ``"ishowtts.ratings/1"``)::

    {
      "schema": "ishowtts.ratings/1",
      "candidate_nfe": 6, "reference_nfe": 7, "seed": 1234, "untrained": false,
      "created": "2025-10-01T12:00:00Z", "rater": "optional name",
      "items": [
        {
          "id": "short-1", "category": "short", "text": "Hello there!", "distance_db": 1.2,
          "order": {"A": "candidate", "B": "reference"},   # what the blind players were
          "candidate": {"naturalness": 4, "clarity": 5, "prosody": 4, "artifacts": false, "notes": ""},
          "reference": {"naturalness": 4, "clarity": 5, "prosody": 4, "artifacts": false, "notes": ""}
        }
      ],
      "overall": {"decision": "accept" | "reject" | null, "notes": ""}
    }

Scores are integers 1..5, or null while unrated.  :func:`summarise_ratings` applies the
seed's rules and :func:`verdict_text` prints them: **ACCEPT** only when every pair is rated,
the candidate shows no obvious artifacts the reference lacks, the subjective drop (mean of
naturalness, clarity and prosody, candidate against reference) is under 10 %, the
candidate's mean naturalness is at least 4/5, and the rater did not choose reject.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ishowttsd.config import QualityConfig
from ishowttsd.engine.spec import SAMPLE_RATE, SynthesisRequest
from ishowttsd.selfcheck import suite_texts

N_MELS = 80
N_CEPSTRA = 13
FLOOR_DB = 80.0
METHOD = (
    "mel-cepstral distortion (dB): c1..c13 of an 80-band log-mel spectrum, "
    "n_fft 1024 / hop 256 at 24 kHz, frame-aligned, no DTW"
)
UNTRAINED_NOTE = (
    "untrained weights: the audio is noise, so the distance measures only how far the solver "
    "is from convergence at the reference NFE, not how the speech sounds"
)
# Audio checks: what counts as silence and clipping.
SILENCE_FRAME_S = 0.02
SILENCE_DBFS = -60.0
CLIP_LEVEL = 0.999
# The gate's fixed audio rules, relative to the reference so that NFE is what they judge.
MAX_EXTRA_CLIPPING = 0.001
MAX_EXTRA_SILENCE = 0.25

RATINGS_SCHEMA = "ishowtts.ratings/1"
CRITERIA = ("naturalness", "clarity", "prosody")
MAX_DROP = 0.10
MIN_NATURALNESS = 4.0

SynthesizeAudio = Callable[[SynthesisRequest], np.ndarray]
Progress = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------- the distance


def _mono(audio: np.ndarray) -> np.ndarray:
    """Float64 mono; (frames, channels) is averaged; NaN/inf become 0 (audio_checks counts them)."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1:
        raise ValueError(f"audio must be 1-D (or frames x channels), got shape {x.shape}")
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def _frames(sample_rate: int) -> tuple[int, int]:
    """n_fft and hop: 1024 and 256 at 24 kHz, scaled (power of two) for other rates."""
    n_fft = 1 << max(6, round(math.log2(1024 * sample_rate / 24000)))
    return n_fft, n_fft // 4


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    lin = hz / f_sp
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-9) / min_log_hz) / logstep, lin)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft//2+1) triangular filters, area-normalised as Slaney's."""
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(0.0, float(_hz_to_mel(np.array(sample_rate / 2.0))), n_mels + 2))
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def mel_power(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(frames, n_mels) mel-band power of mono audio (zero-padded to one frame if shorter)."""
    n_fft, hop = _frames(sample_rate)
    x = _mono(audio)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    count = 1 + (len(x) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][:count]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2
    return np.asarray(spectrum @ mel_filterbank(sample_rate, n_fft).T)


def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II rows 0..n_out-1 (numpy only, no scipy needed)."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * math.sqrt(2.0 / n_in)
    basis[0] /= math.sqrt(2.0)
    return basis


def log_mel_distance(a: np.ndarray, b: np.ndarray, sample_rate: int) -> float:
    """Mel-cepstral distortion in dB between two clips (see the module docstring).

    0.0 for identical audio; symmetric; both clips are cut to the shorter length.
    """
    x, y = _mono(a), _mono(b)
    n = min(len(x), len(y))
    pa, pb = mel_power(x[:n], sample_rate), mel_power(y[:n], sample_rate)
    peak = max(float(pa.max(initial=0.0)), float(pb.max(initial=0.0)))
    if peak <= 0.0:
        return 0.0  # both silent
    floor = peak * 10.0 ** (-FLOOR_DB / 10.0)
    dct = _dct_matrix(N_MELS, N_CEPSTRA + 1)[1:]
    ca = np.log(np.maximum(pa, floor)) @ dct.T
    cb = np.log(np.maximum(pb, floor)) @ dct.T
    per_frame = (10.0 / math.log(10.0)) * np.sqrt(2.0 * np.sum((ca - cb) ** 2, axis=1))
    return float(per_frame.mean())


def audio_checks(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> dict[str, Any]:
    """Non-finite samples, silence ratio (20 ms frames under -60 dBFS RMS), clipping ratio, duration."""
    raw = np.asarray(audio, dtype=np.float64)
    non_finite = int(raw.size - np.count_nonzero(np.isfinite(raw)))
    x = _mono(raw)
    frame = max(1, int(SILENCE_FRAME_S * sample_rate))
    usable = len(x) // frame * frame
    if usable:
        rms = np.sqrt(np.mean(x[:usable].reshape(-1, frame) ** 2, axis=1))
        silence = float(np.mean(rms < 10.0 ** (SILENCE_DBFS / 20.0)))
    else:
        silence = 1.0
    return {
        "duration_s": len(x) / sample_rate,
        "non_finite": non_finite,
        "silence_ratio": silence,
        "clipping_ratio": float(np.mean(np.abs(x) >= CLIP_LEVEL)) if len(x) else 0.0,
        "peak": float(np.max(np.abs(x))) if len(x) else 0.0,
        "rms": float(np.sqrt(np.mean(x**2))) if len(x) else 0.0,
    }


def compare_audio(candidate: np.ndarray, reference: np.ndarray, sample_rate: int) -> dict[str, Any]:
    """Distance plus both clips' checks and whether their durations agree (to one sample)."""
    cand, ref = audio_checks(candidate, sample_rate), audio_checks(reference, sample_rate)
    return {
        "distance_db": log_mel_distance(candidate, reference, sample_rate),
        "duration_equal": len(_mono(candidate)) == len(_mono(reference)),
        "duration_delta_s": cand["duration_s"] - ref["duration_s"],
        "candidate": cand,
        "reference": ref,
    }


# --------------------------------------------------------------------------- NFE comparison


def compare_nfe(
    synthesize_audio: SynthesizeAudio,
    *,
    texts: Mapping[str, Sequence[str]] | None = None,
    voice_id: str,
    candidate_nfe: int,
    reference_nfe: int,
    seed: int,
    sample_rate: int = SAMPLE_RATE,
    untrained: bool,
    progress: Progress | None = None,
    request_fields: Mapping[str, Any] | None = None,
    on_pair: Callable[[dict[str, Any], np.ndarray, np.ndarray], Mapping[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Synthesise every text at both NFEs with the same seed and measure how far apart they are.

    ``texts`` maps category -> texts (default: the self-check suite, 3 per category).
    ``on_pair(entry, candidate_audio, reference_audio)`` may write the audio somewhere (the
    listening page does) and return extra fields to store in the entry.
    """
    if texts is None:
        texts = suite_texts(3)
    fields = dict(request_fields or {})
    jobs = [(cat, i, text) for cat, items in texts.items() for i, text in enumerate(items, start=1)]
    entries: list[dict[str, Any]] = []
    for done, (cat, index, text) in enumerate(jobs, start=1):
        audio = {
            nfe: synthesize_audio(SynthesisRequest(text=text, voice_id=voice_id, nfe=nfe, seed=seed, **fields))
            for nfe in (candidate_nfe, reference_nfe)
        }
        entry: dict[str, Any] = {"id": f"{cat}-{index}", "category": cat, "text": text}
        entry.update(compare_audio(audio[candidate_nfe], audio[reference_nfe], sample_rate))
        if on_pair is not None:
            entry.update(on_pair(entry, audio[candidate_nfe], audio[reference_nfe]) or {})
        entries.append(entry)
        if progress is not None:
            progress(
                {"event": "progress", "phase": "quality", "done": done, "total": len(jobs),
                 "category": cat, "text": text[:40]}
            )
    return _summarise_comparison(entries, candidate_nfe, reference_nfe, seed, sample_rate, untrained)


def _summarise_comparison(
    entries: list[dict[str, Any]], candidate_nfe: int, reference_nfe: int, seed: int, sample_rate: int,
    untrained: bool,
) -> dict[str, Any]:
    categories: dict[str, dict[str, Any]] = {}
    for cat in dict.fromkeys(e["category"] for e in entries):
        ds = [e["distance_db"] for e in entries if e["category"] == cat]
        categories[cat] = {"texts": len(ds), "mean_distance_db": statistics.fmean(ds), "max_distance_db": max(ds)}
    worst = max(entries, key=lambda e: e["distance_db"], default=None)
    return {
        "kind": "quality",
        "candidate_nfe": candidate_nfe,
        "reference_nfe": reference_nfe,
        "seed": seed,
        "sample_rate": sample_rate,
        "method": METHOD,
        "untrained": untrained,
        "note": UNTRAINED_NOTE if untrained else None,
        "texts": entries,
        "categories": categories,
        "mean_distance_db": statistics.fmean(e["distance_db"] for e in entries) if entries else None,
        "worst_distance_db": worst["distance_db"] if worst else None,
        "worst_text": {"id": worst["id"], "text": worst["text"]} if worst else None,
    }


def gate(result: Mapping[str, Any], cfg: QualityConfig) -> dict[str, Any]:
    """Pass only when the distances are within bounds and no clip is broken; list every reason."""
    reasons: list[str] = []
    mean, worst = result.get("mean_distance_db"), result.get("worst_distance_db")
    if mean is None or worst is None:
        reasons.append("no texts were compared")
    else:
        if mean > cfg.max_distance:
            reasons.append(f"mean distance {mean:.2f} dB is above max_distance {cfg.max_distance:g} dB")
        if worst > cfg.max_worst_distance:
            text = (result.get("worst_text") or {}).get("id", "?")
            reasons.append(
                f"worst distance {worst:.2f} dB ({text}) is above max_worst_distance {cfg.max_worst_distance:g} dB"
            )
    for entry in result.get("texts", []):
        reasons.extend(_entry_reasons(entry))
    status = "fail" if reasons else "pass"
    notes = [result["note"]] if result.get("note") else []
    return {"status": status, "reasons": reasons, "notes": notes}


def _entry_reasons(entry: Mapping[str, Any]) -> list[str]:
    cand, ref, name = entry["candidate"], entry["reference"], entry.get("id", entry.get("text", "?")[:30])
    out = []
    if cand["non_finite"] or ref["non_finite"]:
        out.append(f"{name}: non-finite samples (candidate {cand['non_finite']}, reference {ref['non_finite']})")
    if not entry.get("duration_equal", True):
        out.append(f"{name}: durations differ by {entry['duration_delta_s']:+.3f} s, so the comparison is not valid")
    if cand["clipping_ratio"] > ref["clipping_ratio"] + MAX_EXTRA_CLIPPING:
        out.append(f"{name}: candidate clips on {cand['clipping_ratio']:.2%} of samples")
    if cand["silence_ratio"] > ref["silence_ratio"] + MAX_EXTRA_SILENCE:
        out.append(
            f"{name}: candidate is silent {cand['silence_ratio']:.0%} of the time against "
            f"{ref['silence_ratio']:.0%} for the reference"
        )
    return out


# --------------------------------------------------------------------------- human ratings


class RatingsError(ValueError):
    """ratings.json does not follow the schema; the message says where."""


def _score(value: Any, where: str) -> int | None:
    if value is None or value == "":
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or value != int(value) or not 1 <= value <= 5:
        raise RatingsError(f"{where}: must be an integer from 1 to 5 or null, got {value!r}")
    return int(value)


def _side(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise RatingsError(f"{where}: must be an object with {', '.join(CRITERIA)}, artifacts, notes")
    side: dict[str, Any] = {c: _score(raw.get(c), f"{where}.{c}") for c in CRITERIA}
    artifacts = raw.get("artifacts")
    if artifacts is not None and not isinstance(artifacts, bool):
        raise RatingsError(f"{where}.artifacts: must be true, false or null, got {artifacts!r}")
    side["artifacts"] = artifacts
    return side


def _items(ratings: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(ratings, Mapping):
        raise RatingsError("ratings: must be a JSON object")
    if ratings.get("schema") != RATINGS_SCHEMA:
        raise RatingsError(f"schema: expected {RATINGS_SCHEMA!r}, got {ratings.get('schema')!r}")
    items = ratings.get("items")
    if not isinstance(items, list):
        raise RatingsError("items: must be a list")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise RatingsError(f"items[{i}]: must be an object")
        name = str(item.get("id", i))
        out.append(
            {
                "id": name,
                "candidate": _side(item.get("candidate"), f"items[{i}].candidate"),
                "reference": _side(item.get("reference"), f"items[{i}].reference"),
            }
        )
    return out


def _complete(item: Mapping[str, Any]) -> bool:
    return all(item[s][c] is not None for s in ("candidate", "reference") for c in CRITERIA) and all(
        item[s]["artifacts"] is not None for s in ("candidate", "reference")
    )


def _means(items: Sequence[Mapping[str, Any]], side: str) -> dict[str, float | None]:
    means: dict[str, float | None] = {
        c: statistics.fmean(i[side][c] for i in items) if items else None for c in CRITERIA
    }
    values = [v for v in means.values() if v is not None]
    means["overall"] = statistics.fmean(values) if values else None
    return means


def summarise_ratings(ratings: Mapping[str, Any]) -> dict[str, Any]:
    """Apply the seed's rules to a ratings.json object; raises RatingsError if it is malformed."""
    items = _items(ratings)
    rated = [i for i in items if _complete(i)]
    cand, ref = _means(rated, "candidate"), _means(rated, "reference")
    drop = _drop(cand["overall"], ref["overall"])
    by_criterion = {c: _drop(cand[c], ref[c]) for c in CRITERIA}
    cand_art = [i["id"] for i in rated if i["candidate"]["artifacts"] and not i["reference"]["artifacts"]]
    shared_art = [i["id"] for i in rated if i["candidate"]["artifacts"] and i["reference"]["artifacts"]]
    overall = ratings.get("overall")
    decision = overall.get("decision") if isinstance(overall, Mapping) else None
    rater = decision if decision in ("accept", "reject") else None
    reasons = _rating_reasons(len(items), len(rated), cand_art, drop, cand["naturalness"], rater)
    notes = []
    if shared_art:
        notes.append(f"artifacts in both clips (not caused by the NFE change): {', '.join(shared_art)}")
    if ratings.get("untrained"):
        notes.append("untrained weights: the audio is noise; this verdict says nothing about speech quality")
    if rater == "accept" and reasons:
        notes.append("the rater chose accept, but the rules reject")
    return {
        "decision": "REJECT" if reasons else "ACCEPT",
        "reasons": reasons,
        "notes": notes,
        "candidate_nfe": ratings.get("candidate_nfe"),
        "reference_nfe": ratings.get("reference_nfe"),
        "items": len(items),
        "rated": len(rated),
        "candidate": cand,
        "reference": ref,
        "drop": drop,
        "drop_by_criterion": by_criterion,
        "candidate_artifacts": cand_art,
        "rater_decision": rater,
    }


def _drop(candidate: float | None, reference: float | None) -> float | None:
    """Relative subjective drop of the candidate against the reference (negative = better)."""
    if candidate is None or reference is None or reference <= 0:
        return None
    return (reference - candidate) / reference


def _rating_reasons(
    total: int, rated: int, artifacts: list[str], drop: float | None, naturalness: float | None, rater: str | None
) -> list[str]:
    reasons = []
    if total == 0 or rated == 0:
        return ["no pair is fully rated"]
    if rated < total:
        reasons.append(f"{total - rated} of {total} pairs are not fully rated")
    if artifacts:
        reasons.append(f"obvious artifacts in the candidate on {len(artifacts)} text(s): {', '.join(artifacts)}")
    if drop is not None and drop >= MAX_DROP:
        reasons.append(f"subjective drop {drop:.1%} is not under {MAX_DROP:.0%}")
    if naturalness is not None and naturalness < MIN_NATURALNESS:
        reasons.append(f"candidate naturalness {naturalness:.2f}/5 is under {MIN_NATURALNESS:g}/5")
    if rater == "reject":
        reasons.append("the rater chose reject")
    return reasons


def verdict_text(summary: Mapping[str, Any]) -> str:
    """The lines ``ishowtts-admin quality-verdict`` prints; the first is ACCEPT or REJECT."""
    cand, ref = summary["candidate"], summary["reference"]

    def fmt(v: float | None, spec: str = ".2f") -> str:
        return "-" if v is None else format(v, spec)

    lines = [
        f"{summary['decision']}: NFE {summary.get('candidate_nfe', '?')} against NFE "
        f"{summary.get('reference_nfe', '?')} ({summary['rated']} of {summary['items']} pairs rated)",
        "            candidate  reference",
    ]
    lines += [f"  {c:<10}{fmt(cand[c]):>9}  {fmt(ref[c]):>9}" for c in (*CRITERIA, "overall")]
    lines.append(f"  subjective drop: {fmt(summary['drop'], '.1%')} (must be under {MAX_DROP:.0%})")
    lines.append(
        f"rules: no obvious artifacts, drop under {MAX_DROP:.0%}, naturalness at least {MIN_NATURALNESS:g}/5"
    )
    lines += [f"  - {r}" for r in summary["reasons"]]
    lines += [f"note: {n}" for n in summary["notes"]]
    return "\n".join(lines)
