"""What one run of the driver shares between its nodes, and the pure helpers over
it: the template scope, the scopes a run asks for, the run's output."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._errors import RunBudgetExceeded
from ._budget import RunBudget
from ._plan import Plan, PlannedNode
from ._recorder import RunRecorder
from ._result import Mode, StepResult
from ._scheduler import NodeStatus, Scheduler
from ._seams import Authorization, Debugger
from ._step import Rendered


@dataclass(frozen=True, slots=True)
class RunTrigger:
    """How a run was started: ``manual``, ``event_driven``, ``webhook``, ``scheduled``,
    ``rerun``, … with whatever details the trigger has (subject, path, caller)."""

    type: str = "manual"
    details: Mapping[str, Any] | None = None
    subject: str = "local-user"


@dataclass
class RunContext:
    """What every node of one run shares."""

    plan: Plan
    run_id: str
    mode: Mode
    depth: int
    chain: tuple[str, ...]
    trigger: RunTrigger
    authorization: Authorization
    scope: dict[str, Any]
    debugger: Debugger | None
    recorder: RunRecorder
    budget: RunBudget
    # Sub-runs of the whole tree in flight, per depth (see ``RunLoop._call``).
    subruns: dict[int, asyncio.Semaphore]
    # Set when this run stopped because the whole run's budget ran out.
    stopped_by: RunBudgetExceeded | None = None
    # node id -> the input it runs with (an operator's retry with an edited input).
    overrides: Mapping[str, Any] = field(default_factory=dict)
    # node id -> when its timer (``delay``/``until``) is due: the run waits for it.
    waits: dict[str, float] = field(default_factory=dict)
    # node id -> when the timer it waited for was due (recorded): it starts now.
    waited: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Head:
    """A rendered node that runs as one blocking call, waiting for a thread."""

    planned: PlannedNode
    rendered: Rendered
    started: float


@dataclass(slots=True)
class Running:
    """What one task of the driver is running. A lane (a chain of nodes run back
    to back on one worker thread) moves ``node_id`` along the chain; ``None`` once
    the loop refused the next node. ``stop`` tells the worker to start no more."""

    node_id: str | None
    stop: threading.Event | None = None
    closed: bool = False
    members: tuple[str, ...] = ()  # a group's nodes (see ``RunLoop._group``)

    def unsettled(self, scheduler: Scheduler) -> list[str]:
        """The nodes this task still owns, to cancel with it."""
        owned = self.members or ((self.node_id,) if self.node_id is not None else ())
        return [n for n in owned if scheduler.status[n] is NodeStatus.RUNNING]


def run_scope(
    plan: Plan, run_id: str, input: Any, trigger: RunTrigger, started: float
) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(started, UTC).isoformat(timespec="milliseconds")
    return {
        "trigger": {
            "input_data": input,
            "type": trigger.type,
            "details": dict(trigger.details) if trigger.details else None,
        },
        "nodes": {
            node_id: {"outputs": None, "status": "pending", "error": None} for node_id in plan.nodes
        },
        "system": {
            "run_id": run_id,
            "timestamp_utc_iso": stamp.replace("+00:00", "Z"),
            "graph_name": plan.name,
            "graph_version": plan.graph.version,
            "node_id": None,
            "attempt": 1,
        },
        "null": None,
    }


def runs_in_lane(ctx: RunContext, planned: PlannedNode) -> bool:
    """Whether the node can run as one blocking call on a worker thread: a transform
    with no ``timeout`` and no ``retry`` (those are timed on the loop), outside the
    debugger, and idempotent (a non-idempotent node is recorded ``running`` on the
    loop before its call)."""
    node = planned.node
    return (
        ctx.mode == "run_all"
        and planned.transform is not None
        and node.timeout is None
        and node.retry.count == 0
        and node.idempotent
        and not planned.timed
        # a host-native transform (``_native``) is awaited on the loop
        and not planned.transform.fingerprint.startswith("native:")
    )


def node_scope(ctx: RunContext, planned: PlannedNode, attempt: int) -> dict[str, Any]:
    system = {**ctx.scope["system"], "node_id": planned.id, "attempt": attempt}
    return {**ctx.scope, "system": system}


def requested_scopes(plan: Plan, scope: dict[str, Any]) -> list[str]:
    """Manifest scopes of every node, plus each ``ionwall_approval_scope`` that can be
    rendered before the run (those reading only ``trigger`` and ``system``)."""
    scopes = set(plan.manifest_scopes)
    for planned in plan.nodes.values():
        compiled = planned.approval_scope
        if compiled is None or any(ref[0] == "nodes" for ref in compiled.refs):
            continue
        scopes.add(str(compiled.render(scope)))
    return sorted(scopes)


def run_output(plan: Plan, scope: dict[str, Any]) -> Any:
    if plan.output is not None:
        return plan.output.render(scope)
    nodes = scope["nodes"]
    terminal = plan.terminal_nodes
    if len(terminal) == 1:
        return nodes[terminal[0]]["outputs"]
    return {node_id: nodes[node_id]["outputs"] for node_id in terminal}


def step_order(plan: Plan, steps: Mapping[str, StepResult]) -> list[str]:
    def key(node_id: str) -> tuple[float, int]:
        started = steps[node_id].started_at
        return (started if started is not None else float("inf"), plan.nodes[node_id].index)

    return sorted(steps, key=key)


def cancelled_error() -> dict[str, Any]:
    return {"kind": "cancelled", "message": "the run was cancelled"}
