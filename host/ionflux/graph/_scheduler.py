"""The scheduler: which nodes may start, and what a finished node does to the rest.

Pure state transitions, no I/O and no clock (the Temporal SDK's shape): the
driver in ``_engine`` tells it ``start``/``finish``/``abort`` and asks
``ready()``; every decision about policies (``on_error``) and statuses is
made here, so it is unit-tested without sandboxes.

Statuses of a node: ``pending``, ``running``, then one of ``success``,
``failure``, ``skipped`` (its ``if`` was false, the debugger skipped it, or a
dependency failed under ``skip_dependents``) or ``cancelled`` (the run
stopped before it ran). Run statuses are the seeds': ``success``,
``failure``, ``partial_success_with_errors``, ``cancelled``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from ._model import OnError


class NodeStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class RunStatus(StrEnum):
    ACCEPTED = "accepted"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    PARTIAL = "partial_success_with_errors"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    NEEDS_ATTENTION = "needs_attention"
    # Waiting, recorded, driven by nobody (see ``_runstate``).
    AWAITING_APPROVAL = "awaiting_approval"
    WAITING = "waiting"
    PAUSED = "paused"


DONE = frozenset({NodeStatus.SUCCESS, NodeStatus.FAILURE, NodeStatus.SKIPPED, NodeStatus.CANCELLED})


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """What the scheduler needs of a node."""

    deps: frozenset[str]
    dependents: tuple[str, ...]
    on_error: OnError = "fail_run"
    order: int = 0


@dataclass
class Scheduler:
    specs: Mapping[str, NodeSpec]
    status: dict[str, NodeStatus] = field(init=False)
    reasons: dict[str, str] = field(init=False, default_factory=dict)
    failed: bool = field(init=False, default=False)
    aborted: bool = field(init=False, default=False)
    tolerated: int = field(init=False, default=0)
    _waiting: dict[str, int] = field(init=False)
    _ready: deque[str] = field(init=False)

    def __post_init__(self) -> None:
        self.status = dict.fromkeys(self.specs, NodeStatus.PENDING)
        self._waiting = {node_id: len(spec.deps) for node_id, spec in self.specs.items()}
        first = [node_id for node_id, count in self._waiting.items() if count == 0]
        self._ready = deque(sorted(first, key=lambda n: self.specs[n].order))

    # -- questions -------------------------------------------------------------

    def ready(self, limit: int | None = None) -> list[str]:
        """Takes up to ``limit`` nodes that may start now (dependencies done), in file order."""
        out: list[str] = []
        while self._ready and (limit is None or len(out) < limit):
            node_id = self._ready.popleft()
            if self.status[node_id] is NodeStatus.PENDING:
                out.append(node_id)
        return out

    @property
    def running(self) -> list[str]:
        return [n for n, s in self.status.items() if s is NodeStatus.RUNNING]

    @property
    def done(self) -> bool:
        return all(s in DONE for s in self.status.values())

    def run_status(self) -> RunStatus:
        if not self.done:
            return RunStatus.RUNNING
        if self.aborted:
            return RunStatus.CANCELLED
        if self.failed:
            return RunStatus.FAILURE
        if self.tolerated:
            return RunStatus.PARTIAL
        return RunStatus.SUCCESS

    # -- transitions -----------------------------------------------------------

    def start(self, node_id: str) -> None:
        self._expect(node_id, NodeStatus.PENDING)
        self.status[node_id] = NodeStatus.RUNNING

    def restore(self, node_id: str, status: NodeStatus) -> None:
        """A node settled by a run's record before this host resumed it (``success``
        or ``skipped``): it does not run, its dependents become ready as usual."""
        if status not in (NodeStatus.SUCCESS, NodeStatus.SKIPPED):
            raise ValueError(f"a node is restored as success or skipped, not {status}")
        self._expect(node_id, NodeStatus.PENDING)
        self._close(node_id, status)

    def succeed(self, node_id: str) -> None:
        self._expect(node_id, NodeStatus.RUNNING)
        self._close(node_id, NodeStatus.SUCCESS)

    def skip(self, node_id: str, reason: str) -> None:
        """The node did not run (``if`` false, or skipped by the debugger); its
        dependents still run and read ``null`` outputs."""
        if self.status[node_id] not in (NodeStatus.PENDING, NodeStatus.RUNNING):
            raise ValueError(f"node {node_id!r} is {self.status[node_id]}, cannot skip it")
        self.reasons[node_id] = reason
        self._close(node_id, NodeStatus.SKIPPED)

    def fail(self, node_id: str) -> list[str]:
        """Applies the node's ``on_error``; returns the running nodes to cancel."""
        self._expect(node_id, NodeStatus.RUNNING)
        self._close(node_id, NodeStatus.FAILURE)
        policy = self.specs[node_id].on_error
        if policy == "fail_run":
            self.failed = True
            return self._cancel_rest(f"run failed at node {node_id!r}")
        self.tolerated += 1
        if policy == "skip_dependents":
            for dependent in self._downstream(node_id):
                if self.status[dependent] is NodeStatus.PENDING:
                    self.reasons[dependent] = f"dependency {node_id!r} failed (skip_dependents)"
                    self._close(dependent, NodeStatus.SKIPPED)
        return []

    def abort(self, reason: str = "aborted") -> list[str]:
        """Stops the run: pending nodes are cancelled; returns the running ones to cancel."""
        self.aborted = True
        return self._cancel_rest(reason)

    def cancelled(self, node_id: str) -> None:
        """A running node was cancelled by the driver (after ``fail`` or ``abort``)."""
        self._expect(node_id, NodeStatus.RUNNING)
        self.reasons.setdefault(node_id, "cancelled while running")
        self._close(node_id, NodeStatus.CANCELLED)

    # -- internals ---------------------------------------------------------------

    def _close(self, node_id: str, status: NodeStatus) -> None:
        self.status[node_id] = status
        for dependent in self.specs[node_id].dependents:
            self._waiting[dependent] -= 1
            if self._waiting[dependent] == 0 and self.status[dependent] is NodeStatus.PENDING:
                self._ready.append(dependent)

    def _cancel_rest(self, reason: str) -> list[str]:
        running: list[str] = []
        for node_id, status in self.status.items():
            if status is NodeStatus.PENDING:
                self.status[node_id] = NodeStatus.CANCELLED
                self.reasons[node_id] = reason
            elif status is NodeStatus.RUNNING:
                running.append(node_id)
        self._ready.clear()
        return running

    def _downstream(self, node_id: str) -> Iterable[str]:
        seen: set[str] = set()
        stack = list(self.specs[node_id].dependents)
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.specs[current].dependents)
        return sorted(seen, key=lambda n: self.specs[n].order)

    def _expect(self, node_id: str, status: NodeStatus) -> None:
        if self.status[node_id] is not status:
            raise ValueError(f"node {node_id!r} is {self.status[node_id]}, expected {status}")
