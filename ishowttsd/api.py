"""The public HTTP API (aiohttp): OpenAI-compatible speech, iShowTTS-compatible /api/tts,
voices, health and metrics.

Handlers only parse, queue, stream and answer; the model is reached through the worker.
Every bad input gets a 4xx JSON error {"error": {"code", "message"}}; a 5xx means a bug.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from aiohttp import web

from ishowttsd import audio_format
from ishowttsd.config import Config
from ishowttsd.engine.spec import MAX_NFE, MIN_NFE, SAMPLE_RATE, SynthesisRequest
from ishowttsd.engine.text import Piece
from ishowttsd.logs import get_logger, text_fingerprint
from ishowttsd.metrics import Metrics
from ishowttsd.worker import LIVE, Job, JobCancelled, JobResult, QueueFull, UnknownVoice, Worker, WorkerStopped

if TYPE_CHECKING:
    from ishowttsd.engine.f5 import Synthesis  # torch: not imported at run time

log = get_logger("ishowttsd.api")

# OpenAI's built-in voice names: clients that cannot choose another voice still work,
# and speak with the default voice.
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")
RETRY_AFTER_S = "1"
MAX_SEED = 2**31 - 1
# The most a stream's first chunk may hold; it ends sooner, at its first clause boundary past a few
# words (engine/text.py), so that the first audio comes after one short chunk.
STREAM_FIRST_CHUNK_BYTES = 60
# How long the worker thread holds off the next chunk while the event loop sends a stream's first
# audio (about a millisecond of Python): without it the two threads trade the GIL, and the first
# audio waited for the next chunk's launches now and then (p95 of first audio 40.6 against a median
# of 19.2 ms on the H100, bench/NOTES.md item 31).  A bound, so that a busy loop never stalls the GPU long.
FIRST_AUDIO_HANDOFF_S = 0.010


class Service(Protocol):
    """What the API needs of the daemon."""

    worker: Worker
    metrics: Metrics

    @property
    def config(self) -> Config: ...

    def not_ready_reason(self) -> str | None: ...

    def effective_nfe(self) -> int: ...

    def voice_list(self) -> list[dict[str, Any]]: ...

    def model_untrained(self) -> bool: ...


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "type": "invalid_request_error"
                                         if status < 500 else "server_error"}},
                             status=status, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "bad_request")
        message = exc.text or exc.reason
        if exc.status == 413:
            message = f"request body is larger than {request.app['service'].config.limits.max_body_bytes} bytes"
        return error_response(exc.status, code, message)


# --- request parsing ------------------------------------------------------------------

def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ApiError(400, "invalid_type", f"'{name}' must be {_kind_name(kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise ApiError(400, "invalid_type", f"'{name}' must be {_kind_name(kinds)}, got {type(value).__name__}")
    return value


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _in_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ApiError(400, "out_of_range", f"'{name}' must be between {lo} and {hi}, got {value}")


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "invalid_json", "the request body is empty; send a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    return body


@dataclass(frozen=True)
class SpeechAsk:
    req: SynthesisRequest
    fmt: str
    stream: bool


def _resolve_voice(service: Service, voice: str) -> str:
    cfg = service.config
    if cfg.voice(voice) is not None:
        return voice
    if voice in OPENAI_VOICES:
        return cfg.synthesis.default_voice
    known = ", ".join(v.id for v in cfg.voices)
    raise ApiError(400, "unknown_voice", f"unknown voice {voice!r} (voices: {known}; GET /v1/audio/voices)")


def _text(service: Service, body: dict[str, Any], name: str) -> str:
    if name not in body:
        raise ApiError(400, "missing_field", f"'{name}' is required: the text to speak")
    text = _field(body, name, str, "")
    if not text.strip():
        raise ApiError(400, "empty_input", f"'{name}' is empty: there is nothing to speak")
    limit = service.config.limits.max_chars
    if len(text) > limit:
        raise ApiError(413, "input_too_long", f"'{name}' has {len(text)} characters; the limit is {limit}")
    return text


def _synthesis_request(service: Service, text: str, voice_id: str, *, speed: Any, nfe: Any, cfg_strength: Any,
                       sway: Any, seed: Any, target_rms: Any = None, cross_fade: Any = None,
                       fix_duration: Any = None, names: dict[str, str] | None = None) -> SynthesisRequest:
    names = names or {}
    cfg = service.config
    voice = cfg.voice(voice_id)
    assert voice is not None
    syn = cfg.synthesis

    def pick(value: Any, voice_default: Any, default: Any) -> Any:
        return value if value is not None else voice_default if voice_default is not None else default

    speed_v = float(pick(speed, voice.speed, syn.speed))
    _in_range(names.get("speed", "speed"), speed_v, 0.25, 4.0)
    # The request's own value, else the voice's default, else the NFE in force (config or set-nfe).
    nfe_v = pick(nfe, voice.nfe, service.effective_nfe())
    _in_range(names.get("nfe", "nfe"), nfe_v, MIN_NFE, MAX_NFE)
    cfg_v = float(pick(cfg_strength, voice.cfg_strength, syn.cfg_strength))
    _in_range(names.get("cfg_strength", "cfg_strength"), cfg_v, 0.0, 10.0)
    sway_v = float(pick(sway, voice.sway, syn.sway))
    _in_range(names.get("sway", "sway"), sway_v, -1.0, 1.0)
    if seed is not None:
        _in_range(names.get("seed", "seed"), seed, 0, MAX_SEED)
    rms_v = float(target_rms) if target_rms is not None else syn.target_rms
    _in_range("target_rms", rms_v, 0.01, 1.0)
    fade_v = float(cross_fade) if cross_fade is not None else syn.cross_fade_s
    _in_range("cross_fade_duration", fade_v, 0.0, 1.0)
    if fix_duration is not None:
        _in_range("fix_duration", fix_duration, 0.1, 300.0)
    return SynthesisRequest(text=text, voice_id=voice_id, nfe=int(nfe_v), cfg_strength=cfg_v, sway=sway_v,
                            speed=speed_v, seed=seed, cross_fade_s=fade_v, target_rms=rms_v,
                            fix_duration=float(fix_duration) if fix_duration is not None else None)


def parse_openai(service: Service, body: dict[str, Any]) -> SpeechAsk:
    _field(body, "model", str, "")
    text = _text(service, body, "input")
    voice_id = _resolve_voice(service, _field(body, "voice", str, service.config.synthesis.default_voice))
    fmt = _field(body, "response_format", str, "mp3").lower()
    if fmt not in audio_format.FORMATS:
        raise ApiError(400, "unsupported_format",
                       f"response_format {fmt!r} is not supported (use {', '.join(audio_format.FORMATS)})")
    stream = _field(body, "stream", bool, False)
    stream_format = _field(body, "stream_format", str, "audio")
    if stream_format != "audio":
        raise ApiError(400, "unsupported_format", "only stream_format 'audio' is supported")
    req = _synthesis_request(
        service, text, voice_id,
        speed=_field(body, "speed", (int, float), None),
        nfe=_field(body, "nfe", int, None),
        cfg_strength=_field(body, "cfg_strength", (int, float), None),
        sway=_field(body, "sway", (int, float), None),
        seed=_field(body, "seed", int, None),
    )
    return SpeechAsk(req=req, fmt=fmt, stream=stream)


def parse_ishowtts(service: Service, body: dict[str, Any]) -> SynthesisRequest:
    text = _text(service, body, "text")
    voice_id = _resolve_voice(service, _field(body, "voice_id", str, service.config.synthesis.default_voice))
    return _synthesis_request(
        service, text, voice_id,
        speed=_field(body, "speed", (int, float), None),
        nfe=_field(body, "nfe_step", int, None),
        cfg_strength=_field(body, "cfg_strength", (int, float), None),
        sway=_field(body, "sway_sampling_coef", (int, float), None),
        seed=_field(body, "seed", int, None),
        target_rms=_field(body, "target_rms", (int, float), None),
        cross_fade=_field(body, "cross_fade_duration", (int, float), None),
        fix_duration=_field(body, "fix_duration", (int, float), None),
        names={"nfe": "nfe_step", "sway": "sway_sampling_coef"},
    )


# --- running a job --------------------------------------------------------------------

class Synthesizer:
    """Submits requests to the worker and turns worker outcomes into HTTP answers."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def _check_ready(self) -> None:
        reason = self.service.not_ready_reason()
        if reason is not None:
            raise ApiError(503, "not_ready", reason, {"Retry-After": "5"})

    async def run(self, req: SynthesisRequest) -> JobResult:
        return await self.result(self.submit(req))

    def submit(self, req: SynthesisRequest, on_chunk: Callable[[Piece], None] | None = None,
               on_under_way: Callable[[], None] | None = None) -> Job[JobResult]:
        """Queue the job now (the worker may start it before the loop turns again), or raise the
        ApiError that refuses it."""
        self._check_ready()
        try:
            # A stream's first chunk is kept short, so its first audio comes sooner.
            first = STREAM_FIRST_CHUNK_BYTES if on_chunk is not None else None
            job = self.service.worker.synthesize(req, priority=LIVE, on_chunk=on_chunk, first_chunk_bytes=first,
                                                 on_under_way=on_under_way)
        except QueueFull as exc:
            raise ApiError(503, "queue_full", f"the server is busy ({exc}); retry shortly",
                           {"Retry-After": RETRY_AFTER_S}) from None
        except WorkerStopped as exc:
            raise ApiError(503, "shutting_down", str(exc), {"Retry-After": "5"}) from None
        return job

    async def result(self, job: Job[JobResult]) -> JobResult:
        """The job's result, or the ApiError that its failure (or its time running out) means."""
        timeout = self.service.config.limits.request_timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job.future)), timeout)
        except asyncio.TimeoutError:
            job.cancelled.set()
            raise ApiError(503, "timeout", f"synthesis did not finish within {timeout:g} s",
                           {"Retry-After": RETRY_AFTER_S}) from None
        except asyncio.CancelledError:
            # The client went away: drop the job if it is still queued, stop it if running.
            job.cancelled.set()
            raise
        except WorkerStopped as exc:
            raise ApiError(503, "shutting_down", str(exc), {"Retry-After": "5"}) from None
        except UnknownVoice as exc:
            raise ApiError(400, "unknown_voice", f"voice {exc} is not loaded (its reference failed)") from None
        except JobCancelled as exc:
            raise ApiError(503, "cancelled", str(exc)) from None
        except Exception:
            if job.cancelled.is_set():
                raise ApiError(503, "cancelled", "the request was cancelled") from None
            raise


