"""The one thread that owns the model: a bounded queue in front of it, cancel, heartbeat.

The event loop never runs torch.  It hands jobs to this thread and awaits their
futures.  Live requests go before background work (the self-check), so users are never
starved by it.  Control calls (swap the model, prepare a voice) run on the same thread,
in between jobs, so nothing ever touches the model concurrently.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from ishowttsd.engine.spec import SynthesisRequest
from ishowttsd.logs import get_logger

T = TypeVar("T")
LIVE = 0
BACKGROUND = 1
_CONTROL = -1

log = get_logger("ishowttsd.worker")


class QueueFull(Exception):
    """The live queue holds [limits] queue_size jobs already."""


class WorkerStopped(Exception):
    """The daemon is stopping; the job was not run."""


class JobCancelled(Exception):
    """The client went away, or timed out, before or while the job ran."""


class UnknownVoice(Exception):
    pass


@dataclass
class ModelSlot:
    """A loaded engine and the voices prepared for it; swapped whole on reload."""

    engine: Any
    voices: dict[str, Any]
    spec: Any
    voice_errors: dict[str, str] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)


@dataclass
class JobResult:
    synthesis: Any
    queue_wait_s: float
    started_at: float
    finished_at: float


@dataclass
class Job(Generic[T]):
    run: Callable[[ModelSlot, Callable[[], bool]], T]
    priority: int
    future: Future[T] = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued_at: float = field(default_factory=time.monotonic)


class Worker:
    def __init__(self, queue_size: int, name: str = "ishowttsd-gpu") -> None:
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._queues: dict[int, list[Job[Any]]] = {_CONTROL: [], LIVE: [], BACKGROUND: []}
        self._slot: ModelSlot | None = None
        self._accepting = True
        self._stop = False
        self._running: Job[Any] | None = None
        self._beat = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._seq = itertools.count()
        self.served = 0
        self.served_live = 0

    # --- called from the event loop -------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    @property
    def slot(self) -> ModelSlot | None:
        return self._slot

    def depth(self, priority: int = LIVE) -> int:
        with self._cond:
            return len(self._queues[priority])

    @property
    def queue_size(self) -> int:
        return self._queue_size

    def heartbeat_age(self) -> float:
        return time.monotonic() - self._beat

    def synthesize(self, req: SynthesisRequest, *, priority: int = LIVE,
                   on_chunk: Callable[[np.ndarray], None] | None = None,
                   first_chunk_bytes: int | None = None) -> Job[JobResult]:
        """Queue a synthesis; the caller awaits job.future and sets job.cancelled to drop it.

        ``first_chunk_bytes`` caps the first text chunk, so a stream's first audio comes sooner.
        """
        job: Job[JobResult] = Job(
            run=lambda slot, stop: self._synthesize(slot, req, on_chunk, stop, job, first_chunk_bytes),
            priority=priority)
        self._enqueue(job, limit=self._queue_size if priority == LIVE else None)
        return job

    def call(self, fn: Callable[[ModelSlot | None], T]) -> Future[T]:
        """Run fn on the worker thread between jobs (control work: swap model, prepare voices)."""
        job: Job[T] = Job(run=lambda slot, _stop: fn(slot), priority=_CONTROL)
        self._enqueue(job, limit=None)
        return job.future

    def install(self, slot: ModelSlot) -> ModelSlot | None:
        """Make slot current; returns the previous one.  Must run on the worker thread (via call)."""
        old, self._slot = self._slot, slot
        return old

    def stop_accepting(self) -> list[Job[Any]]:
        """Refuse new work and hand back the queued jobs (the caller answers them with 503)."""
        with self._cond:
            self._accepting = False
            dropped = self._queues[LIVE] + self._queues[BACKGROUND]
            self._queues[LIVE], self._queues[BACKGROUND] = [], []
        for job in dropped:
            job.future.set_exception(WorkerStopped("the daemon is stopping"))
        return dropped

    def shutdown(self, timeout: float) -> bool:
        """Let the running job finish within timeout, then stop the thread.  True if it ended."""
        self.stop_accepting()
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            running = self._running
            if running is not None:
                running.cancelled.set()
            self._thread.join(1.0)
        return not self._thread.is_alive()

    def _enqueue(self, job: Job[Any], limit: int | None) -> None:
        with self._cond:
            if not self._accepting:
                raise WorkerStopped("the daemon is stopping")
            queue = self._queues[job.priority]
            if limit is not None and len(queue) >= limit:
                raise QueueFull(f"{len(queue)} requests are already waiting")
            queue.append(job)
            self._cond.notify()

    # --- the worker thread ----------------------------------------------------------
    def _next(self) -> Job[Any] | None:
        with self._cond:
            while True:
                self._beat = time.monotonic()
                for priority in (_CONTROL, LIVE, BACKGROUND):
                    queue = self._queues[priority]
                    while queue:
                        job = queue.pop(0)
                        if job.cancelled.is_set():
                            # The client went away (or timed out) while waiting: skip the work.
                            log.info("dropped queued job: its client is gone",
                                     queue_wait_s=round(time.monotonic() - job.enqueued_at, 3))
                            job.future.set_exception(JobCancelled("cancelled while queued"))
                            continue
                        if not job.future.set_running_or_notify_cancel():
                            continue
                        self._running = job
                        return job
                if self._stop:
                    return None
                # Wake up every second so the heartbeat stays fresh while idle.
                self._cond.wait(timeout=1.0)

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            def should_stop(job: Job[Any] = job) -> bool:
                self._beat = time.monotonic()
                return job.cancelled.is_set()

            try:
                result = job.run(self._slot, should_stop)  # type: ignore[arg-type]
            except BaseException as exc:  # the job's owner decides what an error means
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            finally:
                self._running = None
                self._beat = time.monotonic()

    def _synthesize(self, slot: ModelSlot | None, req: SynthesisRequest,
                    on_chunk: Callable[[np.ndarray], None] | None,
                    should_stop: Callable[[], bool], job: Job[Any],
                    first_chunk_bytes: int | None = None) -> JobResult:
        if slot is None:
            raise WorkerStopped("no model is loaded")
        voice = slot.voices.get(req.voice_id)
        if voice is None:
            raise UnknownVoice(req.voice_id)
        started = time.monotonic()
        extra = {"first_chunk_bytes": first_chunk_bytes} if first_chunk_bytes else {}
        synthesis = slot.engine.synthesize(voice, req, on_chunk=on_chunk, should_stop=should_stop, **extra)
        finished = time.monotonic()
        self.served += 1
        if job.priority == LIVE:
            self.served_live += 1
        return JobResult(synthesis=synthesis, queue_wait_s=started - job.enqueued_at,
                         started_at=started, finished_at=finished)
