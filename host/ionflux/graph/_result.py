"""What a run answers: ``RunResult`` and its ``StepResult``s.

The fields follow the seeds' completion event (``execution_id``,
``overall_status``, ``step_results_summary_cid``, ``error_details``) so a
trigger can publish ``result.completion_event()`` as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["run_all", "dry_run_validate_only", "step_through_debug"]
MODES: tuple[Mode, ...] = ("run_all", "dry_run_validate_only", "step_through_debug")


@dataclass(frozen=True, slots=True)
class StepResult:
    node_id: str
    target: str  # transform name@version, or graph:<name>
    status: str  # success | failure | skipped | cancelled | planned (dry run)
    level: int
    started_at: float | None = None
    ended_at: float | None = None
    attempts: int = 0
    inputs: Any = None
    outputs: Any = None
    error: dict[str, Any] | None = None
    reason: str | None = None  # why skipped or cancelled
    fuel_used: int = 0
    inputs_cid: str | None = None
    outputs_cid: str | None = None
    child_run_id: str | None = None
    step_run_id: str | None = None
    # Its outputs were reused from an earlier step (``cache: content``): no call.
    cached: bool = False
    cache_key: str | None = None  # the content-cache entry its row makes (a miss)

    def with_ids(
        self, inputs_cid: str | None, outputs_cid: str | None, step_run_id: str | None
    ) -> StepResult:
        """This step with the ids its row gave it: ``dataclasses.replace`` spelled
        out, which costs a run a few µs per step (tests/test_graph_recorder_fast.py
        checks that every field is carried)."""
        return StepResult(
            self.node_id,
            self.target,
            self.status,
            self.level,
            self.started_at,
            self.ended_at,
            self.attempts,
            self.inputs,
            self.outputs,
            self.error,
            self.reason,
            self.fuel_used,
            inputs_cid,
            outputs_cid,
            self.child_run_id,
            step_run_id,
            self.cached,
            self.cache_key,
        )

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "target": self.target,
            "status": self.status,
            "level": self.level,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": self.duration_s,
            "attempts": self.attempts,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "error": self.error,
            "reason": self.reason,
            "fuel_used": self.fuel_used,
            "inputs_cid": self.inputs_cid,
            "outputs_cid": self.outputs_cid,
            "child_run_id": self.child_run_id,
            "cached": self.cached,
        }


@dataclass(frozen=True, slots=True)
class RunResult:
    execution_id: str
    graph_name: str
    graph_version: str
    graph_cid: str
    mode: Mode
    overall_status: str  # success | failure | partial_success_with_errors | cancelled
    output: Any
    steps: list[StepResult]
    started_at: float
    ended_at: float
    error_details: list[dict[str, Any]] | None = None
    step_results_summary_cid: str | None = None
    output_cid: str | None = None
    fuel_used: int = 0
    levels: list[list[str]] = field(default_factory=list)
    requested_scopes: list[str] = field(default_factory=list)
    scopes_to_ask: list[str] = field(default_factory=list)
    parent_run_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.overall_status == "success"

    @property
    def duration_s(self) -> float:
        return self.ended_at - self.started_at

    def step(self, node_id: str) -> StepResult:
        for step in self.steps:
            if step.node_id == node_id:
                return step
        raise KeyError(node_id)

    def completion_event(self) -> dict[str, Any]:
        """The event published when a run ends, as in the seeds."""
        return {
            "graph": self.graph_name,
            "graph_version": self.graph_version,
            "graph_cid": self.graph_cid,
            "execution_id": self.execution_id,
            "overall_status": self.overall_status,
            "output": self.output,
            "step_results_summary_cid": self.step_results_summary_cid,
            "error_details": self.error_details,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.completion_event(),
            "mode": self.mode,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": self.duration_s,
            "fuel_used": self.fuel_used,
            "output_cid": self.output_cid,
            "levels": self.levels,
            "requested_scopes": self.requested_scopes,
            "scopes_to_ask": self.scopes_to_ask,
            "parent_run_id": self.parent_run_id,
            "steps": [s.to_dict() for s in self.steps],
        }