def _log_done(endpoint: str, req: SynthesisRequest, result: JobResult, audio_s: float,
              encode_s: float, ttfa_s: float | None, service: Service) -> None:
    syn = result.synthesis
    compute_s = result.finished_at - result.started_at
    rtf = compute_s / audio_s if audio_s > 0 else None
    fields: dict[str, Any] = {
        "endpoint": endpoint, "voice": req.voice_id, "nfe": syn.nfe, "audio_s": round(audio_s, 3),
        "rtf": round(rtf, 5) if rtf is not None else None, "chunks": syn.chunks,
        "queue_wait_s": round(result.queue_wait_s, 4), "encode_s": round(encode_s, 4),
        **{f"{k}_s": round(v, 4) for k, v in syn.timings.items()},
        **text_fingerprint(req.text),
    }
    if ttfa_s is not None:
        fields["time_to_first_audio_s"] = round(ttfa_s, 4)
    if getattr(syn, "fp32_fallback", False):
        fields["fp32_fallback"] = True
    if service.model_untrained():
        fields["untrained"] = True
    log.info("synthesis done", **fields)
    if rtf is not None:
        service.metrics.rtf.observe(rtf)
    service.metrics.audio_seconds.inc(audio_s)


# --- handlers -------------------------------------------------------------------------

