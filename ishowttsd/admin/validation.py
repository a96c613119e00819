"""Admin work that runs the model: the self-check, `set-nfe --validate`, quality samples.

All of it goes through the worker as background jobs, so live requests go first.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ishowttsd import audio_format, clocks, quality, selfcheck
from ishowttsd.config import SelfcheckConfig
from ishowttsd.engine.spec import MAX_NFE, MIN_NFE, SAMPLE_RATE, SynthesisRequest
from ishowttsd.engine.text import Piece
from ishowttsd.logs import get_logger
from ishowttsd.worker import BACKGROUND

if TYPE_CHECKING:
    from ishowttsd.admin.server import ProgressStream
    from ishowttsd.daemon import Daemon

log = get_logger("ishowttsd.selfcheck")
THRESHOLD_KEYS = ("max_mean_rtf", "max_rtf", "max_cv", "max_slowdown")


def _admin_error(status: int, code: str, message: str) -> Exception:
    from ishowttsd.admin.server import AdminError

    return AdminError(status, code, message)


def _nfe_arg(args: dict[str, Any], key: str) -> int | None:
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_NFE <= value <= MAX_NFE:
        raise _admin_error(422, "invalid_value", f"'{key}' must be a whole number from {MIN_NFE} to {MAX_NFE}")
    return value


def parse_selfcheck_args(daemon: Daemon, args: dict[str, Any]) -> dict[str, Any]:
    thresholds = daemon.config.selfcheck
    overrides: dict[str, Any] = {}
    for key in THRESHOLD_KEYS:
        if args.get(key) is not None:
            value = args[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise _admin_error(422, "invalid_value", f"'{key}' must be a number >= 0")
            overrides[key] = float(value)
    return {"nfe": _nfe_arg(args, "nfe"), "compare_nfe": _nfe_arg(args, "compare_nfe"),
            "thresholds": dataclasses.replace(thresholds, **overrides)}


def parse_quality_args(args: dict[str, Any]) -> tuple[int, int]:
    candidate, against = _nfe_arg(args, "nfe"), _nfe_arg(args, "against")
    if candidate is None or against is None:
        raise _admin_error(400, "missing_field", "'nfe' and 'against' are required")
    return candidate, against


def selfcheck_history_records(daemon: Daemon, last: int) -> list[dict[str, Any]]:
    return selfcheck.History(daemon.config.state_dir / "selfcheck.jsonl").last(max(last, 1))


def _request_fields(daemon: Daemon) -> dict[str, Any]:
    syn = daemon.config.synthesis
    return {"cfg_strength": syn.cfg_strength, "sway": syn.sway, "speed": syn.speed,
            "cross_fade_s": syn.cross_fade_s, "target_rms": syn.target_rms}


def _run_background(daemon: Daemon, req: SynthesisRequest, streaming: bool) -> tuple[Any, float, float | None]:
    """Synthesise as a background job; (synthesis, compute seconds, seconds to first chunk)."""
    first: list[float] = []

    def on_chunk(_chunk: Piece) -> None:
        if not first:
            first.append(time.monotonic())

    job = daemon.worker.synthesize(req, priority=BACKGROUND, on_chunk=on_chunk if streaming else None)
    result = job.future.result(timeout=daemon.config.limits.request_timeout_s * 10)
    wall = result.finished_at - result.started_at
    ttfa = first[0] - result.started_at if first else None
    return result.synthesis, wall, ttfa


def timed_synthesize(daemon: Daemon) -> selfcheck.Synthesize:
    def synthesize(req: SynthesisRequest, streaming: bool) -> selfcheck.Timed:
        synthesis, wall, ttfa = _run_background(daemon, req, streaming)
        return selfcheck.Timed(audio_seconds=len(synthesis.audio) / synthesis.sample_rate,
                               wall_seconds=wall, first_audio_seconds=ttfa)

    return synthesize


def run_context(daemon: Daemon, nfe: int) -> dict[str, Any]:
    """What a self-check record says about the conditions it ran under."""
    from ishowttsd import __version__

    cfg = daemon.config
    slot = daemon.worker.slot
    info = slot.engine.info.as_dict() if slot else {}
    try:
        state = clocks.read_state(cfg.clocks).as_dict()
    except Exception as exc:  # a clock read must never stop a self-check
        state = {"provider": cfg.clocks.provider, "error": str(exc)}
    gpu = state.get("gpu") or {}
    return {
        "daemon_version": __version__,
        "settings_version": daemon.settings.version,
        "nfe": nfe,
        "precision": info.get("precision", cfg.model.precision),
        "model": cfg.model.architecture,
        "weights": cfg.model.weights,
        "untrained": daemon.model_untrained(),
        "device": info.get("device", cfg.model.device),
        "gpu_name": info.get("gpu_name"),
        "torch": info.get("torch_version"),
        "cuda": info.get("cuda_version"),
        "clocks_provider": state.get("provider"),
        "clocks_locked": state.get("locked"),
        "power_mode": state.get("power_mode"),
        "gpu_temperature_c": gpu.get("temperature_c") if isinstance(gpu, dict) else None,
    }


def _selfcheck_blocking(daemon: Daemon, emit: Callable[[dict[str, Any]], None], *, nfe: int,
                        thresholds: SelfcheckConfig, compare_nfe: int | None) -> dict[str, Any]:
    history = selfcheck.History(daemon.config.state_dir / "selfcheck.jsonl")
    record = selfcheck.run_suite(
        timed_synthesize(daemon),
        voice_id=daemon.config.synthesis.default_voice,
        nfe=nfe,
        thresholds=thresholds,
        context=run_context(daemon, nfe),
        progress=emit,
        traffic_seen=lambda: daemon.worker.served_live,
        compare_nfe=compare_nfe,
        history=history.read(),
        request_fields=_request_fields(daemon),
    )
    history.append(record)
    return record


async def run_selfcheck(daemon: Daemon, stream: ProgressStream, *, nfe: int | None,
                        thresholds: SelfcheckConfig, compare_nfe: int | None) -> dict[str, Any]:
    nfe = nfe if nfe is not None else daemon.effective_nfe()
    log.info("self-check started", nfe=nfe, compare_nfe=compare_nfe)
    record: dict[str, Any] = await stream.run(
        lambda emit: _selfcheck_blocking(daemon, emit, nfe=nfe, thresholds=thresholds, compare_nfe=compare_nfe))
    daemon.last_selfcheck = record
    verdict = record["verdict"]
    level = log.error if verdict["status"] == "fail" else log.info
    level("self-check finished", status=verdict["status"], reasons=verdict["reasons"], nfe=nfe,
          rtf_mean=record["stats"].get("rtf_mean"), untrained=daemon.model_untrained())
    return record


def _synthesize_audio(daemon: Daemon) -> Callable[[SynthesisRequest], np.ndarray]:
    def synthesize(req: SynthesisRequest) -> np.ndarray:
        synthesis, _wall, _ttfa = _run_background(daemon, req, False)
        return np.asarray(synthesis.audio)

    return synthesize


def _quality_blocking(daemon: Daemon, emit: Callable[[dict[str, Any]], None], candidate: int, reference: int,
                      on_pair: Callable[[dict[str, Any], np.ndarray, np.ndarray], Any] | None = None
                      ) -> dict[str, Any]:
    return quality.compare_nfe(
        _synthesize_audio(daemon),
        voice_id=daemon.config.synthesis.default_voice,
        candidate_nfe=candidate,
        reference_nfe=reference,
        seed=daemon.config.quality.seed,
        untrained=daemon.model_untrained(),
        progress=emit,
        request_fields=_request_fields(daemon),
        on_pair=on_pair,
    )


async def validate_nfe_change(daemon: Daemon, stream: ProgressStream, *, version: int, old: int, new: int,
                              uid: int) -> dict[str, Any]:
    """Self-check at the new NFE, then the quality gate; roll back if either fails."""
    record = await run_selfcheck(daemon, stream, nfe=new, thresholds=daemon.config.selfcheck, compare_nfe=None)
    reference = daemon.config.quality.reference_nfe
    comparison = await stream.run(lambda emit: _quality_blocking(daemon, emit, new, reference))
    gate = quality.gate(comparison, daemon.config.quality)
    reasons = [f"self-check: {r}" for r in record["verdict"].get("failures", [])]
    reasons += [f"quality: {r}" for r in gate["reasons"]]
    ok = record["verdict"]["status"] != "fail" and gate["status"] == "pass"
    validation = {"ok": ok, "selfcheck": record["verdict"], "quality": gate,
                  "quality_mean_distance_db": comparison.get("mean_distance_db"),
                  "quality_worst_distance_db": comparison.get("worst_distance_db")}
    daemon.settings.annotate(version, validation)
    rolled_back_to = None
    if not ok:
        rollback = daemon.settings.rollback(version - 1, uid=uid)
        rolled_back_to = rollback.number
        daemon.settings.annotate(rollback.number, {"rollback_of": version, "reasons": reasons})
        log.warning("nfe change failed validation; rolled back", new=new, restored=old, reasons=reasons)
    return {"ok": ok, "rolled_back": not ok, "rollback_version": rolled_back_to, "reasons": reasons,
            "notes": gate.get("notes", []), "selfcheck_status": record["verdict"]["status"],
            "quality_status": gate["status"], "nfe": daemon.effective_nfe()}


async def stream_quality_samples(daemon: Daemon, stream: ProgressStream, candidate: int,
                                 against: int) -> dict[str, Any]:
    def on_pair(entry: dict[str, Any], cand: np.ndarray, ref: np.ndarray) -> None:
        sr = SAMPLE_RATE
        stream.emit_threadsafe({
            "event": "pair", "id": entry.get("id"), "category": entry["category"], "text": entry["text"],
            "distance": entry.get("distance_db"),
            "candidate_wav_b64": base64.b64encode(audio_format.encode(cand, sr, "wav")).decode("ascii"),
            "reference_wav_b64": base64.b64encode(audio_format.encode(ref, sr, "wav")).decode("ascii"),
        })

    comparison = await stream.run(lambda emit: _quality_blocking(daemon, emit, candidate, against, on_pair))
    return {"untrained": daemon.model_untrained(), "seed": daemon.config.quality.seed,
            "candidate_nfe": candidate, "reference_nfe": against,
            "mean_distance_db": comparison.get("mean_distance_db"),
            "worst_distance_db": comparison.get("worst_distance_db"), "note": comparison.get("note")}
