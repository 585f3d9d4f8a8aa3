"""The dispatcher on its own: bounded runs, queue depth, refusals, drain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from ionflux import SchemaViolation
from ionflux.triggers import Dispatcher, Overloaded, RunRefused, RunRequest, ShuttingDown


@dataclass
class Result:
    execution_id: str
    graph_name: str = "g"
    graph_version: str = "1"
    overall_status: str = "success"
    output: Any = None
    error_details: list[dict[str, Any]] | None = None
    step_results_summary_cid: str | None = None
    started_at: float = field(default_factory=time.time)
    ended_at: float = field(default_factory=time.time)


class GatedRunner:
    """Stands in for the engine where only the order of events matters: each run
    waits until ``gate`` opens (open from the start unless ``closed``)."""

    def __init__(self, *, closed: bool = False) -> None:
        self.gate = asyncio.Event()
        if not closed:
            self.gate.set()
        self.running = 0
        self.most = 0
        self.count = 0

    async def run(
        self,
        graph_ref: str,
        input: Any,
        *,
        trigger: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> Result:
        if input == "bad":
            raise SchemaViolation("input", "$.text", "'text' is a required property")
        self.running += 1
        self.most = max(self.most, self.running)
        await self.gate.wait()
        self.running -= 1
        self.count += 1
        return Result(f"r{self.count}", output=input)


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Lets the loop turn until ``condition`` holds; the timeout only stops a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0)


class Events:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def apublish(
        self, subject: str, payload: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        self.sent.append((subject, payload))


async def test_runs_are_bounded_and_the_rest_wait_in_line() -> None:
    runner = GatedRunner(closed=True)
    dispatcher = Dispatcher(runner, concurrency=3, publisher=Events())
    requests = [RunRequest("g", i, "manual", "done") for i in range(30)]
    tasks = [asyncio.create_task(dispatcher.run(r)) for r in requests]
    # No run can end while the gate is shut: three run, the rest wait in line.
    await until(lambda: runner.running == 3 and dispatcher.queue_depth() == 27)
    runner.gate.set()
    results = await asyncio.gather(*tasks)
    assert sorted(r.output for r in results) == list(range(30))
    assert runner.most == 3 and dispatcher.slots.high_water == 3
    assert dispatcher.queue_depth() == 0


async def test_a_refused_run_publishes_an_error_event_and_raises() -> None:
    events = Events()
    dispatcher = Dispatcher(GatedRunner(), concurrency=1, publisher=events)
    with pytest.raises(RunRefused) as info:
        await dispatcher.run(RunRequest("g", "bad", "manual", "g.completion"))
    assert info.value.status == 422
    assert info.value.to_dict()["field"] == "$.text"
    assert events.sent[0][0] == "g.completion"
    assert b'"overall_status":"failure"' in events.sent[0][1]
    assert dispatcher.slots.in_flight == 0


async def test_drain_lets_runs_finish_and_refuses_new_ones() -> None:
    runner = GatedRunner(closed=True)
    dispatcher = Dispatcher(runner, concurrency=2, max_accepted=3)
    ids = [dispatcher.submit(RunRequest("g", i, "webhook")) for i in range(3)]
    with pytest.raises(Overloaded):
        dispatcher.submit(RunRequest("g", 9, "webhook"))
    await until(lambda: runner.running == 2)  # two in flight, one waiting
    draining = asyncio.create_task(dispatcher.drain(30))
    await until(lambda: dispatcher.closing)
    with pytest.raises(ShuttingDown):  # refused while the drain waits
        await dispatcher.run(RunRequest("g", 1, "manual"))
    assert not draining.done()  # the runs cannot end while the gate is shut
    runner.gate.set()
    assert await draining == 0
    assert runner.count == 3
    assert all(dispatcher.pending[i].status == "done" for i in ids)
    with pytest.raises(ShuttingDown):
        await dispatcher.run(RunRequest("g", 1, "manual"))