def _count(service: Service, endpoint: str, status: int, started: float) -> None:
    service.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
    service.metrics.latency.labels(endpoint=endpoint).observe(time.monotonic() - started)


@web.middleware
async def request_context_middleware(request: web.Request,
                                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                     ) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id", "") or uuid.uuid4().hex[:16]
    request_id = "".join(ch for ch in request_id if ch.isalnum() or ch in "-_")[:64] or uuid.uuid4().hex[:16]
    structlog.contextvars.bind_contextvars(request_id=request_id)
    request["request_id"] = request_id  # for _add_request_id, when the headers go out
    started = time.monotonic()
    try:
        response = await handler(request)
        if request.path in SPEECH_PATHS:
            _count(request.app["service"], request.path, response.status, started)
            if response.status >= 400:
                log.info("request refused", path=request.path, status=response.status)
        return response
    finally:
        structlog.contextvars.unbind_contextvars("request_id")


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every response names its request (on_response_prepare: also for streams and for
    responses a handler sends itself, whose headers are gone before the middleware sees them)."""
    request_id = request.get("request_id")
    if request_id:
        response.headers["X-Request-Id"] = request_id


async def _send(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Send the whole response now, so that what the handler does next (the log line and the
    metrics, about 0.4 ms) is not part of the client's wait."""
    await response.prepare(request)
    await response.write_eof()
    return response


