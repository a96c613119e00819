"""The composition root: owns the engine slot, worker, HTTP API, admin server and notifier.

Lifecycle: start (load, warm up, READY=1), reload (SIGHUP or admin), stop (SIGTERM/SIGINT).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ishowttsd import __version__, config
from ishowttsd.api import create_app
from ishowttsd.config import Config, ConfigError
from ishowttsd.engine.spec import UNTRAINED
from ishowttsd.logs import LogSinks, get_logger, setup_logging
from ishowttsd.metrics import Metrics
from ishowttsd.notify import Notifier
from ishowttsd.settings import SettingsStore
from ishowttsd.worker import ModelSlot, Worker

log = get_logger("ishowttsd.daemon")

EX_OK = 0
EX_SOFTWARE = 70
# Each EXTEND_TIMEOUT_USEC grant while loading; renewed every third of it.
EXTEND_STEP_S = 90.0


class ReloadFailed(Exception):
    """The new config or model could not be applied; the old one keeps serving."""


@dataclasses.dataclass(frozen=True)
class Invocation:
    """How the daemon was started, so a reload re-reads the same way."""

    config_path: Path | None
    dev: bool
    port: int | None
    cwd: Path

    def load_config(self) -> Config:
        return config.load(self.config_path, dev=self.dev, port=self.port, cwd=self.cwd)


def model_key(cfg: Config) -> tuple[Any, ...]:
    """What, when changed, needs a new engine (the rest is applied in place)."""
    return (cfg.model, config.resolved_vocoder(cfg))


def _file_identity(path: str) -> tuple[str, float, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_mtime, st.st_size)


class Daemon:
    def __init__(self, cfg: Config, invocation: Invocation, notifier: Notifier, sinks: LogSinks) -> None:
        self._cfg = cfg
        self._running_loop = ""  # the event loop run() found: run_daemon's choice; a reload cannot change it
        self.invocation = invocation
        self.notifier = notifier
        self.sinks = sinks
        self.metrics = Metrics()
        self.worker = Worker(cfg.limits.queue_size)
        self.settings = SettingsStore(cfg.state_dir / "settings.json", self._baseline(cfg),
                                      baseline_sources=self._baseline_sources(cfg))
        self.started_at = time.time()
        self._ready_reason: str | None = "starting"
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._model_identity: tuple[Any, ...] = ()
        self._runners: list[web.AppRunner] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.last_selfcheck: dict[str, Any] | None = None

    # --- what the API and admin server read -------------------------------------------
    @property
    def config(self) -> Config:
        return self._cfg

    def not_ready_reason(self) -> str | None:
        return self._ready_reason

    def effective_nfe(self) -> int:
        return int(self.settings.effective()["nfe"])

    def model_untrained(self) -> bool:
        return self._cfg.model.weights == UNTRAINED

    def voice_list(self) -> list[dict[str, Any]]:
        slot = self.worker.slot
        out = []
        syn = self._cfg.synthesis
        for v in self._cfg.voices:
            entry: dict[str, Any] = {
                "id": v.id, "language": v.language,
                "nfe": v.nfe if v.nfe is not None else self.effective_nfe(),
                "cfg_strength": v.cfg_strength if v.cfg_strength is not None else syn.cfg_strength,
                "speed": v.speed if v.speed is not None else syn.speed,
                "sway": v.sway if v.sway is not None else syn.sway,
                "default": v.id == syn.default_voice,
                "loaded": bool(slot and v.id in slot.voices),
            }
            if slot and v.id in slot.voice_errors:
                entry["error"] = slot.voice_errors[v.id]
            out.append(entry)
        return out

    @staticmethod
    def _baseline(cfg: Config) -> dict[str, Any]:
        return {"nfe": cfg.synthesis.nfe}

    @staticmethod
    def _baseline_sources(cfg: Config) -> dict[str, str]:
        return {"nfe": "config file" if cfg.synthesis.nfe != config.SynthesisConfig().nfe else "default"}

    # --- start ------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._running_loop = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
        for sig, handler in ((signal.SIGTERM, self.request_stop), (signal.SIGINT, self.request_stop),
                             (signal.SIGHUP, self._on_sighup), (signal.SIGUSR1, self._on_sigusr1)):
            loop.add_signal_handler(sig, handler)
        self._make_dirs()
        self.settings.load()
        self.metrics.bind(queue_depth=lambda: self.worker.depth(), nfe=self.effective_nfe,
                          reference_decodes=self._reference_decodes)
        try:
            await self._start_servers()
        except OSError as exc:
            log.error("cannot listen", error=str(exc), listen=self._cfg.http.listen, socket=self._cfg.admin.socket)
            return EX_SOFTWARE
        self.worker.start()
        try:
            slot = await self._load_slot(self._cfg)
        except Exception as exc:  # the engine's own errors and anything torch raises
            log.error("model load failed", error=str(exc), error_type=type(exc).__name__)
            self.notifier.status(f"model load failed: {exc}")
            await self._teardown()
            return EX_SOFTWARE
        if self._stop.is_set():
            await self._teardown()
            return EX_OK
        await self._install(slot)
        self._model_identity = self._identity(self._cfg)
        self._ready_reason = None
        status = self._status_line()
        log.info("ready", status=status, http=self._cfg.http.listen, admin_socket=self._cfg.admin.socket,
                 event_loop=self._running_loop)
        self.notifier.ready(status)
        self._spawn(self._watchdog())
        await self._stop.wait()
        return await self._shutdown()

    def _status_line(self) -> str:
        m = self._cfg.model
        weights = "untrained (noise)" if m.weights == UNTRAINED else Path(m.weights).name
        slot = self.worker.slot
        device = slot.engine.info.device if slot else m.device
        return f"ready: {m.architecture} {weights} on {device}, nfe {self.effective_nfe()}"

    def _make_dirs(self) -> None:
        d = self._cfg.daemon
        for path, mode in ((d.state_dir, 0o750), (d.cache_dir, 0o750), (d.runtime_dir, 0o750)):
            Path(path).mkdir(parents=True, exist_ok=True, mode=mode)
        Path(self._cfg.admin.socket).parent.mkdir(parents=True, exist_ok=True, mode=0o750)

    async def _start_servers(self) -> None:
        host, _, port = self._cfg.http.listen.rpartition(":")
        runner = web.AppRunner(create_app(self), handler_cancellation=True, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, host.strip("[]"), int(port), reuse_address=True).start()
        from ishowttsd.admin.server import start_admin_server

        self._runners.append(await start_admin_server(self))

    def _reference_decodes(self) -> float:
        slot = self.worker.slot
        return float(getattr(slot.engine, "decode_count", 0)) if slot else 0.0

    async def _load_slot(self, cfg: Config, *, engine: Any = None) -> ModelSlot:
        """Load (or reuse) an engine, prepare the voices and warm up, beside whatever serves now."""
        progress: Callable[[str], None] = self._progress_reporter()
        keepalive = asyncio.ensure_future(self._extend_timeout_while_loading())
        try:
            return await asyncio.to_thread(self._build_slot, cfg, engine, progress)
        finally:
            keepalive.cancel()

    async def _extend_timeout_while_loading(self) -> None:
        # A first torch.compile can run for minutes without a progress message: keep asking
        # systemd for more time while the load really runs, instead of guessing one long grant.
        while True:
            self.notifier.extend_timeout(EXTEND_STEP_S)
            await asyncio.sleep(EXTEND_STEP_S / 3)

    def _progress_reporter(self) -> Callable[[str], None]:
        loop = asyncio.get_running_loop()

        def report(message: str) -> None:  # called from the loading thread
            def send() -> None:
                self.notifier.status(message)
                log.info("loading", step=message)

            loop.call_soon_threadsafe(send)

        return report

    def _build_slot(self, cfg: Config, engine: Any, progress: Callable[[str], None]) -> ModelSlot:
        from ishowttsd.engine.f5 import Engine, VoiceError

        if engine is None:
            progress(f"loading model {cfg.model.architecture} ({cfg.model.weights})")
            engine = Engine.load(cfg.model, vocoder=config.resolved_vocoder(cfg), progress=progress,
                                 cache_dir=cfg.daemon.cache_dir)
        voices: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for spec in cfg.voices:
            progress(f"preparing voice {spec.id}")
            try:
                voices[spec.id] = engine.prepare_voice(spec)
            except VoiceError as exc:
                errors[spec.id] = str(exc)
                log.error("voice failed", voice=spec.id, error=str(exc))
        if not voices:
            raise ReloadFailed("no voice could be loaded: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
        warm_voice = voices.get(cfg.synthesis.default_voice) or next(iter(voices.values()))
        nfes = sorted({self.effective_nfe(), *(v.nfe for v in cfg.voices if v.nfe is not None)})
        # Guided and unguided (cfg_strength 0) requests run different shapes: warm what is configured.
        voice_cfgs = (v.cfg_strength for v in cfg.voices if v.cfg_strength is not None)
        strengths = sorted({cfg.synthesis.cfg_strength, *voice_cfgs})
        progress(f"warming up (nfe {', '.join(map(str, nfes))})")
        engine.warm_up(warm_voice, nfes, strengths)
        return ModelSlot(engine=engine, voices=voices, spec=cfg.model, voice_errors=errors)

    async def _install(self, slot: ModelSlot) -> None:
        await asyncio.wrap_future(self.worker.call(lambda _old: self.worker.install(slot)))
        info = slot.engine.info.as_dict()
        self.metrics.model.info({k: str(info.get(k)) for k in ("architecture", "weights", "untrained", "device",
                                                                "precision", "gpu_name", "f5_tts_version")})

    def _identity(self, cfg: Config) -> tuple[Any, ...]:
        m = cfg.model
        return (model_key(cfg), _file_identity(m.weights) if m.weights != UNTRAINED else None)

    # --- watchdog ---------------------------------------------------------------------
    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval_s
        if interval is None:
            return
        stale_after = self._cfg.daemon.heartbeat_stale_s
        while not self._stop.is_set():
            age = self.worker.heartbeat_age()
            if age < stale_after:
                self.notifier.watchdog()
            else:
                # No ping: systemd's WatchdogSec runs out and it restarts us, as it should
                # when the GPU thread is stuck.
                log.error("worker heartbeat stale; withholding watchdog ping", heartbeat_age_s=round(age, 1))
            await asyncio.sleep(interval)

    # --- reload -----------------------------------------------------------------------
    def _on_sighup(self) -> None:
        self._spawn(self._reload_logged("SIGHUP"))

    def _on_sigusr1(self) -> None:
        self.sinks.reopen()
        log.info("log file reopened")

    async def _reload_logged(self, trigger: str) -> None:
        with contextlib.suppress(ReloadFailed):
            await self.reload(trigger)

    async def reload(self, trigger: str) -> dict[str, Any]:
        """Re-read config and voices; swap the model only if its section changed."""
        async with self._reload_lock:
            self.notifier.reloading()
            log.info("reloading", trigger=trigger)
            try:
                result = await self._reload()
            except (ConfigError, ReloadFailed) as exc:
                log.error("reload failed; the old config keeps serving", trigger=trigger, error=str(exc))
                self.notifier.ready(self._status_line() + " (last reload failed)")
                raise ReloadFailed(str(exc)) from exc
            except Exception as exc:
                log.error("reload failed; the old config keeps serving", trigger=trigger,
                          error=str(exc), error_type=type(exc).__name__)
                self.notifier.ready(self._status_line() + " (last reload failed)")
                raise ReloadFailed(f"{type(exc).__name__}: {exc}") from exc
            self.notifier.ready(self._status_line())
            log.info("reloaded", trigger=trigger, **result)
            return result

    async def _reload(self) -> dict[str, Any]:
        new_cfg = await asyncio.to_thread(self.invocation.load_config)
        missing = config.model_files_missing(new_cfg)
        if missing:
            raise ReloadFailed(f"model files missing: {', '.join(missing)}")
        old_slot = self.worker.slot
        identity = self._identity(new_cfg)
        swap_model = identity != self._model_identity or old_slot is None
        reuse = None if swap_model else old_slot.engine if old_slot else None
        new_slot = await self._load_slot(new_cfg, engine=reuse)
        await self._install(new_slot)
        self._cfg = new_cfg
        self._model_identity = identity
        self.settings.rebase(self._baseline(new_cfg), self._baseline_sources(new_cfg))
        if new_cfg.limits.queue_size != self.worker.queue_size:
            log.warning("queue_size changes take effect at restart", queue_size=self.worker.queue_size)
        if new_cfg.http.event_loop != self._running_loop:
            log.warning("event_loop changes take effect at restart", event_loop=self._running_loop)
        return {"model_reloaded": swap_model, "voices": sorted(new_slot.voices),
                "voice_errors": new_slot.voice_errors, "sources": list(new_cfg.sources)}

    # --- stop -------------------------------------------------------------------------
    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stop requested")
            self._stop.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shutdown(self) -> int:
        self.notifier.stopping()
        self._ready_reason = "stopping"
        dropped = self.worker.stop_accepting()
        log.info("stopping", queued_refused=len(dropped))
        # Stop listening first; requests in flight finish or get their 503.
        for runner in self._runners:
            for site in list(runner.sites):
                await site.stop()
        finished = await asyncio.to_thread(self.worker.shutdown, self._cfg.daemon.drain_timeout_s)
        if not finished:
            log.warning("running job did not finish within the drain timeout",
                        drain_timeout_s=self._cfg.daemon.drain_timeout_s)
        await self._teardown()
        log.info("stopped")
        return EX_OK

    async def _teardown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._cfg.admin.socket)

    # --- status -----------------------------------------------------------------------
    def uptime_s(self) -> float:
        return time.time() - self.started_at


def run_daemon(cfg: Config, *, config_path: Path | None, dev: bool, port: int | None, cwd: Path) -> int:
    sinks = setup_logging(cfg.log.level, cfg.log.file)
    log.info("starting", version=__version__, pid=os.getpid(), config=list(cfg.sources), dev=dev)
    missing = config.model_files_missing(cfg)
    if missing:
        log.error(
            "model files missing: run `ishowttsd --fetch-model --accept-license` "
            "or set [model] weights (e.g. weights = \"untrained\" for a noise-only test model)",
            missing=missing,
        )
        return config.EX_CONFIG
    daemon = Daemon(cfg, Invocation(config_path, dev, port, cwd), Notifier(), sinks)
    if cfg.http.event_loop == "uvloop":
        import uvloop  # a dependency; imported here so that "asyncio" never needs it

        return uvloop.run(daemon.run())
    return asyncio.run(daemon.run())
