"""The one thread that owns the model: a bounded queue in front of it, cancel, heartbeat.

The event loop never runs torch.  It hands jobs to this thread and awaits their
futures.  Live requests go before background work (the self-check), so users are never
starved by it.  Control calls (swap the model, prepare a voice) run on the same thread,
in between jobs, so nothing ever touches the model concurrently.

A synthesis is a generator (``Engine.synthesis_steps``) that yields just before it waits for
the GPU.  At that point the thread starts the next live request, so its work is queued on the
GPU before the first one's audio is handed over: the GPU does not idle while the host
finishes one request and prepares the next.  At most :data:`IN_FLIGHT` jobs are under way, and
they take turns.  Background work only starts on an idle thread, and control calls wait until
nothing is in flight.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ishowttsd.engine.spec import SynthesisRequest
from ishowttsd.engine.text import Piece
from ishowttsd.logs import get_logger

T = TypeVar("T")
LIVE = 0
BACKGROUND = 1
_CONTROL = -1
# Jobs under way at once: one on the GPU and the next queued behind it is all overlap needs.
IN_FLIGHT = 2

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


Steps = Generator[None, None, T]


@dataclass
class Job(Generic[T]):
    # Called on the worker thread with the current slot and the job's stop check; the generator
    # yields where the thread may start other work, and returns the job's result.
    steps: Callable[[ModelSlot | None, Callable[[], bool]], Steps[T]]
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
        self._running: list[Job[Any]] = []
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
                   on_chunk: Callable[[Piece], None] | None = None,
                   first_chunk_bytes: int | None = None,
                   on_under_way: Callable[[], None] | None = None) -> Job[JobResult]:
        """Queue a synthesis; the caller awaits job.future and sets job.cancelled to drop it.

        ``first_chunk_bytes`` caps the first text chunk, so a stream's first audio comes sooner.
        ``on_under_way`` is called once, on this thread, when the job first waits for the device
        with its work queued there: it has passed every check that could refuse it (voice,
        text, parameters).  An engine that never waits (the CPU's) never calls it.
        """
        job: Job[JobResult] = Job(
            steps=lambda slot, stop: self._synthesize(slot, req, on_chunk, stop, job, first_chunk_bytes, on_under_way),
            priority=priority)
        self._enqueue(job, limit=self._queue_size if priority == LIVE else None)
        return job

    def call(self, fn: Callable[[ModelSlot | None], T]) -> Future[T]:
        """Run fn on the worker thread between jobs (control work: swap model, prepare voices)."""
        job: Job[T] = Job(steps=lambda slot, _stop: _at_once(fn, slot), priority=_CONTROL)
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
            for running in list(self._running):
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
    def _next(self, busy: bool) -> Job[Any] | None:
        """The next job to start.  Idle (``busy`` false): waits for one of any kind, or returns
        None when stopping.  Busy: returns a live job at once, or None; a queued control call
        holds back new work until what is in flight is done."""
        with self._cond:
            while True:
                self._beat = time.monotonic()
                if busy and self._queues[_CONTROL]:
                    return None
                for priority in (LIVE,) if busy else (_CONTROL, LIVE, BACKGROUND):
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
                        return job
                if busy or self._stop:
                    return None
                # Wake up every second so the heartbeat stays fresh while idle.
                self._cond.wait(timeout=1.0)

    def _loop(self) -> None:
        flights: deque[tuple[Job[Any], Steps[Any]]] = deque()
        while True:
            if len(flights) < IN_FLIGHT:
                job = self._next(busy=bool(flights))
                if job is not None:
                    steps = job.steps(self._slot, self._stop_check(job))
                    self._running.append(job)
                    if not self._advance(job, steps):
                        flights.append((job, steps))
                    continue
                if not flights:
                    return
            job, steps = flights.popleft()
            if not self._advance(job, steps):
                flights.append((job, steps))  # its turn again after the other's

    def _stop_check(self, job: Job[Any]) -> Callable[[], bool]:
        def should_stop() -> bool:
            self._beat = time.monotonic()
            return job.cancelled.is_set()

        return should_stop

    def _advance(self, job: Job[Any], steps: Steps[Any]) -> bool:
        """Run a job to its next yield; True when it has ended (its future then holds the end)."""
        try:
            next(steps)
        except StopIteration as done:
            job.future.set_result(done.value)
        except BaseException as exc:  # the job's owner decides what an error means
            job.future.set_exception(exc)
        else:
            return False
        finally:
            self._beat = time.monotonic()
        self._running.remove(job)
        return True

    def _synthesize(self, slot: ModelSlot | None, req: SynthesisRequest,
                    on_chunk: Callable[[Piece], None] | None,
                    should_stop: Callable[[], bool], job: Job[Any],
                    first_chunk_bytes: int | None = None,
                    on_under_way: Callable[[], None] | None = None) -> Steps[JobResult]:
        if slot is None:
            raise WorkerStopped("no model is loaded")
        voice = slot.voices.get(req.voice_id)
        if voice is None:
            raise UnknownVoice(req.voice_id)
        started = time.monotonic()
        extra = {"first_chunk_bytes": first_chunk_bytes} if first_chunk_bytes else {}
        steps = slot.engine.synthesis_steps(voice, req, on_chunk=on_chunk, should_stop=should_stop, **extra)
        synthesis = yield from (steps if on_under_way is None else _first_wait_calls(on_under_way, steps))
        finished = time.monotonic()
        self.served += 1
        if job.priority == LIVE:
            self.served_live += 1
        return JobResult(synthesis=synthesis, queue_wait_s=started - job.enqueued_at,
                         started_at=started, finished_at=finished)


def _first_wait_calls(hook: Callable[[], None], steps: Steps[T]) -> Steps[T]:
    """``steps``, calling ``hook`` at its first yield (its first wait for the device)."""
    try:
        next(steps)
    except StopIteration as done:
        result: T = done.value
        return result
    hook()
    yield
    return (yield from steps)


def _at_once(fn: Callable[[ModelSlot | None], T], slot: ModelSlot | None) -> Steps[T]:
    """A control call as a job's steps: it runs whole on its first step, yielding nothing."""
    yield from ()
    return fn(slot)
