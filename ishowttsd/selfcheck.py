"""Self-check: a fixed benchmark suite, RTF statistics, regression rules and a JSONL history.

The seed's ``monitor_performance.py``, done inside the daemon on the model it serves.  This
module imports neither torch nor f5_tts: the daemon hands :func:`run_suite` a ``synthesize``
callable that queues the request on the GPU worker (behind live traffic) and returns a
:class:`Timed` with the synchronized device time the worker measured.  ``run_suite`` blocks,
so call it from a thread, never from the event loop.

Definitions
-----------
* **RTF** of one run = ``wall_seconds / audio_seconds`` (generated audio only).
* **mean, median, min, max, p95** are over every timed run (p95: linear interpolation).
* **CV** is the *run-to-run* stability: for each text, the sample standard deviation of its
  repeated RTFs over their mean; the reported ``rtf_cv`` is the root mean square of those
  per-text CVs.  It is *not* the spread across texts: short texts always have a higher RTF
  than long ones (the reference clip is generated along with them), so a CV across texts
  would measure the text mix, not the machine.  That spread is kept, for information, as
  ``rtf_cv_across_texts``.  With ``repeats == 1`` the CV is unknown (``None``) and the CV
  check is skipped with a warning.
* **TTFA** (time to first audio) comes from the streaming category's runs, which are run in
  streaming mode; their RTF counts in the statistics like any other run.

Comparable runs
---------------
The slowdown rule compares the mean RTF with the median mean RTF of the last
:data:`HISTORY_WINDOW` comparable runs in the history.  Two runs are comparable when their
``context`` agrees on every key of :data:`COMPARABLE_KEYS` (a key absent on both sides
agrees).  The daemon should therefore put these keys in the context it passes in:
``nfe`` (set by run_suite itself), ``model`` (architecture), ``weights`` (a weights id or
hash, ``"untrained"`` for random weights), ``precision``, ``device``, ``gpu_name``,
``clocks_locked`` (bool) and ``power_mode``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ishowttsd.config import SelfcheckConfig
from ishowttsd.durable import fsync_dir
from ishowttsd.engine.spec import SynthesisRequest

log = logging.getLogger("ishowttsd.selfcheck")

SCHEMA = 1
DEFAULT_SEED = 1234
# How many comparable runs the slowdown baseline uses, and how few make a baseline at all.
HISTORY_WINDOW = 10
MIN_HISTORY = 3
COMPARABLE_KEYS = (
    "nfe",
    "model",
    "weights",
    "precision",
    "device",
    "gpu_name",
    "clocks_locked",
    "power_mode",
)
STREAMING_CATEGORY = "streaming"

# The seed's six categories.  Every category has at least 3 texts; keep them stable, because
# the history only compares like with like and changing a text changes what is measured.
TEXTS: dict[str, tuple[str, ...]] = {
    "short": (
        "Hello there!",
        "Thanks for the follow.",
        "Let's get started.",
    ),
    "medium": (
        "Welcome back to the stream, everyone. Today we are trying something a little different.",
        "The weather turned cold overnight, so grab a warm drink before we begin.",
        "If you have any questions, drop them in the chat and I will answer them at the end.",
    ),
    "long": (
        "Before we dive into today's game, I want to thank everyone who stuck around last night. "
        "We went three hours longer than planned, and honestly, that was the most fun I have had "
        "in months. Tonight we pick up right where we left off, at the bottom of the old mine.",
        "A long time ago, in a small village by the sea, there lived a fisherman who never caught "
        "a single fish. Every morning he rowed out past the lighthouse, and every evening he "
        "rowed back with an empty net and a new story to tell his neighbours.",
        "Here is the plan for the next hour. First we finish the side quest in the northern city, "
        "then we upgrade the armour, and if there is any time left, we will try the boss again. "
        "Keep the suggestions coming, but please, no spoilers for the ending.",
    ),
    "technical": (
        "The GPU runs at 1.3 GHz with 64 GB of unified memory and a 275 TOPS accelerator.",
        "Set the NFE to 7, the CFG strength to 2.0, and the sway coefficient to minus one.",
        "Version 2.5.0 of PyTorch added CUDA 12.4 support on ARM64 via the JetPack 6 SDK.",
    ),
    "emotional": (
        "Oh my gosh, I cannot believe we actually won that!",
        "I'm so sorry, that was completely my fault, and I feel terrible about it.",
        "Wait... what was that noise? Did anyone else hear it?",
    ),
    STREAMING_CATEGORY: (
        "lol that was insane",
        "gg wp, see you all tomorrow!",
        "chat, should I go left or right?",
    ),
}


class SelfcheckError(RuntimeError):
    """The suite could not measure (the engine returned no audio, bad history record...)."""


@dataclass
class Timed:
    """One synthesis as the worker measured it."""

    audio_seconds: float
    # Synchronized device time (torch.cuda.synchronize around the run) in seconds.
    wall_seconds: float
    # Streaming mode: seconds until the first chunk was ready; None when not measured.
    first_audio_seconds: float | None = None


Synthesize = Callable[[SynthesisRequest, bool], Timed]
Progress = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------- statistics


def basic_stats(values: Sequence[float]) -> dict[str, float | None]:
    """mean, median, min, max, p95, std (sample, n-1) and cv = std/mean of ``values``."""
    if not values:
        return {k: None for k in ("mean", "median", "min", "max", "p95", "std", "cv")}
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {
        "mean": mean,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "p95": percentile(values, 95.0),
        "std": std,
        "cv": std / mean if mean > 0 else None,
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def repeat_cv(groups: Sequence[Sequence[float]]) -> float | None:
    """Run-to-run CV: root mean square of each group's std/mean; None without repeats."""
    cvs = [basic_stats(g)["cv"] for g in groups if len(g) > 1]
    usable = [c for c in cvs if c is not None]
    if not usable:
        return None
    return math.sqrt(statistics.fmean(c * c for c in usable))


