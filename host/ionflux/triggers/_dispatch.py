"""Every trigger ends here: a ``RunRequest`` becomes one graph run, within bounds.

``Slots`` bounds the runs in flight (``graph.concurrency``); a trigger waits
for a slot before it takes more work (the NATS subscription stops reading, the
JetStream consumer stops fetching, the HTTP request waits), which is the
backpressure. ``Dispatcher`` runs the graph through the engine, counts it,
publishes its completion event and, on shutdown, lets in-flight runs finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import _tracing
from ..graph import new_run_id
from ._errors import Overloaded, RunRefused, ShuttingDown, error_body, http_status
from ._events import RunResultLike, completion_event, encode, rejection
from ._metrics import Metrics

log = logging.getLogger("ionflux.triggers")


class GraphRunner(Protocol):
    """The graph engine as the triggers use it."""

    async def run(
        self,
        graph_ref: str,
        input: Any,
        *,
        trigger: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> RunResultLike: ...


class Publisher(Protocol):
    async def apublish(
        self, subject: str, payload: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class RunRequest:
    graph: str
    input: Any
    trigger: str  # event_driven | webhook | scheduled | manual
    completion_subject: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    # Unique in the run history: a second request with it finds the first run.
    run_key: str | None = None

    def trigger_info(self) -> dict[str, Any]:
        return {"type": self.trigger, "input_data": self.input, "details": dict(self.details)}


class Slots:
    """At most ``limit`` runs at once; ``waiting`` is the queue depth."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sem = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.waiting = 0
        self.high_water = 0  # the most runs ever in flight at once

    async def acquire(self) -> None:
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.in_flight += 1
        self.high_water = max(self.high_water, self.in_flight)

    def free(self) -> int:
        return self.limit - self.in_flight

    def release(self) -> None:
        self.in_flight -= 1
        self._sem.release()


@dataclass
class Pending:
    """A run accepted for later (async webhook) that the history may not know yet."""

    request: RunRequest
    status: str = "queued"  # queued | running | done | rejected
    error: dict[str, Any] | None = None
    execution_id: str | None = None
    accepted_at: float = field(default_factory=time.time)


# A resumed run that stopped driving without ending (a timer, a pause): no event yet.
_STILL_GOING = frozenset({"accepted", "running", "waiting", "paused"})


