"""The admin HTTP app on the Unix socket: SO_PEERCRED authorization, audit, NDJSON progress.

Anyone who can connect may read (status, history).  Changing things needs uid 0, the
daemon's own uid, or membership of [admin] admin_group.  The socket is 0660 from its
first instant (bound under a umask), owned by [admin] group when that group exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import json
import os
import pwd
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ishowttsd import __version__
from ishowttsd.logs import get_logger
from ishowttsd.settings import NothingToRollback, UnknownVersion, has_epss, validate_nfe

if TYPE_CHECKING:
    from ishowttsd.daemon import Daemon

log = get_logger("ishowttsd.admin")
audit_log = get_logger("ishowttsd.audit")
MAX_BODY = 64 * 1024
NDJSON = "application/x-ndjson"


class AdminError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


# --- who is asking --------------------------------------------------------------------

def peer_credentials(request: web.Request) -> tuple[int, int, int]:
    """(pid, uid, gid) of the connected process, from the kernel (SO_PEERCRED)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        raise AdminError(403, "forbidden", "cannot identify the caller")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return pid, uid, gid


def may_change(uid: int, gid: int, admin_group: str) -> bool:
    if uid in (0, os.getuid()):
        return True
    if not admin_group:
        return False
    try:
        group = grp.getgrnam(admin_group)
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    return gid == group.gr_gid or group.gr_gid in os.getgrouplist(user, gid)


MUTATING = {"/v1/nfe", "/v1/rollback", "/v1/reload", "/v1/selfcheck", "/v1/quality-samples"}


