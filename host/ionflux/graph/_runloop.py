"""The run loop: how a run's nodes are started, executed and settled.

``RunLoop`` owns node execution for the engine: the loop over the pure
``Scheduler`` (``execute``), the three ways a node runs (a task of its own, a
lane of linear nodes on one worker thread, a group of light independent nodes
back to back on one thread: placed by ``_placement.groups`` from the measured
``costs``), the blocking guest call (content cache, fuel and cost measures),
sub-graph calls, timers (``delay``/``until``) and the run budget's stop. It
settles each node's outcome into the scheduler, the run's scope and its
recorder. Operator controls reach it through ``controls`` and ``live``, shared
with the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ionwall import CallContext, Gate

from .._errors import GraphError, GuestError, RunBudgetExceeded, StateError, TemplateError
from ._content_cache import content_key, lookup
from ._context import Head, RunContext, Running, RunTrigger, node_scope, runs_in_lane
from ._debug import pause
from ._native import NativeCall, call_native, native_for
from ._placement import Costs, cost_key, groups, measure
from ._plan import PlannedNode, TransformInfo
from ._result import StepResult
from ._runstate import Control, RecordedStep
from ._scheduler import NodeSpec, NodeStatus, RunStatus, Scheduler
from ._step import (
    Called,
    ChildRunFailed,
    Outcome,
    Rendered,
    error_dict,
    execute,
    render,
    run_once,
)

if TYPE_CHECKING:
    from ._engine import Engine

_T = TypeVar("_T")

# A lane's node that ended, with the node the lane went on to.
_Advanced = tuple[PlannedNode, Outcome, str]
# How long a lane may run nodes before it reports them to the loop.
_LANE_REPORT_S = 0.01

# The tasks of a run in flight, each with what it runs.
Tasks = dict[asyncio.Task[Outcome | None], Running]


class RunLoop:
    """Executes runs' nodes for ``engine``.

    ``costs``: what each transform's calls take, moving averages of (CPU, I/O
    wait) seconds, for ``groups``. ``controls``: operator controls (pause,
    cancel) of runs driven here; ``live``: their tasks in flight, by run id."""

    def __init__(
        self,
        engine: Engine,
        *,
        costs: Costs,
        controls: dict[str, Control],
        live: dict[str, Tasks],
    ) -> None:
        self.engine = engine
        self.costs = costs
        self.controls = controls
        self.live = live

    async def execute(
        self, ctx: RunContext, done: Mapping[str, RecordedStep]
    ) -> tuple[RunStatus, dict[str, StepResult]]:
        plan = ctx.plan
        specs = {
            node_id: NodeSpec(p.deps, plan.dependents[node_id], p.node.on_error, p.index)
            for node_id, p in plan.nodes.items()
        }
        scheduler = Scheduler(specs)
        states: dict[str, dict[str, Any]] = ctx.scope["nodes"]
        steps: dict[str, StepResult] = {}
        # A resumed run: the steps recorded done keep their outputs and do not run.
        for node_id, recorded in done.items():
            planned = plan.nodes[node_id]
            scheduler.restore(node_id, NodeStatus(recorded.status))
            states[node_id].update(outputs=recorded.outputs, status=recorded.status)
            steps[node_id] = StepResult(
                node_id=node_id,
                target=planned.target,
                status=recorded.status,
                level=planned.level,
                outputs=recorded.outputs,
                reason="recorded done before the run was resumed",
                step_run_id=f"{ctx.run_id}.{node_id}",
            )
        tasks: Tasks = {}
        one_at_a_time = ctx.mode == "step_through_debug"
        controls = self.controls
        if ctx.depth == 0:
            self.live[ctx.run_id] = tasks
        try:
            while not scheduler.done:
                # A sub-run that starts after the budget ran out elsewhere in the
                # tree starts nothing (each node would be refused one by one).
                self._stop_past_budget(ctx, scheduler, tasks)
                held = controls.get(ctx.run_id) if controls else None
                if held is None and ctx.waits:
                    held = Control.PAUSE  # a timer: as paused until it is due
                if held is not None:
                    # Paused or cancelled by an operator: nothing new starts; the
                    # steps in flight end (a pause) or were stopped (a cancel).
                    if not tasks:
                        break
                room = 0 if held is not None else (1 - len(tasks) if one_at_a_time else None)
                lanes: list[Head] = []
                for node_id in scheduler.ready(room) if room is None or room > 0 else []:
                    planned = plan.nodes[node_id]
                    if planned.timed and self._waits(ctx, planned, scheduler, steps):
                        continue  # left pending: the run waits, then resumes here
                    # Counted as it starts, on the loop: a wide fan-out is refused
                    # before its nodes become tasks, not when each reaches a thread.
                    try:
                        ctx.budget.start_node()
                    except RunBudgetExceeded:
                        self._stop_past_budget(ctx, scheduler, tasks)
                        break
                    scheduler.start(node_id)
                    await self._start(ctx, planned, scheduler, steps, tasks, lanes)
                    if scheduler.aborted:
                        break
                for group in self.groups(lanes):
                    task, running = self._launch(ctx, group, scheduler, steps)
                    tasks[task] = running
                if not tasks:
                    if scheduler.done:
                        break
                    continue
                finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    running = tasks.pop(task)
                    if task.cancelled():
                        for node_id in running.unsettled(scheduler):
                            scheduler.cancelled(node_id)
                        continue
                    outcome = task.result()
                    if outcome is not None:  # None: a lane whose last node the loop refused
                        assert running.node_id is not None
                        self._settle(ctx, plan.nodes[running.node_id], outcome, scheduler, steps)
                    if scheduler.failed or scheduler.aborted:
                        for other in tasks:
                            other.cancel()
                self._stop_past_budget(ctx, scheduler, tasks)
            held = controls.get(ctx.run_id) if controls else None
            if held is Control.PAUSE and not scheduler.done and not scheduler.failed:
                return RunStatus.PAUSED, steps  # the pending nodes run when it resumes
            if held is None and ctx.waits and not scheduler.failed:
                return RunStatus.WAITING, steps
            if held is Control.CANCEL and not scheduler.done:
                scheduler.abort("cancelled by an operator")
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            scheduler.abort("the run was cancelled")
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            if ctx.depth == 0:
                self.live.pop(ctx.run_id, None)
            for node_id, status in scheduler.status.items():
                if node_id not in steps and status in (
                    NodeStatus.CANCELLED,
                    NodeStatus.SKIPPED,
                    NodeStatus.RUNNING,
                ):
                    planned = plan.nodes[node_id]
                    steps[node_id] = StepResult(
                        node_id=node_id,
                        target=planned.target,
                        status=NodeStatus.CANCELLED.value
                        if status is NodeStatus.RUNNING
                        else status.value,
                        level=planned.level,
                        reason=scheduler.reasons.get(node_id),
                    )
                    self._record(ctx, steps[node_id])
                    states[node_id]["status"] = steps[node_id].status
        return scheduler.run_status(), steps

    def _waits(
        self,
        ctx: RunContext,
        planned: PlannedNode,
        scheduler: Scheduler,
        steps: dict[str, StepResult],
    ) -> bool:
        """Whether a timed node is not due yet: its wake time is recorded (a step
        ``waiting``, written with the run's suspension) and the run waits for it. A
        ``until`` that is not a time fails the node."""
        now = time.time()
        wake = ctx.waited.get(planned.id)
        problem: GraphError | None = None
        if ctx.depth != 0 or ctx.mode != "run_all":
            problem = GraphError(
                f"node {planned.id!r} waits ('delay'/'until'): a timer runs only in a "
                "top-level run_all run, not in a sub-graph, a debugger or a dry run"
            )
        elif wake is None:
            try:
                wake = _wake_time(planned, node_scope(ctx, planned, 1), now)
            except (TemplateError, ValueError) as exc:
                problem = GraphError(f"node {planned.id!r}: 'until' is not a time: {exc}")
        if problem is not None or wake is None:
            scheduler.start(planned.id)
            error = error_dict(problem or GraphError("no wake time"), planned.node)
            self._settle(ctx, planned, Outcome("failure", now, now, error=error), scheduler, steps)
            return True
        if wake <= now:
            return False
        ctx.waits[planned.id] = wake
        step = StepResult(
            node_id=planned.id,
            target=planned.target,
            status="waiting",
            level=planned.level,
            started_at=now,
            ended_at=wake,
            reason=f"waits until {datetime.fromtimestamp(wake, UTC).isoformat()}",
        )
        steps[planned.id] = self._record(ctx, step)
        return True

    def _stop_past_budget(
        self,
        ctx: RunContext,
        scheduler: Scheduler,
        tasks: Mapping[asyncio.Task[Outcome | None], Running],
    ) -> None:
        """Once the whole run's budget ran out (here or in any run of the tree), no
        node of this run starts: pending nodes are cancelled, running ones stopped."""
        if ctx.stopped_by is not None:
            return
        exceeded = ctx.budget.exceeded
        if exceeded is None:
            return
        ctx.stopped_by = exceeded
        scheduler.abort(f"stopped: {exceeded.budget} of the run's budget used up")
        for task in tasks:
            task.cancel()

    async def _start(
        self,
        ctx: RunContext,
        planned: PlannedNode,
        scheduler: Scheduler,
        steps: dict[str, StepResult],
        tasks: Tasks,
        lanes: list[Head],
    ) -> None:
        """Renders the node and starts it as a task (added to ``tasks``), or settles
        it at once (skipped by ``if`` or by the debugger, a template that fails). A
        node that runs as one blocking call is added to ``lanes`` as a ``Head``, for
        ``groups`` to place."""
        now = time.time()
        try:
            first = render(planned, node_scope(ctx, planned, 1))
            if ctx.overrides and planned.id in ctx.overrides and first.run:
                first = dataclasses.replace(first, inputs=ctx.overrides[planned.id])
        except TemplateError as exc:
            self._settle(
                ctx,
                planned,
                Outcome("failure", now, time.time(), error=error_dict(exc, planned.node)),
                scheduler,
                steps,
            )
            return
        if not first.run:
            self._settle(
                ctx,
                planned,
                Outcome("skipped", now, now, reason="'if' was false"),
                scheduler,
                steps,
            )
            return
        action = await pause(ctx, planned, first, steps)
        if action == "skip":
            self._settle(
                ctx,
                planned,
                Outcome(
                    "skipped",
                    now,
                    time.time(),
                    inputs=first.inputs,
                    reason="skipped in the debugger",
                ),
                scheduler,
                steps,
            )
            return
        if action == "abort":
            scheduler.abort("aborted in the debugger")
            scheduler.reasons[planned.id] = "aborted in the debugger"
            scheduler.cancelled(planned.id)
            return

        if runs_in_lane(ctx, planned):
            lanes.append(Head(planned, first, now))
            return

        if not planned.node.idempotent:
            # Known to be in flight before it is called: if the host dies now, the
            # run stops in needs_attention on resume instead of calling it again.
            try:
                ctx.recorder.running(planned.id, planned.target, now)
            except (sqlite3.Error, StateError, OSError) as exc:
                doing = f"that node {planned.id!r} started"
                raise self.engine._records.not_recorded(ctx.run_id, doing, exc) from exc

        async def call(inputs: Any, attempt: int) -> Called:
            if attempt > 1:
                ctx.budget.start_node()  # every retry is a node call of its own
            return await self._call(ctx, planned, inputs)

        def rerender(attempt: int) -> Rendered:
            again = render(planned, node_scope(ctx, planned, attempt))
            if ctx.overrides and planned.id in ctx.overrides and again.run:
                again = dataclasses.replace(again, inputs=ctx.overrides[planned.id])
            return again

        task: asyncio.Task[Outcome | None] = asyncio.create_task(
            execute(planned, first, rerender, call), name=planned.id
        )
        tasks[task] = Running(planned.id)

    def groups(self, heads: list[Head]) -> list[list[Head]]:
        return groups(self.costs, heads)

    def _launch(
        self,
        ctx: RunContext,
        group: list[Head],
        scheduler: Scheduler,
        steps: dict[str, StepResult],
    ) -> tuple[asyncio.Task[Outcome | None], Running]:
        if len(group) == 1:
            (head,) = group
            running = Running(head.planned.id, threading.Event())
            lane = self._lane(
                ctx, head.planned, head.rendered, head.started, running, scheduler, steps
            )
            return asyncio.create_task(lane, name=head.planned.id), running
        members = tuple(head.planned.id for head in group)
        running = Running(None, threading.Event(), members=members)
        task = asyncio.create_task(
            self._group(ctx, group, running, scheduler, steps), name="+".join(members)
        )
        return task, running

    async def _group(
        self,
        ctx: RunContext,
        group: list[Head],
        running: Running,
        scheduler: Scheduler,
        steps: dict[str, StepResult],
    ) -> None:
        """Runs independent light nodes back to back on one worker thread and settles
        them on the loop when the last one ends."""
        stop = running.stop
        assert stop is not None

        def calls() -> list[tuple[PlannedNode, Outcome]]:
            done: list[tuple[PlannedNode, Outcome]] = []
            for head in group:
                if stop.is_set():
                    break
                call = self._blocking_call(ctx, head.planned)
                done.append(
                    (head.planned, run_once(head.planned, head.rendered, call, time.time()))
                )
            return done

        done = await self._off_loop(calls, running=running)
        for planned, outcome in done:
            if scheduler.status[planned.id] is NodeStatus.RUNNING:
                self._settle(ctx, planned, outcome, scheduler, steps)
        return None

    async def _lane(
        self,
        ctx: RunContext,
        planned: PlannedNode,
        first: Rendered,
        started: float,
        running: Running,
        scheduler: Scheduler,
        steps: dict[str, StepResult],
    ) -> Outcome | None:
        """Runs ``planned`` and then, while each node's only dependent is ready and
        needs nothing the loop does (a timeout, retries, a sub-graph, the debugger),
        that dependent, on one worker thread: a linear chain pays one hop to the
        thread, not one per node. The nodes but the last are settled on the loop
        (``_advance``) in batches: at the latest every ``_LANE_REPORT_S`` while the
        lane runs, and the rest when it ends, so a fast chain does not wake the
        loop once per node and a slow one stays observable as it goes. The last
        node's outcome is returned."""
        loop = asyncio.get_running_loop()
        stop = running.stop
        assert stop is not None
        plan = ctx.plan

        costs = self.costs

        def chain() -> tuple[str, Outcome, list[_Advanced]]:
            current, rendered, began = planned, first, started
            batch: list[_Advanced] = []
            reported = time.monotonic()
            while True:
                outcome = run_once(current, rendered, self._blocking_call(ctx, current), began)
                following = plan.successors.get(current.id)
                if outcome.status != "success" or following is None or stop.is_set():
                    return current.id, outcome, batch
                after = plan.nodes[following]
                if not runs_in_lane(ctx, after) or after.id in ctx.overrides:
                    return current.id, outcome, batch
                # The loop settles `current` later; `after` reads its outputs now.
                scope = node_scope(ctx, after, 1)
                scope["nodes"] = {
                    **scope["nodes"],
                    current.id: {"outputs": outcome.outputs, "status": "success", "error": None},
                }
                try:
                    next_rendered = render(after, scope)
                except TemplateError:
                    return current.id, outcome, batch  # the loop starts `after`, reports it
                if not next_rendered.run:
                    return current.id, outcome, batch
                try:
                    ctx.budget.start_node()
                except RunBudgetExceeded:
                    return current.id, outcome, batch  # the loop stops the run
                batch.append((current, outcome, after.id))
                now = time.monotonic()
                # Reported before a node measured slow, too: what the lane did so far
                # is recorded (and a crash does not run it again) while that one runs.
                cost = costs.get(cost_key(after))
                if now - reported >= _LANE_REPORT_S or (
                    cost is not None and cost[0] + cost[1] >= _LANE_REPORT_S
                ):
                    loop.call_soon_threadsafe(self._advance, ctx, running, batch, scheduler, steps)
                    batch, reported = [], now
                current, rendered, began = after, next_rendered, time.time()

        last, outcome, batch = await self._off_loop(chain, running=running)
        self._advance(ctx, running, batch, scheduler, steps)
        return outcome if running.node_id == last else None

    def _advance(
        self,
        ctx: RunContext,
        running: Running,
        batch: list[_Advanced],
        scheduler: Scheduler,
        steps: dict[str, StepResult],
    ) -> None:
        """On the loop: a lane's nodes ended, each followed by the next in the lane."""
        for planned, outcome, following in batch:
            if running.closed or running.node_id != planned.id:
                return  # cancelled (recorded as such), or the loop refused this node
            self._settle(ctx, planned, outcome, scheduler, steps)
            if scheduler.status[following] is NodeStatus.PENDING and not (
                scheduler.failed or scheduler.aborted
            ):
                scheduler.start(following)
                running.node_id = following
            else:
                running.node_id = None
                assert running.stop is not None
                running.stop.set()

    def _blocking_call(self, ctx: RunContext, planned: PlannedNode) -> Callable[[Any], Called]:
        transform = planned.transform
        assert transform is not None
        call_ctx = CallContext(
            subject=transform.cid,
            transform=transform.name,
            run_id=ctx.run_id,
            node_id=planned.id,
            grant_id=ctx.authorization.grant_id,
        )
        gate: Gate | None = ctx.authorization.gate

        costs, key = self.costs, cost_key(planned)
        budget = ctx.budget
        history = self.engine.history if planned.node.cache == "content" else None
        grant_id = ctx.authorization.grant_id

        def call(inputs: Any) -> Called:
            cache_key = None
            if history is not None:  # `cache: content`: a hit makes no call, asks no gate
                cache_key = content_key(transform, inputs, grant_id, planned.node.outputs)
                if cache_key is not None:
                    hit, outputs = lookup(history, cache_key)
                    if hit:
                        return Called(outputs, 0, cached=True, cache_key=cache_key)
            # A guest computes or waits in an import: the thread's CPU time is the
            # first (the wait for the GIL is not in it), the imports' time the second.
            cpu, wait = time.thread_time(), 0.0
            try:
                done = self.engine.invoker.invoke(transform, inputs, ctx=call_ctx, gate=gate)
                wait = done.wait_s
            except GuestError as exc:  # a failed call burnt fuel too (all of it, if exhausted)
                with contextlib.suppress(RunBudgetExceeded):
                    budget.spend_fuel(getattr(exc, "fuel_used", 0) or 0)
                raise
            finally:  # a failed call is measured too, as all compute
                measure(costs, key, time.thread_time() - cpu, wait)
            budget.spend_fuel(done.fuel_used)
            return Called(done.value, done.fuel_used, cache_key=cache_key)

        return call

    async def _call(self, ctx: RunContext, planned: PlannedNode, inputs: Any) -> Called:
        if planned.transform is not None:
            return await self._call_transform(ctx, planned, planned.transform, inputs)
        assert planned.subgraph is not None
        ref = planned.subgraph
        settings = self.engine.config.graph
        if len(ctx.chain) > settings.max_subgraph_depth:
            raise GraphError(
                f"sub-graph nesting deeper than graph.max_subgraph_depth "
                f"({settings.max_subgraph_depth}): {' -> '.join([*ctx.chain, ref.name])}"
            )
        if ref.name in ctx.chain:
            raise GraphError("sub-graph cycle refused: " + " -> ".join([*ctx.chain, ref.name]))
        child = self.engine.load(f"{ref.name}@{ref.version}" if ref.version else ref.name)
        # A fan-out through sub-graphs would start every child run at once (40 x 40
        # is 1,600 runs, each recorded), and the loop would serve nothing else
        # meanwhile: at most graph.concurrency runs per depth of one tree are in
        # flight. One semaphore per depth: a parent waits on its children's, never
        # on its own, so nothing waits on itself.
        depth = ctx.depth + 1
        slots = ctx.subruns.setdefault(depth, asyncio.Semaphore(settings.concurrency))
        async with slots:
            exceeded = ctx.budget.exceeded
            if exceeded is not None:  # ran out while this call waited: start nothing
                raise exceeded
            result = await self.engine._run(
                child,
                inputs,
                ctx.mode,
                RunTrigger(
                    "subgraph",
                    {"parent_run_id": ctx.run_id, "node_id": planned.id},
                    ctx.trigger.subject,
                ),
                ctx.debugger,
                depth=depth,
                chain=(*ctx.chain, ref.name),
                parent=(ctx.run_id, planned.id),
                budget=ctx.budget,
                subruns=ctx.subruns,
            )
        if result.overall_status not in (RunStatus.SUCCESS, RunStatus.PARTIAL):
            raise ChildRunFailed(result.execution_id, result.overall_status, result.error_details)
        return Called(result.output, result.fuel_used, result.execution_id)

    async def _call_transform(
        self, ctx: RunContext, planned: PlannedNode, transform: TransformInfo, inputs: Any
    ) -> Called:
        native = native_for(self.engine.natives, transform)
        if native is not None:
            call = NativeCall(
                run_id=ctx.run_id,
                node_id=planned.id,
                graph=ctx.plan.name,
                subject=ctx.trigger.subject,
                grant_id=ctx.authorization.grant_id,
                gate=ctx.authorization.gate,
                depth=ctx.depth,
                _engine=self.engine,
                _ctx=ctx,
            )
            return Called(await call_native(native, call, inputs))
        return await self._off_loop(self._blocking_call(ctx, planned), inputs)

    async def _off_loop(
        self, fn: Callable[..., _T], *args: Any, running: Running | None = None
    ) -> _T:
        return await self.engine.workers.off_loop(fn, *args, running=running)

    def _settle(
        self,
        ctx: RunContext,
        planned: PlannedNode,
        outcome: Outcome,
        scheduler: Scheduler,
        steps: dict[str, StepResult],
    ) -> None:
        node_id = planned.id
        if outcome.status == "success":
            scheduler.succeed(node_id)
        elif outcome.status == "skipped":
            scheduler.skip(node_id, outcome.reason or "skipped")
        else:
            scheduler.fail(node_id)
        state = ctx.scope["nodes"][node_id]
        state["status"] = outcome.status
        state["outputs"] = outcome.outputs
        state["error"] = outcome.error
        step = StepResult(
            node_id=node_id,
            target=planned.target,
            status=outcome.status,
            level=planned.level,
            started_at=outcome.started_at,
            ended_at=outcome.ended_at,
            attempts=outcome.attempts,
            inputs=outcome.inputs,
            outputs=outcome.outputs,
            error=outcome.error,
            reason=outcome.reason,
            fuel_used=outcome.fuel_used,
            child_run_id=outcome.child_run_id,
            cached=outcome.cached,
            cache_key=outcome.cache_key,
        )
        steps[node_id] = self._record(ctx, step, durable=not planned.node.idempotent)

    def _record(self, ctx: RunContext, step: StepResult, *, durable: bool = False) -> StepResult:
        return ctx.recorder.step(step, durable=durable)


def _wake_time(planned: PlannedNode, scope: dict[str, Any], now: float) -> float:
    """When a timed node is due: ``delay`` after ``now``, or its ``until`` (ISO 8601;
    without a zone, UTC)."""
    if planned.node.delay is not None:
        return now + planned.node.delay
    assert planned.wake is not None
    value = planned.wake.render(scope)
    if isinstance(value, datetime):
        when = value
    else:
        when = datetime.fromisoformat(str(value).strip())
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