class Dispatcher:
    def __init__(
        self,
        runner: GraphRunner,
        *,
        concurrency: int,
        publisher: Publisher | None = None,
        metrics: Metrics | None = None,
        max_accepted: int = 10_000,
    ) -> None:
        self.runner = runner
        self.max_accepted = max_accepted
        self.publisher = publisher
        self.metrics = metrics or Metrics()
        self.slots = Slots(concurrency)
        self.closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pending: dict[str, Pending] = {}
        self._resumer: asyncio.Task[None] | None = None
        self._resuming: set[str] = set()
        # Where a graph announces its runs' ends (set by the trigger service): a
        # run resumed here (after a crash, an approval, a timer or a retry) is
        # announced like one started by a trigger.
        self.completion_subject: Callable[[str], str | None] = lambda graph: None
        self.metrics.track_gauge(self.metrics.runs_in_flight, lambda: self.slots.in_flight)
        self.extra_depth: list[Any] = []  # callables adding queued work outside the slots
        self.metrics.track_gauge(self.metrics.queue_depth, self.queue_depth)

    def queue_depth(self) -> float:
        return float(self.slots.waiting + sum(int(fn()) for fn in self.extra_depth))

    async def run(
        self, request: RunRequest, *, slot_held: bool = False, accepted: bool = False
    ) -> RunResultLike:
        """Runs one graph; raises ``RunRefused`` for a run refused before it started
        (bad input, unknown graph). ``accepted``: promised to the caller already
        (an async webhook's 202), so it runs even while the host drains."""
        if self.closing and not accepted:
            if slot_held:
                self.slots.release()
            raise ShuttingDown("the host is shutting down; try another host")
        if not slot_held:
            await self.slots.acquire()
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            return await self._run(request)
        finally:
            self.slots.release()
            if task is not None:
                self._tasks.discard(task)

    async def _run(self, request: RunRequest) -> RunResultLike:
        m = self.metrics
        graph = request.graph.partition("@")[0]
        keyed: dict[str, Any] = {} if request.run_key is None else {"run_key": request.run_key}
        try:
            result = await self.runner.run(
                request.graph,
                request.input,
                trigger=request.trigger_info(),
                run_id=request.run_id,
                **keyed,
            )
        except Exception as exc:
            status = http_status(exc)
            if status >= 500:
                log.exception("run of %s failed before it started", request.graph)
                m.runs_failed.labels(graph, "error").inc()
            else:
                m.runs_rejected.labels(graph, str(getattr(exc, "kind", "error"))).inc()
            event = await self.reject(request, error_body(exc), request.run_id)
            raise RunRefused(exc, event) from exc
        m.runs_started.labels(graph, request.trigger).inc()
        if result.overall_status == "success":
            m.runs_succeeded.labels(graph).inc()
        else:
            m.runs_failed.labels(graph, result.overall_status).inc()
        m.run_duration.labels(graph).observe(max(0.0, result.ended_at - result.started_at))
        m.observe_steps(graph, getattr(result, "steps", ()))
        if request.completion_subject:
            event = completion_event(result, request.trigger)
            if request.details.get("msg_id"):
                event["msg_id"] = request.details["msg_id"]
            await self._publish(request.completion_subject, event)
        return result

    async def reject(
        self, request: RunRequest, error: Mapping[str, Any], execution_id: str | None = None
    ) -> dict[str, Any]:
        """Publishes the error completion event of a refused trigger event; returns it."""
        event = rejection(
            # Nothing ran, so the engine gave no id: one of the same kind as a run's.
            execution_id or new_run_id(),
            request.graph.partition("@")[0],
            request.trigger,
            error,
        )
        if request.completion_subject:
            body = {k: v for k, v in event.items() if k != "output"}
            if request.details.get("msg_id"):
                body["msg_id"] = request.details["msg_id"]
            await self._publish(request.completion_subject, body)
        return event

    async def _publish(self, subject: str, event: Mapping[str, Any]) -> None:
        if self.publisher is None:
            return
        try:
            traced = _tracing.outgoing()  # the trigger's traceparent, when tracing
            if traced:
                await self.publisher.apublish(subject, encode(event), headers=traced)
            else:
                await self.publisher.apublish(subject, encode(event))
        except Exception as exc:  # a lost completion event must not fail the run
            log.warning("completion event to %s not published: %s", subject, exc)

    def submit(self, request: RunRequest) -> str:
        """Starts ``request`` in the background (async webhook); returns its run id."""
        if self.closing:
            raise ShuttingDown("the host is shutting down; try another host")
        waiting = sum(1 for p in self.pending.values() if p.status == "queued")
        if waiting >= self.max_accepted:
            raise Overloaded(f"{waiting} accepted runs wait for a slot already; retry later")
        # Recorded (accepted, its input stored) before the caller hears of it: the
        # run is not lost if this host dies; the next one resumes it.
        run_id = request.run_id or new_run_id()
        run_key = request.run_key or f"run:{run_id}"
        accept = getattr(self.runner, "accept", None)
        if accept is not None:
            run_id, known = accept(
                request.graph,
                request.input,
                trigger=request.trigger_info(),
                run_id=run_id,
                run_key=run_key,
            )
            if known:  # the same key again: the run it started (ended, or under way)
                return str(run_id)
        request = RunRequest(
            request.graph,
            request.input,
            request.trigger,
            request.completion_subject,
            request.details,
            run_id,
            run_key if accept is not None else request.run_key,
        )
        self.pending[run_id] = Pending(request)
        task = asyncio.get_running_loop().create_task(self._background(run_id, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run_id

    async def _background(self, run_id: str, request: RunRequest) -> None:
        pending = self.pending[run_id]
        try:
            await self.slots.acquire()
            pending.status = "running"
            result = await self.run(request, slot_held=True, accepted=True)
            pending.execution_id = result.execution_id
            pending.status = "done"
        except RunRefused as exc:
            pending.status = "rejected"
            pending.error = exc.to_dict()
            pending.execution_id = str(exc.event.get("execution_id"))
        except Exception as exc:
            pending.status = "rejected"
            pending.error = error_body(exc)
        finally:
            # The history has the run now (or it was refused): keep a short memory only.
            if len(self.pending) > 10_000:
                for key in list(self.pending)[:1000]:
                    if self.pending[key].status in ("done", "rejected"):
                        del self.pending[key]

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """A task the drain waits for (a trigger handling one message)."""
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def start_resuming(self) -> None:
        """Resumes, now and every ``resume_interval_s``, the runs nobody drives any
        more (their host died, or stopped before they ended), and the waiting runs
        whose consent was approved or whose timer is due (``wake``)."""
        if self._resumer is None and hasattr(self.runner, "orphans"):
            self._resumer = asyncio.get_running_loop().create_task(
                self._resume_loop(), name="ionflux-resume"
            )
            set_nudge = getattr(self.runner, "set_nudge", None)
            if set_nudge is not None:
                set_nudge(self.nudge)

    def nudge(self, run_id: str) -> None:
        """Drives a run reopened in this process (an operator's resume or retry) now,
        rather than at the next look for runs to resume. On the loop."""
        if run_id not in self._resuming and not self.closing:
            self._resuming.add(run_id)
            self.spawn(self._resume(run_id))

    async def _resume_loop(self) -> None:
        runner: Any = self.runner
        wake = getattr(runner, "wake", None)
        while not self.closing:
            try:
                if wake is not None:  # consents answered, timers due: reopened, then resumed
                    await asyncio.to_thread(wake)
                for run_id in await asyncio.to_thread(runner.orphans):
                    if run_id not in self._resuming and not self.closing:
                        self._resuming.add(run_id)
                        self.spawn(self._resume(run_id))
            except Exception:
                log.exception("could not look for runs to resume")
            await asyncio.sleep(float(getattr(runner, "resume_interval_s", 5.0)))

    async def _resume(self, run_id: str) -> None:
        runner: Any = self.runner
        try:
            await self.slots.acquire()
            try:
                result = await runner.resume(run_id)
            finally:
                self.slots.release()
            if result is not None:
                log.info("run %s resumed: %s", run_id, result.overall_status)
                subject = self.completion_subject(result.graph_name)
                if subject and result.overall_status not in _STILL_GOING:
                    await self._publish(subject, completion_event(result, "resume"))
        except Exception:
            log.exception("could not resume run %s", run_id)
        finally:
            self._resuming.discard(run_id)

    async def drain(self, timeout: float = 30.0) -> int:
        """Refuses new runs and waits for the ones in flight; returns how many did not
        end. Those are given back to the run history (not ended): the next host
        resumes them."""
        self.closing = True
        if self._resumer is not None:
            self._resumer.cancel()
        stop = getattr(self.runner, "stop", None)
        if stop is not None:
            stop()
        tasks = [t for t in self._tasks if not t.done() and t is not asyncio.current_task()]
        not_done: set[asyncio.Task[Any]] = set()
        if tasks:
            _done, not_done = await asyncio.wait(tasks, timeout=timeout)
            for task in not_done:
                task.cancel()
            if not_done:
                await asyncio.wait(not_done, timeout=5.0)
        release = getattr(self.runner, "release", None)
        if release is not None:
            release()
        return len(not_done)
