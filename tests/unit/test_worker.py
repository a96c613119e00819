"""The worker thread's order of work when the engine overlaps (as on CUDA): the next live request
is queued on the device before the last one is waited for; background work and control calls
never join work in flight.  A real tiny engine on the CPU, told to overlap; the order is read
from its launches and collects."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ishowttsd.engine.f5 import Engine
from ishowttsd.engine.spec import SynthesisRequest
from ishowttsd.worker import BACKGROUND, LIVE, UnknownVoice, Worker

TEXTS = {"A": "The first request.", "B": "Then the second one.", "C": "A third, later."}


class Traced:
    """The engine's launches and collects, named by the request text's key in TEXTS."""

    def __init__(self, engine: Engine) -> None:
        self.events: list[tuple[str, str]] = []
        self.on_launch: dict[str, Any] = {}
        names = {text: key for key, text in TEXTS.items()}
        launch, collect = engine._launch, engine._collect
        self._owner: dict[int, str] = {}

        def traced_launch(*args: Any) -> Any:
            req = args[-1]
            name = names[req.text]
            self.events.append(("launch", name))
            if name in self.on_launch:
                self.on_launch.pop(name)()
            pending = launch(*args)
            self._owner[id(pending)] = name
            return pending

        def traced_collect(pending: Any, timings: dict[str, float]) -> Any:
            self.events.append(("collect", self._owner[id(pending)]))
            return collect(pending, timings)

        engine._launch = traced_launch  # type: ignore[method-assign]
        engine._collect = traced_collect  # type: ignore[method-assign]


@pytest.fixture()
def setup(overlapping_worker: tuple[Worker, Engine, Any]) -> Iterator[tuple[Worker, Traced, threading.Event]]:
    worker, engine, _voice = overlapping_worker
    traced = Traced(engine)
    gate = threading.Event()
    worker.call(lambda _slot: gate.wait(10))  # holds the thread until the test has queued its jobs
    yield worker, traced, gate
    gate.set()


def _req(key: str) -> SynthesisRequest:
    return SynthesisRequest(text=TEXTS[key], voice_id="default", seed=3)


def test_the_next_live_request_is_queued_before_the_last_is_waited_for(setup: Any) -> None:
    worker, traced, gate = setup
    jobs = [worker.synthesize(_req(k), priority=LIVE) for k in "ABC"]
    gate.set()
    results = [job.future.result(timeout=60) for job in jobs]
    assert traced.events == [
        ("launch", "A"), ("launch", "B"), ("collect", "A"),
        ("launch", "C"), ("collect", "B"), ("collect", "C"),
    ]
    # Each gets the audio it gets alone.
    alone = worker.synthesize(_req("B"))
    assert np.array_equal(alone.future.result(timeout=60).synthesis.audio, results[1].synthesis.audio)


def test_background_work_waits_for_an_idle_thread(setup: Any) -> None:
    worker, traced, gate = setup
    background = worker.synthesize(_req("B"), priority=BACKGROUND)
    live = worker.synthesize(_req("A"), priority=LIVE)
    gate.set()
    live.future.result(timeout=60)
    background.future.result(timeout=60)
    assert traced.events == [("launch", "A"), ("collect", "A"), ("launch", "B"), ("collect", "B")]


def test_a_control_call_waits_for_the_work_in_flight_and_holds_back_new_work(setup: Any) -> None:
    worker, traced, gate = setup
    ran: list[str] = []
    later: list[Any] = []

    def arrive() -> None:  # while A is on the device: a reload comes in, then another request
        later.append(worker.call(lambda _slot: ran.append(f"control after {len(traced.events)} events")))
        later.append(worker.synthesize(_req("C")))

    traced.on_launch["A"] = arrive
    first = worker.synthesize(_req("A"))
    gate.set()
    first.future.result(timeout=60)
    later[0].result(timeout=60)
    later[1].future.result(timeout=60)
    assert ran == ["control after 2 events"]  # after A's launch and collect
    assert traced.events == [("launch", "A"), ("collect", "A"), ("launch", "C"), ("collect", "C")]


def test_under_way_is_said_once_between_the_first_launch_and_the_first_wait(setup: Any) -> None:
    """``on_under_way`` (a stream commits to its 200 on it) comes when the job's work is queued
    on the device, before anything is waited for; a job refused at its start never says it."""
    worker, traced, gate = setup
    said: list[int] = []
    job = worker.synthesize(_req("A"), on_under_way=lambda: said.append(len(traced.events)))
    refused = worker.synthesize(SynthesisRequest(text=TEXTS["B"], voice_id="nobody"),
                                on_under_way=lambda: said.append(-1))
    gate.set()
    job.future.result(timeout=60)
    with pytest.raises(UnknownVoice):
        refused.future.result(timeout=60)
    assert said == [1], said  # after A's launch, before its collect
    assert traced.events == [("launch", "A"), ("collect", "A")]
