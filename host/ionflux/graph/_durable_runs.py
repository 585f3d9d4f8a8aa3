"""Durable runs: a run's life outside one call of ``Engine.run``.

``DurableRuns`` owns the entry points that act on recorded runs: accepting a
run before it is driven (``accept``), resuming or taking over a run nobody
drives (``resume``, ``orphans``, ``known``), an operator's controls (pause,
resume, cancel, retry: ``control``, told to the run loop with ``signal``), and
the waiting runs (consent awaiting approval, timers: ``wake``). Driving a run
is the engine's (``Engine._run``); the leases and the history are its too.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from .._errors import GraphError, GraphNotFound, InvalidRunTransition, StateError
from ..config import Config
from ._context import RunTrigger
from ._durable import recorded_result
from ._history import RunRecord, new_run_id
from ._plan import Plan
from ._recorder import RunRecorder
from ._result import MODES, Mode, RunResult
from ._runloop import Tasks
from ._runstate import (
    Action,
    Control,
    Effect,
    RecordedStep,
    Seen,
    allowed_from,
    control,
    next_action,
    waits_for,
)
from ._scheduler import RunStatus

if TYPE_CHECKING:
    from ._engine import Engine

# How often a request for a run another live host drives looks at its record.
_WAIT_S = 0.1


class DurableRuns:
    """Accepts, resumes, takes over, controls and wakes runs for ``engine``.

    ``controls`` and ``live`` are the run loop's: the controls of runs driven
    here and their tasks in flight."""

    def __init__(
        self, engine: Engine, *, controls: dict[str, Control], live: dict[str, Tasks]
    ) -> None:
        self.engine = engine
        self.controls = controls
        self.live = live

    def accept(
        self,
        graph_ref: str | Plan,
        input: Any,
        *,
        trigger: RunTrigger,
        run_key: str,
        run_id: str | None = None,
    ) -> tuple[str, RunRecord | None]:
        """Records a run as ``accepted`` (its input stored), committed before it
        returns: from then on the run is not lost, whoever drives it. Returns the run
        id and None; or, when a run is recorded under ``run_key`` already, its id
        and its record (nothing is written). Raises ``RunNotRecorded``."""
        engine = self.engine
        plan = engine._cid_plan(graph_ref)
        run_id = run_id or new_run_id()
        recorder = RunRecorder(engine.history, engine._writer, run_id, masker=engine.masker)
        row = engine._records.start_row(
            plan,
            run_id,
            input,
            mode="run_all",
            trigger=trigger,
            recorder=recorder,
            parent=None,
            run_key=run_key,
            status="accepted",
        )[0]
        try:
            found = engine.history.accept(row)
        except (sqlite3.Error, StateError, OSError) as exc:
            raise engine._records.not_recorded(run_id, "that it accepted the run", exc) from exc
        engine._records.recorded()
        if found is not None:
            return found.run_id, found
        self.engine.leases.keep(run_id)
        return run_id, None

    async def resume(self, run_id: str) -> RunResult | None:
        """Resumes a run nobody drives any more (its host died) from its first step
        not recorded done; None when another host took it first."""
        record = self.engine.history.get(run_id)
        if record is None:
            return None
        if not record.ended and not self.engine.history.claim(
            run_id, self.engine.leases.owner, self.engine.leases.expiry(), now=time.time()
        ):
            return None
        record = self.engine.history.get(run_id)
        assert record is not None
        return await self.known(record)

    def orphans(self) -> list[str]:
        """Runs that have not ended and that nobody drives (see ``resume``)."""
        return [r.run_id for r in self.engine.history.orphans(now=time.time())]

    def control(
        self,
        run_id: str,
        action: Control | str,
        *,
        by: str = "owner",
        from_step: str | None = None,
        input: Any = None,
        has_input: bool = False,
    ) -> RunRecord:
        """An operator's ``pause``, ``resume``, ``cancel`` or ``retry`` of a run (by
        id or prefix); returns its record after. A run driven here is told at once;
        one driven by another host is told when that host renews its leases. Raises
        ``GraphNotFound`` and ``InvalidRunTransition`` (a status that does not allow
        it). ``retry``: from its failed steps, or ``from_step`` (a node id, or its
        1-based place in the graph) and what depends on it; ``input``: the input
        that step runs with (recorded), when ``has_input``."""
        action = Control(action)
        record = self.engine.history.find(run_id)
        if record is None:
            raise GraphNotFound(f"no run {run_id!r} (see: ionflux runs list)")
        effect = control(action, record.status)
        if effect is None or (action is not Control.CANCEL and record.parent_run_id is not None):
            raise InvalidRunTransition(
                record.run_id, record.status, action.value, allowed_from(action)
            )
        changed = False
        if effect is Effect.SIGNAL:
            changed = self.engine.history.request_control(record.run_id, action.value)
            if changed:
                self.signal(record.run_id, action.value)
        elif effect is Effect.END:
            changed = self.engine.history.end(
                record.run_id,
                (record.status,),
                RunStatus.CANCELLED.value,
                [*(record.error_details or []), cancelled_by_operator(by)],
                now=time.time(),
            )
        else:
            redo, overrides = self._redo(record, from_step, input, has_input)
            changed = self.engine.history.reopen(
                record.run_id, (record.status,), redo=redo, overrides=overrides
            )
            if changed and self.engine.nudge is not None:
                self.engine.nudge(record.run_id)
        after = self.engine.history.get(record.run_id)
        assert after is not None
        if not changed:  # its status changed meanwhile
            raise InvalidRunTransition(
                record.run_id, after.status, action.value, allowed_from(action)
            )
        return after

    def _redo(
        self, record: RunRecord, from_step: str | None, input: Any, has_input: bool
    ) -> tuple[list[str], dict[str, Any] | None]:
        """The nodes a retry runs again (the step and what depends on it) and the
        input it is given."""
        if from_step is None:
            if has_input:
                raise GraphError("--input edits the input of one step: name it with --from-step")
            return [], None
        plan = self.engine._cid_plan(record.graph_cid)
        node = from_step
        if node not in plan.nodes and node.isdigit():
            ordered = sorted(plan.nodes, key=lambda n: plan.nodes[n].index)
            if 1 <= int(node) <= len(ordered):
                node = ordered[int(node) - 1]
        if node not in plan.nodes:
            raise GraphError(
                f"graph {plan.name} has no step {from_step!r}; its steps: {', '.join(plan.nodes)}"
            )
        redo, stack = {node}, [node]
        while stack:
            for following in plan.dependents[stack.pop()]:
                if following not in redo:
                    redo.add(following)
                    stack.append(following)
        return sorted(redo), ({node: input} if has_input else None)

    def signal(self, run_id: str, action: str) -> None:
        """On the loop: pause or cancel a run driven here (nothing if it is not)."""
        if run_id not in self.engine.leases.driving and run_id not in self.engine.leases.kept:
            return
        self.controls[run_id] = Control(action)
        if action == Control.CANCEL:
            stop_calls = getattr(self.engine.invoker, "cancel", None)
            if stop_calls is not None:
                stop_calls(run_id)  # guest calls in flight stop at their next epoch tick
        for task, running in self.live.get(run_id, {}).items():
            if action == Control.CANCEL:
                task.cancel()
            elif running.stop is not None:
                running.stop.set()  # a lane starts no next node; the one in flight ends

    def wake(self) -> list[str]:
        """Looks at the waiting runs: an ``awaiting_approval`` one whose consent was
        approved is reopened (resumed by whoever looks next), denied or expired
        (IONWALL's expiry or ``graph.approval_timeout_s``) fails; a ``waiting`` one
        whose time came is reopened. Returns the ids reopened."""
        now = time.time()
        reopened: list[str] = []
        status_of = getattr(self.engine.authorizer, "consent_status", None)
        for record in self.engine.history.waiting():
            due = record.wake_at is not None and record.wake_at <= now
            if record.status == RunStatus.WAITING:
                if due and self.engine.history.reopen(record.run_id, (record.status,)):
                    reopened.append(record.run_id)
                continue
            consent = status_of(record.consent_id) if status_of and record.consent_id else None
            if status_of is None and not due:
                continue  # nobody here can tell: it waits for its expiry
            decision = waits_for(consent, expired=due)
            if decision == "resume":
                if self.engine.history.reopen(record.run_id, (record.status,)):
                    reopened.append(record.run_id)
            elif decision is not None:
                self.engine.history.end(
                    record.run_id,
                    (record.status,),
                    RunStatus.FAILURE.value,
                    [_approval_error(decision, record.consent_id, self.engine.config)],
                    now=now,
                )
        return reopened

    async def known(self, record: RunRecord) -> RunResult:
        """A run already recorded: answered, driven, taken over or waited for."""
        while True:
            seen = Seen(
                record.status,
                record.lease_owner,
                self.engine.history.orphaned(record, now=time.time()),
            )
            action = next_action(seen, self.engine.leases.owner)
            if action is Action.ANSWER:
                return recorded_result(self.engine.history, record)
            driving = self.engine.leases.driving.get(record.run_id)
            if driving is not None:
                return await asyncio.shield(driving)
            if action is Action.DRIVE:
                return await self._resume(record)
            leases = self.engine.leases
            if action is Action.TAKE_OVER and self.engine.history.claim(
                record.run_id, leases.owner, leases.expiry(), now=time.time()
            ):
                return await self._resume(record)
            # Another live host drives it: its result lands in the history.
            await asyncio.sleep(_WAIT_S)
            found = self.engine.history.get(record.run_id)
            assert found is not None
            record = found

    async def _resume(self, record: RunRecord) -> RunResult:
        plan = self.engine._cid_plan(record.graph_cid)
        if record.control in (Control.PAUSE, Control.CANCEL):
            self.controls[record.run_id] = Control(record.control)
        details = dict(record.trigger_details or {})
        caller = details.get("caller")
        subject = str(caller) if caller else "local-user"
        if not caller and record.trigger_type not in ("manual", "rerun"):
            subject = "anonymous"
        recorded = [
            RecordedStep(
                s.node_id,
                s.status,
                json.loads(s.outputs_json) if s.outputs_json else None,
                s.end_time if s.status == "waiting" else None,
            )
            for s in self.engine.history.steps(record.run_id)
        ]
        mode: Mode = record.mode if record.mode in MODES else "run_all"
        return await self.engine._run(
            plan,
            record.input,
            mode,
            RunTrigger(record.trigger_type, details, subject),
            None,
            depth=0,
            chain=(plan.name,),
            run_id=record.run_id,
            input_checked=True,
            run_key=record.run_key,
            resumed=(record, recorded),
        )


def cancelled_by_operator(by: str = "an operator") -> dict[str, Any]:
    return {"kind": "cancelled", "message": f"the run was cancelled by {by}"}


def _approval_error(decision: str, consent_id: str | None, config: Config) -> dict[str, Any]:
    if decision == "denied":
        return {
            "kind": "consent_denied",
            "message": f"consent {consent_id} was denied: the run does not go on",
            "consent_id": consent_id,
        }
    return {
        "kind": "approval_expired",
        "message": f"consent {consent_id} was not approved in time (graph.approval_timeout_s "
        f"is {config.graph.approval_timeout_s:g} s, or IONWALL expired the request); run it "
        "again to ask anew",
        "consent_id": consent_id,
    }