async def _encode(synthesis: Synthesis, fmt: str) -> bytes | bytearray:
    """WAV and raw PCM are a header and the engine's 16-bit samples, copied: encoded on the
    event loop, since a hop to a thread costs more than that.  Compressed formats take longer
    and go to a thread."""
    args = (synthesis.audio, synthesis.sample_rate, fmt, synthesis.pcm)
    if fmt in audio_format.UNCOMPRESSED:
        return audio_format.encode(*args)
    return await asyncio.to_thread(audio_format.encode, *args)


async def speech(request: web.Request) -> web.StreamResponse:
    service: Service = request.app["service"]
    ask = parse_openai(service, await _json_body(request))
    if ask.stream and ask.fmt in audio_format.STREAMABLE:
        return await _stream_speech(request, service, ask)
    synth = Synthesizer(service)
    result = await synth.run(ask.req)
    t0 = time.monotonic()
    audio = result.synthesis.audio
    sr = result.synthesis.sample_rate
    body = await _encode(result.synthesis, ask.fmt)
    encode_s = time.monotonic() - t0
    headers = {"X-Untrained-Model": "true"} if service.model_untrained() else {}
    response = await _send(request, web.Response(body=body, content_type=audio_format.content_type(ask.fmt),
                                                 headers=headers))
    _log_done("/v1/audio/speech", ask.req, result, len(audio) / sr, encode_s, None, service)
    return response


class _UnderWay:
    """In a stream's queue before its first piece: the job runs on the device, past every check
    that could refuse it."""


_UNDER_WAY = _UnderWay()


class ChunkRelay:
    """Carries a stream's audio chunks from the worker thread to the event loop, and the word
    that the job is under way (:meth:`under_way`), which may come before the first chunk.

    After pushing the first chunk the worker waits, at most ``handoff_s``, until the loop says
    it has sent that first audio: otherwise the two threads trade the GIL while the worker
    launches the next chunk, and the first audio waits for them (:data:`FIRST_AUDIO_HANDOFF_S`).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, handoff_s: float = FIRST_AUDIO_HANDOFF_S) -> None:
        self.pieces: asyncio.Queue[Piece | _UnderWay | None] = asyncio.Queue()
        self._loop = loop
        self._handoff_s = handoff_s
        self._first_sent = threading.Event()

    def push(self, chunk: Piece) -> None:
        """Worker thread: one more chunk."""
        self._loop.call_soon_threadsafe(self.pieces.put_nowait, chunk)
        if not self._first_sent.is_set():
            self._first_sent.wait(self._handoff_s)  # releases the GIL: the loop sends it now
            self._first_sent.set()  # once: a loop too busy to answer must not hold up every chunk

    def under_way(self) -> None:
        """Worker thread: the job's work is queued on the device."""
        self._loop.call_soon_threadsafe(self.pieces.put_nowait, _UNDER_WAY)

    async def next_piece(self) -> Piece | None:
        """Event loop: the next chunk, or None when there are no more (the word that the job is
        under way, if still queued, is passed over)."""
        while isinstance(item := await self.pieces.get(), _UnderWay):
            pass
        return item

    def close(self) -> None:
        """Any thread: no more chunks (the job ended, however it ended)."""
        self._loop.call_soon_threadsafe(self.pieces.put_nowait, None)

    def first_sent(self) -> None:
        """Event loop: the first audio went out, or never will; the worker may go on."""
        self._first_sent.set()