def summarise_runs(text_results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """RTF and TTFA statistics over the runs of some texts (one category, or all)."""
    runs = [run for t in text_results for run in t["runs"]]
    rtfs = [run["rtf"] for run in runs]
    rtf = basic_stats(rtfs)
    ttfas = [r["first_audio_seconds"] for r in runs if r["streaming"] and r["first_audio_seconds"] is not None]
    ttfa = basic_stats(ttfas)
    per_text_means = [statistics.fmean(r["rtf"] for r in t["runs"]) for t in text_results if t["runs"]]
    return {
        "runs": len(runs),
        "texts": len(text_results),
        "rtf_mean": rtf["mean"],
        "rtf_median": rtf["median"],
        "rtf_min": rtf["min"],
        "rtf_max": rtf["max"],
        "rtf_p95": rtf["p95"],
        "rtf_std": rtf["std"],
        "rtf_cv": repeat_cv([[r["rtf"] for r in t["runs"]] for t in text_results]),
        "rtf_cv_across_texts": basic_stats(per_text_means)["cv"],
        "audio_seconds_total": sum(r["audio_seconds"] for r in runs),
        "wall_seconds_total": sum(r["wall_seconds"] for r in runs),
        "ttfa_mean": ttfa["mean"],
        "ttfa_median": ttfa["median"],
        "ttfa_max": ttfa["max"],
    }


# --------------------------------------------------------------------------- the suite


def suite_texts(texts_per_category: int) -> dict[str, tuple[str, ...]]:
    """The first ``texts_per_category`` texts of every category (all of them if fewer)."""
    return {cat: texts[:texts_per_category] for cat, texts in TEXTS.items()}


@dataclass(frozen=True)
class _Job:
    phase: str  # "warmup", "timed" or "compare"
    category: str
    text: str
    nfe: int
    streaming: bool


def _plan(texts: Mapping[str, Sequence[str]], nfe: int, repeats: int, phase: str) -> list[_Job]:
    return [
        _Job(phase, cat, text, nfe, cat == STREAMING_CATEGORY)
        for cat, items in texts.items()
        for text in items
        for _ in range(repeats)
    ]


def _warmup_plan(texts: Mapping[str, Sequence[str]], nfe: int, warmup: int) -> list[_Job]:
    """Run every text once per warm-up round, in the mode it is timed in.

    On a GPU the first request of a new length pays for graph capture or cuDNN plan
    selection; warming only one text would put that one-off cost into the timed runs and
    read as run-to-run variance (CV), which is not what the self-check means to measure.
    """
    return [
        _Job("warmup", "warmup", text, nfe, category == STREAMING_CATEGORY)
        for _ in range(warmup)
        for category, items in texts.items()
        for text in items
    ]


def _measure(
    synthesize: Synthesize, job: _Job, *, voice_id: str, seed: int, fields: Mapping[str, Any]
) -> dict[str, Any]:
    request = SynthesisRequest(text=job.text, voice_id=voice_id, nfe=job.nfe, seed=seed, **fields)
    timed = synthesize(request, job.streaming)
    if not (timed.audio_seconds > 0 and math.isfinite(timed.audio_seconds)):
        raise SelfcheckError(f"engine returned no audio for {job.text[:40]!r} (nfe {job.nfe})")
    if not (timed.wall_seconds >= 0 and math.isfinite(timed.wall_seconds)):
        raise SelfcheckError(f"worker reported an invalid time {timed.wall_seconds!r}")
    return {
        "audio_seconds": timed.audio_seconds,
        "wall_seconds": timed.wall_seconds,
        "rtf": timed.wall_seconds / timed.audio_seconds,
        "streaming": job.streaming,
        "first_audio_seconds": timed.first_audio_seconds,
    }


def _run_jobs(
    jobs: Sequence[_Job],
    run: Callable[[_Job], dict[str, Any]],
    progress: Progress,
    offset: int,
    total: int,
) -> list[tuple[_Job, dict[str, Any]]]:
    out = []
    for i, job in enumerate(jobs, start=offset + 1):
        out.append((job, run(job)))
        progress(
            {
                "event": "progress",
                "phase": job.phase,
                "done": i,
                "total": total,
                "category": job.category,
                "text": job.text[:40],
                "nfe": job.nfe,
            }
        )
    return out


def _group_by_text(measured: Sequence[tuple[_Job, dict[str, Any]]]) -> list[dict[str, Any]]:
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for job, run in measured:
        entry = results.setdefault(
            (job.category, job.text),
            {"category": job.category, "text": job.text, "streaming": job.streaming, "runs": []},
        )
        entry["runs"].append(run)
    for entry in results.values():
        entry.update({k: v for k, v in summarise_runs([entry]).items() if k not in ("runs", "texts")})
    return list(results.values())


def run_suite(
    synthesize: Synthesize,
    *,
    voice_id: str,
    nfe: int,
    thresholds: SelfcheckConfig,
    context: Mapping[str, Any],
    progress: Progress,
    traffic_seen: Callable[[], int],
    compare_nfe: int | None = None,
    history: Sequence[Mapping[str, Any]] = (),
    seed: int = DEFAULT_SEED,
    request_fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Benchmark ``synthesize`` and return the JSON-able record for the history.

    Warm-up runs first (not timed into the stats), then ``thresholds.repeats`` runs of every
    text, all with the same ``seed``.  ``request_fields`` are extra SynthesisRequest fields
    (cfg_strength, sway, speed...) the daemon resolved from its settings.  ``history`` is
    what :meth:`History.read` returned, for the slowdown rule.
    """
    started = time.monotonic()
    when = datetime.now(timezone.utc)
    fields = dict(request_fields or {})
    texts = suite_texts(thresholds.texts_per_category)
    warm = _warmup_plan(texts, nfe, thresholds.warmup)
    timed = _plan(texts, nfe, thresholds.repeats, "timed")
    cmp_jobs: list[_Job] = []
    if compare_nfe is not None:
        cmp_jobs = _warmup_plan(texts, compare_nfe, min(thresholds.warmup, 1)) + _plan(
            texts, compare_nfe, thresholds.repeats, "compare"
        )
    total = len(warm) + len(timed) + len(cmp_jobs)

    def run(job: _Job) -> dict[str, Any]:
        return _measure(synthesize, job, voice_id=voice_id, seed=seed, fields=fields)

    traffic_before = traffic_seen()
    _run_jobs(warm, run, progress, 0, total)
    measured = _run_jobs(timed, run, progress, len(warm), total)
    compared = _run_jobs(cmp_jobs, run, progress, len(warm) + len(timed), total)
    traffic_after = traffic_seen()

    text_results = _group_by_text(measured)
    categories = {
        cat: summarise_runs([t for t in text_results if t["category"] == cat]) for cat in texts
    }
    stats = summarise_runs(text_results)
    ctx = {**context, "nfe": nfe}
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "selfcheck",
        "time": when.isoformat(timespec="seconds"),
        "context": ctx,
        "config": {
            "voice_id": voice_id,
            "seed": seed,
            "repeats": thresholds.repeats,
            "warmup": thresholds.warmup,
            "texts_per_category": thresholds.texts_per_category,
            "request_fields": fields,
        },
        "thresholds": asdict(thresholds),
        "texts": text_results,
        "categories": categories,
        "stats": stats,
        "traffic": {
            "before": traffic_before,
            "after": traffic_after,
            "requests": traffic_after - traffic_before,
            "interleaved": traffic_after > traffic_before,
        },
        "compare_nfe": _compare(compared, compare_nfe, stats),
    }
    record["verdict"] = evaluate(stats, list(history), ctx, thresholds)
    record["duration_s"] = time.monotonic() - started
    return record


def _compare(
    compared: Sequence[tuple[_Job, dict[str, Any]]], compare_nfe: int | None, stats: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The other NFE's mean RTF and how much faster this NFE is than it (>1 = faster)."""
    timed = [pair for pair in compared if pair[0].phase == "compare"]
    if compare_nfe is None or not timed:
        return None
    other = summarise_runs(_group_by_text(timed))
    speedup = other["rtf_mean"] / stats["rtf_mean"] if stats["rtf_mean"] else None
    return {"nfe": compare_nfe, "rtf_mean": other["rtf_mean"], "rtf_p95": other["rtf_p95"], "speedup": speedup}


# --------------------------------------------------------------------------- verdict


def comparable_key(context: Mapping[str, Any]) -> tuple[Any, ...]:
    """What must match for two runs' RTFs to be compared (see the module docstring)."""
    return tuple(_hashable(context.get(k)) for k in COMPARABLE_KEYS)


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def comparable_runs(history: Sequence[Mapping[str, Any]], context: Mapping[str, Any]) -> list[float]:
    """Mean RTFs of earlier runs comparable with ``context``, oldest first."""
    key = comparable_key(context)
    means: list[float] = []
    for record in history:
        ctx, stats = record.get("context"), record.get("stats")
        if not isinstance(ctx, Mapping) or not isinstance(stats, Mapping):
            continue
        mean = stats.get("rtf_mean")
        if comparable_key(ctx) == key and isinstance(mean, (int, float)) and mean > 0:
            means.append(float(mean))
    return means


def evaluate(
    stats: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    context: Mapping[str, Any],
    thresholds: SelfcheckConfig,
) -> dict[str, Any]:
    """Apply the seed's four rules and return every reason, failing or warning."""
    fails: list[str] = []
    warns: list[str] = []
    mean, peak, cv = stats.get("rtf_mean"), stats.get("rtf_max"), stats.get("rtf_cv")
    if mean is None or peak is None:
        fails.append("no timed runs: nothing was measured")
        return _verdict(fails, warns, None)
    if mean > thresholds.max_mean_rtf:
        fails.append(f"mean RTF {mean:.3f} is above max_mean_rtf {thresholds.max_mean_rtf:g}")
    if peak > thresholds.max_rtf:
        fails.append(f"max RTF {peak:.3f} is above max_rtf {thresholds.max_rtf:g}")
    if cv is None:
        warns.append("CV not measured: it needs repeats >= 2")
    elif cv > thresholds.max_cv:
        fails.append(f"CV {cv:.3f} (run-to-run) is above max_cv {thresholds.max_cv:g}")
    baseline = _slowdown(mean, history, context, thresholds, fails, warns)
    return _verdict(fails, warns, baseline)


def _slowdown(
    mean: float,
    history: Sequence[Mapping[str, Any]],
    context: Mapping[str, Any],
    thresholds: SelfcheckConfig,
    fails: list[str],
    warns: list[str],
) -> dict[str, Any]:
    window = comparable_runs(history, context)[-HISTORY_WINDOW:]
    baseline: dict[str, Any] = {"runs": len(window), "window": HISTORY_WINDOW, "median_rtf": None}
    if len(window) < MIN_HISTORY:
        warns.append(
            f"only {len(window)} comparable earlier run(s) (same {', '.join(COMPARABLE_KEYS)}); "
            f"the slowdown rule needs {MIN_HISTORY}, so it was not applied"
        )
        return baseline
    median = statistics.median(window)
    slowdown = mean / median - 1.0
    baseline.update(median_rtf=median, slowdown=slowdown)
    if slowdown > thresholds.max_slowdown:
        fails.append(
            f"mean RTF {mean:.3f} is {slowdown:+.0%} against the median {median:.3f} of the last "
            f"{len(window)} comparable runs (max_slowdown {thresholds.max_slowdown:+.0%})"
        )
    if len(window) < HISTORY_WINDOW:
        warns.append(f"baseline from {len(window)} of {HISTORY_WINDOW} comparable runs")
    return baseline


def _verdict(fails: list[str], warns: list[str], baseline: dict[str, Any] | None) -> dict[str, Any]:
    status = "fail" if fails else "warn" if warns else "pass"
    return {"status": status, "reasons": fails + warns, "failures": fails, "warnings": warns, "baseline": baseline}


# --------------------------------------------------------------------------- history


class History:
    """``selfcheck.jsonl``: one JSON object per line, append-only, every line written whole."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one line with a single write on an O_APPEND fd, then fsync.

        If the file ends in a torn line (power loss mid-write), the new line starts with a
        newline so that it is not glued to the broken one.
        """
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line
            data = line.encode("utf-8")
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)

    def read(self) -> list[dict[str, Any]]:
        """Every readable record; a torn or corrupt line is skipped with a warning."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        records: list[dict[str, Any]] = []
        for number, chunk in enumerate(raw.split(b"\n"), start=1):
            if not chunk.strip():
                continue
            try:
                record = json.loads(chunk.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                log.warning("%s:%d: skipping a corrupt or truncated line (%s)", self.path, number, exc)
                continue
            if not isinstance(record, dict):
                log.warning("%s:%d: skipping a line that is not a JSON object", self.path, number)
                continue
            records.append(record)
        return records

    def last(self, n: int) -> list[dict[str, Any]]:
        return self.read()[-n:] if n > 0 else []


# --------------------------------------------------------------------------- text output


def _num(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        # First column (the name) left-aligned, numbers right-aligned.
        cells = [c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _stat_row(name: str, s: Mapping[str, Any]) -> list[str]:
    return [
        name,
        str(s.get("runs", 0)),
        _num(s.get("rtf_mean")),
        _num(s.get("rtf_median")),
        _num(s.get("rtf_p95")),
        _num(s.get("rtf_max")),
        _num(s.get("rtf_cv")),
        _num(s.get("ttfa_mean"), ".2f"),
    ]


def format_report(record: Mapping[str, Any]) -> str:
    """The table per category and the verdict with its reasons, for ``ishowtts-admin self-check``."""
    ctx = record.get("context", {})
    head = (
        f"self-check {record.get('time', '?')}  nfe {ctx.get('nfe', '?')}  model {ctx.get('model', '?')}"
        f"  weights {ctx.get('weights', '?')}  precision {ctx.get('precision', '?')}"
        f"  device {ctx.get('gpu_name') or ctx.get('device', '?')}  clocks locked {ctx.get('clocks_locked', '?')}"
    )
    header = ["category", "runs", "mean RTF", "median", "p95", "max", "CV", "TTFA s"]
    rows = [_stat_row(cat, s) for cat, s in record.get("categories", {}).items()]
    rows.append(_stat_row("ALL", record.get("stats", {})))
    lines = [head, "", _table(header, rows), ""]
    stats = record.get("stats", {})
    lines.append(f"audio generated: {_num(stats.get('audio_seconds_total'), '.1f')} s")
    lines.extend(_extras(record))
    verdict = record.get("verdict", {})
    lines.append(f"verdict: {str(verdict.get('status', '?')).upper()}")
    lines += [f"  - {r}" for r in verdict.get("reasons", [])]
    return "\n".join(lines)


def _extras(record: Mapping[str, Any]) -> list[str]:
    out = []
    ctx = record.get("context", {})
    if ctx.get("untrained") or ctx.get("weights") == "untrained":
        out.append("note: untrained weights: the audio is noise; the timings are still real")
    cmp = record.get("compare_nfe")
    if cmp:
        out.append(
            f"NFE {cmp['nfe']}: mean RTF {_num(cmp['rtf_mean'])}, so this NFE is "
            f"{_num(cmp['speedup'], '.2f')}x as fast"
        )
    traffic = record.get("traffic", {})
    if traffic.get("interleaved"):
        out.append(f"live traffic interleaved: {traffic.get('requests')} request(s) served during the check")
    return out


def format_history(records: Sequence[Mapping[str, Any]], last: int = 20) -> str:
    """The trend table of the last ``last`` runs, oldest first."""
    header = ["time", "nfe", "model", "precision", "device", "mean RTF", "p95", "max", "CV", "TTFA s", "verdict"]
    rows = []
    for rec in list(records)[-last:] if last > 0 else []:
        ctx, s = rec.get("context", {}), rec.get("stats", {})
        rows.append(
            [
                str(rec.get("time", "?")),
                str(ctx.get("nfe", "?")),
                str(ctx.get("model", "?")),
                str(ctx.get("precision", "?")),
                str(ctx.get("gpu_name") or ctx.get("device", "?")),
                _num(s.get("rtf_mean")),
                _num(s.get("rtf_p95")),
                _num(s.get("rtf_max")),
                _num(s.get("rtf_cv")),
                _num(s.get("ttfa_mean"), ".2f"),
                str(rec.get("verdict", {}).get("status", "?")),
            ]
        )
    if not rows:
        return "no self-check history yet"
    return _table(header, rows)