@web.middleware
async def admin_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    daemon: Daemon = request.app["daemon"]
    started = time.monotonic()
    mutating = request.method == "POST" and request.path in MUTATING
    pid = uid = -1
    args: Any = None
    result = "error"
    try:
        pid, uid, gid = peer_credentials(request)
        request["uid"] = uid
        if mutating and not may_change(uid, gid, daemon.config.admin.admin_group):
            raise AdminError(403, "forbidden",
                             f"uid {uid} may read but not change the daemon: it needs root, the daemon's user, "
                             f"or membership of group {daemon.config.admin.admin_group!r}")
        if request.method == "POST":
            args = await _json(request)
            request["args"] = args
        response = await handler(request)
        result = "ok" if response.status < 400 else f"http {response.status}"
        if isinstance(response, web.Response) and response.status >= 400 and response.body:
            with contextlib.suppress(Exception):
                result = json.loads(response.body)["error"]["code"]  # type: ignore[arg-type]
        return response
    except AdminError as exc:
        result = exc.code
        return _error(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        result = f"http {exc.status}"
        code = {404: "unknown_command", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "bad_request")
        message = f"unknown command {request.method} {request.path}" if exc.status == 404 else (exc.text or exc.reason)
        if exc.status == 413:
            message = f"request body is larger than {MAX_BODY} bytes"
        return _error(exc.status, code, message)
    finally:
        if mutating:
            audit_log.info("admin command", uid=uid, pid=pid, command=request.path, arguments=args,
                           result=result,
                           duration_s=round(time.monotonic() - started, 3))


async def _json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise AdminError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise AdminError(400, "invalid_json", "the request body must be a JSON object")
    return body


# --- NDJSON streaming ------------------------------------------------------------------

class ProgressStream:
    """An NDJSON response: progress lines as work goes, then one result line."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response = web.StreamResponse(headers={"Content-Type": NDJSON})
        self._loop = asyncio.get_running_loop()
        self._lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def start(self) -> None:
        self.response.enable_chunked_encoding()
        await self.response.prepare(self.request)

    def emit_threadsafe(self, line: dict[str, Any]) -> None:
        self._loop.call_soon_threadsafe(self._lines.put_nowait, line)

    async def write(self, line: dict[str, Any]) -> None:
        await self.response.write((json.dumps(line, default=str) + "\n").encode())

    async def run(self, work: Callable[[Callable[[dict[str, Any]], None]], Any]) -> Any:
        """Run blocking work in a thread; forward its progress lines as they come."""
        task = asyncio.ensure_future(asyncio.to_thread(work, self.emit_threadsafe))
        task.add_done_callback(lambda _t: self._loop.call_soon_threadsafe(self._lines.put_nowait, None))
        while (line := await self._lines.get()) is not None:
            await self.write(line)
        return await task

    async def fail(self, status: int, code: str, message: str) -> web.StreamResponse:
        """The status line is long gone once streaming started: say the error as the last line."""
        await self.write({"event": "error", "error": {"code": code, "message": message, "status": status}})
        await self.response.write_eof()
        return self.response


    async def finish(self, result: dict[str, Any]) -> web.StreamResponse:
        await self.write({"event": "result", **result})
        await self.response.write_eof()
        return self.response


async def streamed(stream: ProgressStream, work: Awaitable[dict[str, Any]]) -> web.StreamResponse:
    """Finish a streamed command with its result, or with an error line if it failed."""
    try:
        result = await work
    except AdminError as exc:
        return await stream.fail(exc.status, exc.code, exc.message)
    except Exception as exc:  # a bug or an engine failure: report it, keep the daemon up
        log.exception("admin command failed", path=stream.request.path)
        return await stream.fail(500, "internal_error", f"{type(exc).__name__}: {exc}")
    return await stream.finish(result)


# --- handlers -------------------------------------------------------------------------

async def status(request: web.Request) -> web.Response:
    daemon: Daemon = request.app["daemon"]
    return web.json_response(await asyncio.to_thread(build_status, daemon), dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)


def build_status(daemon: Daemon) -> dict[str, Any]:
    from ishowttsd import clocks

    cfg = daemon.config
    slot = daemon.worker.slot
    info = slot.engine.info.as_dict() if slot else {}
    effective = daemon.settings.effective()
    sources = daemon.settings.sources()
    try:
        clock_state = clocks.read_state(cfg.clocks).as_dict()
    except Exception as exc:  # reading sysfs or NVML must never break status
        clock_state = {"provider": cfg.clocks.provider, "error": str(exc)}
    requests = daemon.metrics.requests
    by_status: dict[str, float] = {}
    for metric in requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = sample.labels["status"]
                by_status[key] = by_status.get(key, 0) + sample.value
    last = daemon.last_selfcheck
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(daemon.uptime_s(), 1),
        "ready": daemon.not_ready_reason() is None,
        "not_ready_reason": daemon.not_ready_reason(),
        "untrained": daemon.model_untrained(),
        "model": {
            "architecture": cfg.model.architecture,
            "weights": cfg.model.weights,
            "precision": info.get("precision", cfg.model.precision),
            "device": info.get("device", cfg.model.device),
            "gpu_name": info.get("gpu_name"),
            "gpu_memory_mb": info.get("gpu_memory_mb"),
            "parameters": info.get("parameters"),
            "fast_path": {k: info.get(k) for k in ("compiled", "cuda_graphs", "attention", "qkv_epilogue")},
        },
        "nfe": int(effective["nfe"]),
        "nfe_epss": has_epss(int(effective["nfe"])),
        "settings_version": daemon.settings.version,
        "settings": {k: {"value": v, "source": sources.get(k, "default")} for k, v in effective.items()},
        "voices": daemon.voice_list(),
        "queue": {"depth": daemon.worker.depth(), "size": daemon.worker.queue_size},
        "requests": {"total": int(sum(by_status.values())), "by_status": {k: int(v) for k, v in by_status.items()},
                     "served": daemon.worker.served},
        "clocks": clock_state,
        "selfcheck": ({"status": last["verdict"]["status"], "time": last.get("time")} if last else None),
        "config_files": list(cfg.sources),
        "versions": {"ishowttsd": __version__, "torch": info.get("torch_version"),
                     "cuda": info.get("cuda_version"), "f5_tts": info.get("f5_tts_version")},
    }


async def history(request: web.Request) -> web.Response:
    daemon: Daemon = request.app["daemon"]
    return web.json_response({"versions": daemon.settings.history()}, dumps=_dumps)


async def set_nfe(request: web.Request) -> web.StreamResponse:
    daemon: Daemon = request.app["daemon"]
    args = request["args"]
    if "nfe" not in args:
        raise AdminError(400, "missing_field", "'nfe' is required")
    try:
        nfe = validate_nfe(args["nfe"])
    except ValueError as exc:
        raise AdminError(422, "invalid_value", str(exc)) from None
    validate = args.get("validate", False)
    if not isinstance(validate, bool):
        raise AdminError(400, "invalid_type", "'validate' must be true or false")
    old = daemon.effective_nfe()
    command = f"set-nfe {nfe}" + (" --validate" if validate else "")
    version = daemon.settings.set({"nfe": nfe}, uid=request["uid"], command=command)
    log.info("nfe changed", old=old, new=nfe, settings_version=version.number)
    answer = {"old": old, "new": nfe, "version": version.number, "epss": has_epss(nfe)}
    if not validate:
        return web.json_response(answer)
    from ishowttsd.admin.validation import validate_nfe_change

    stream = ProgressStream(request)
    await stream.start()

    async def work() -> dict[str, Any]:
        result = await validate_nfe_change(daemon, stream, version=version.number, old=old, new=nfe,
                                           uid=request["uid"])
        return {**answer, **result}

    return await streamed(stream, work())


async def rollback(request: web.Request) -> web.Response:
    daemon: Daemon = request.app["daemon"]
    to = request["args"].get("to")
    if to is not None and (not isinstance(to, int) or isinstance(to, bool)):
        raise AdminError(400, "invalid_type", "'to' must be a version number")
    old = daemon.effective_nfe()
    try:
        version = daemon.settings.rollback(to, uid=request["uid"])
    except NothingToRollback as exc:
        raise AdminError(409, "nothing_to_rollback", str(exc)) from None
    except UnknownVersion as exc:
        raise AdminError(404, "unknown_version", str(exc)) from None
    log.info("settings rolled back", to=to, settings_version=version.number, nfe_old=old,
             nfe_new=daemon.effective_nfe())
    return web.json_response({"version": version.number, "restored": daemon.settings.effective(),
                              "changes": version.to_json().get("changes", {})}, dumps=_dumps)


async def reload(request: web.Request) -> web.Response:
    from ishowttsd.daemon import ReloadFailed

    daemon: Daemon = request.app["daemon"]
    try:
        result = await daemon.reload("admin")
    except ReloadFailed as exc:
        raise AdminError(409, "reload_failed", f"reload failed, the old config keeps serving: {exc}") from None
    return web.json_response({"ok": True, **result}, dumps=_dumps)


async def clocks_state(request: web.Request) -> web.Response:
    from ishowttsd import clocks

    daemon: Daemon = request.app["daemon"]
    state = await asyncio.to_thread(clocks.read_state, daemon.config.clocks)
    return web.json_response(state.as_dict(), dumps=_dumps)


async def selfcheck_history(request: web.Request) -> web.Response:
    from ishowttsd.admin.validation import selfcheck_history_records

    daemon: Daemon = request.app["daemon"]
    try:
        last = int(request.query.get("last", "20"))
    except ValueError:
        raise AdminError(400, "invalid_value", "'last' must be a whole number") from None
    records = await asyncio.to_thread(selfcheck_history_records, daemon, last)
    return web.json_response({"records": records, "thresholds": _thresholds(daemon)}, dumps=_dumps)


def _thresholds(daemon: Daemon) -> dict[str, float]:
    s = daemon.config.selfcheck
    return {"max_mean_rtf": s.max_mean_rtf, "max_rtf": s.max_rtf, "max_cv": s.max_cv,
            "max_slowdown": s.max_slowdown}


async def selfcheck(request: web.Request) -> web.StreamResponse:
    from ishowttsd.admin.validation import parse_selfcheck_args, run_selfcheck

    daemon: Daemon = request.app["daemon"]
    options = parse_selfcheck_args(daemon, request["args"])
    stream = ProgressStream(request)
    await stream.start()

    async def work() -> dict[str, Any]:
        return {"record": await run_selfcheck(daemon, stream, **options)}

    return await streamed(stream, work())


async def quality_samples(request: web.Request) -> web.StreamResponse:
    from ishowttsd.admin.validation import parse_quality_args, stream_quality_samples

    daemon: Daemon = request.app["daemon"]
    candidate, against = parse_quality_args(request["args"])
    stream = ProgressStream(request)
    await stream.start()
    return await streamed(stream, stream_quality_samples(daemon, stream, candidate, against))


def create_admin_app(daemon: Daemon) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[admin_middleware])
    app["daemon"] = daemon
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/history", history)
    app.router.add_get("/v1/clocks", clocks_state)
    app.router.add_get("/v1/selfcheck/history", selfcheck_history)
    app.router.add_post("/v1/nfe", set_nfe)
    app.router.add_post("/v1/rollback", rollback)
    app.router.add_post("/v1/reload", reload)
    app.router.add_post("/v1/selfcheck", selfcheck)
    app.router.add_post("/v1/quality-samples", quality_samples)
    return app


# --- the socket -----------------------------------------------------------------------

def bind_admin_socket(path: str, group: str) -> socket.socket:
    """Bind the socket 0660 from its first instant; replace a stale one, refuse a live one."""
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise
            os.unlink(path)  # stale: left by a crash
            log.warning("replaced stale admin socket", socket=path)
        else:
            raise OSError(errno.EADDRINUSE, f"another daemon is serving {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o117)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    if group:
        try:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
        except KeyError:
            log.warning("admin group does not exist; socket keeps the daemon's group", group=group)
        except PermissionError:
            log.warning("cannot give the admin socket to its group", group=group)
    sock.listen(64)
    return sock


async def start_admin_server(daemon: Daemon) -> web.AppRunner:
    runner = web.AppRunner(create_admin_app(daemon), access_log=None)
    await runner.setup()
    sock = bind_admin_socket(daemon.config.admin.socket, daemon.config.admin.group)
    await web.SockSite(runner, sock).start()
    return runner