async def _stream_speech(request: web.Request, service: Service, ask: SpeechAsk) -> web.StreamResponse:
    arrived = time.monotonic()
    relay = ChunkRelay(asyncio.get_running_loop())
    synth = Synthesizer(service)
    job = synth.submit(ask.req, on_chunk=relay.push, on_under_way=relay.under_way)
    task = asyncio.ensure_future(synth.result(job))
    task.add_done_callback(lambda _t: relay.close())
    # Commit to a 200 once the job is under way on the device (no check can refuse it any more)
    # or has its first audio, whichever comes first; a job refused or failed before that gets its
    # own status.  Committing while the GPU still works sends the headers ahead of the audio
    # (0.15 ms of aiohttp's, and the client's reading of them, off the first audio).  A failure
    # after that ends the stream early, as one after the first audio always did.
    try:
        first = await relay.pieces.get()
    except asyncio.CancelledError:  # the client went away before its first audio: stop the job
        task.cancel()
        raise
    if first is None:
        await task  # raises the ApiError for a refused or failed job
    response = web.StreamResponse(headers={"Content-Type": audio_format.content_type(ask.fmt)})
    if service.model_untrained():
        response.headers["X-Untrained-Model"] = "true"
    response.enable_chunked_encoding()
    await response.prepare(request)
    sr = SAMPLE_RATE
    encode_s = 0.0
    ttfa: float | None = None
    samples = 0
    try:
        if ask.fmt == "wav":
            await response.write(audio_format.streaming_wav_header(sr))
        piece = await relay.next_piece() if isinstance(first, _UnderWay) else first
        while piece is not None:
            t0 = time.monotonic()
            data = audio_format.stream_piece(piece.audio, sr, ask.fmt, piece.pcm)
            encode_s += time.monotonic() - t0
            await response.write(data)
            samples += len(piece)
            if ttfa is None:
                ttfa = time.monotonic() - arrived
                service.metrics.ttfa.observe(ttfa)
                relay.first_sent()
            piece = await relay.next_piece()
        result = await task
    except (ConnectionResetError, asyncio.CancelledError):
        task.cancel()
        raise
    finally:
        relay.first_sent()
    await response.write_eof()
    _log_done("/v1/audio/speech", ask.req, result, samples / sr, encode_s, ttfa, service)
    return response


async def ishowtts_tts(request: web.Request) -> web.Response:
    service: Service = request.app["service"]
    req = parse_ishowtts(service, await _json_body(request))
    result = await Synthesizer(service).run(req)
    t0 = time.monotonic()
    audio = result.synthesis.audio
    sr = result.synthesis.sample_rate
    wav = await _encode(result.synthesis, "wav")
    encode_s = time.monotonic() - t0
    request_id = structlog.contextvars.get_contextvars().get("request_id", "")
    response = web.json_response({
        "request_id": request_id,
        "voice_id": req.voice_id,
        "sample_rate": sr,
        "audio_base64": base64.b64encode(wav).decode("ascii"),
        "waveform_len": len(audio),
        "format": "audio/wav",
        "untrained": service.model_untrained(),
    })
    await _send(request, response)
    _log_done("/api/tts", req, result, len(audio) / sr, encode_s, None, service)
    return response


async def voices(request: web.Request) -> web.Response:
    service: Service = request.app["service"]
    listing = service.voice_list()
    if request.path == "/api/voices":
        return web.json_response(listing)
    return web.json_response({"voices": listing, "openai_aliases": list(OPENAI_VOICES),
                              "default": service.config.synthesis.default_voice})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    service: Service = request.app["service"]
    reason = service.not_ready_reason()
    if reason is not None:
        return web.json_response({"status": "not ready", "reason": reason}, status=503)
    return web.json_response({"status": "ready", "untrained": service.model_untrained()})


async def metrics(request: web.Request) -> web.Response:
    service: Service = request.app["service"]
    return web.Response(body=service.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})


SPEECH_PATHS = ("/v1/audio/speech", "/api/tts")


def create_app(service: Service) -> web.Application:
    app = web.Application(client_max_size=service.config.limits.max_body_bytes,
                          middlewares=[request_context_middleware, errors_middleware])
    app["service"] = service
    app.on_response_prepare.append(_add_request_id)
    app.router.add_post("/v1/audio/speech", speech)
    app.router.add_post("/api/tts", ishowtts_tts)
    app.router.add_get("/v1/audio/voices", voices)
    app.router.add_get("/api/voices", voices)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
