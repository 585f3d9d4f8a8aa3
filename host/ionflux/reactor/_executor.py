"""The seed's ``MasterPlanExecutor``: runs a validated plan's steps as child runs.

Each step is a run of its agent's graph (pinned by CID at validation), started
by the engine as a child of the plan's run (``NativeCall.run_graph``), under the
plan's one grant. Steps start as soon as their dependencies succeeded, so
independent ones run at once. A failing step follows its ``on_error``
(``_plans``). The result is the executor node's outputs: the overall status,
the step log (stored in IONPOD by the graph's next node) and the errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .._errors import IonfluxError, TemplateError
from ..graph import NativeCall, RunResult, compile_value
from ._plans import Checked, Step

OK = ("success", "partial_success_with_errors")

# Loads and validates an alternative plan by reference: (its CID, the checked plan).
Alternative = Callable[[str], Awaitable[tuple[str, Checked]]]


@dataclass
class StepLog:
    step_id: str
    agent: str
    agent_cid: str
    status: str = "pending"  # success | failure | skipped | cancelled
    attempts: int = 0
    run_ids: list[str] = field(default_factory=list)
    # The last run's output, masked as every run record is (ionwall.secret_values,
    # sensitive_fields): the log is stored in IONPOD and read by whoever reads it.
    outputs: Any = None
    started_at: float | None = None
    ended_at: float | None = None
    error: dict[str, Any] | None = None
    reason: str | None = None
    strategy: str = "halt"

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_id": self.step_id,
            "agent": self.agent,
            "agent_cid": self.agent_cid,
            "status": self.status,
            "attempts": self.attempts,
            "run_ids": self.run_ids,
            "outputs": self.outputs,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "error": self.error,
            "reason": self.reason,
            "on_error": self.strategy,
        }


@dataclass
class Execution:
    """What one plan's execution did: its status, each step, the errors."""

    plan: str
    plan_cid: str
    execution_id: str
    status: str = "success"
    steps: list[StepLog] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    alternative: Execution | None = None
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None

    def log(self) -> dict[str, Any]:
        return {
            "master_plan": self.plan,
            "master_plan_cid": self.plan_cid,
            "execution_id": self.execution_id,
            "overall_status": self.status,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "steps": [s.to_dict() for s in self.steps],
            "alternative_plan": self.alternative.log() if self.alternative else None,
        }


class Executor:
    """Runs ``checked`` under ``call``'s run; children authorized as ``subject``."""

    def __init__(
        self,
        call: NativeCall,
        subject: str,
        *,
        alternative: Alternative,
        max_alternative_depth: int,
        max_backoff_s: float = 300.0,
        mask: Callable[[Any], Any] = lambda value: value,
        on_step: Callable[[StepLog], None] | None = None,
    ) -> None:
        self.max_backoff_s = max_backoff_s
        self.mask = mask
        self.call = call
        self.subject = subject
        self.alternative = alternative
        self.max_alternative_depth = max_alternative_depth
        self.on_step = on_step

    async def execute(
        self, checked: Checked, plan_cid: str, parameters: Any, *, depth: int = 0
    ) -> Execution:
        plan = checked.plan
        run = Execution(plan.name, plan_cid, self.call.run_id)
        logs = {
            s.step_id: StepLog(
                s.step_id,
                s.agent_to_call,
                checked.agents[s.step_id].cid,
                strategy=s.on_error.strategy,
            )
            for s in plan.steps
        }
        run.steps = list(logs.values())
        outputs: dict[str, dict[str, Any]] = {}
        steps = {s.step_id: s for s in plan.steps}
        tasks: dict[asyncio.Task[None], str] = {}
        halted: Step | None = None

        def ready() -> list[str]:
            return [
                s.step_id
                for s in plan.steps
                if logs[s.step_id].status == "pending"
                and s.step_id not in tasks.values()
                and all(logs[d].status == "success" for d in s.dependencies)
            ]

        try:
            while True:
                if halted is None:
                    for step_id in ready():
                        logs[step_id].status = "running"
                        scope = {
                            "trigger": {"input_data": parameters, "type": "master_plan"},
                            "nodes": outputs,
                            "system": {
                                "run_id": self.call.run_id,
                                "node_id": step_id,
                                "graph_name": plan.name,
                                "master_plan_cid": plan_cid,
                            },
                            "null": None,
                        }
                        task = asyncio.create_task(
                            self._step(steps[step_id], checked, logs[step_id], scope, outputs),
                            name=f"plan step {step_id}",
                        )
                        tasks[task] = step_id
                if not tasks:
                    break
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    step_id = tasks.pop(task)
                    task.result()
                    log = logs[step_id]
                    if log.status == "failure":
                        step = steps[step_id]
                        if _gives_up(step) == "skip":
                            for other in _downstream(plan.steps, step_id):
                                if logs[other].status == "pending":
                                    logs[other].status = "skipped"
                                    logs[other].reason = f"step {step_id!r} failed (skip)"
                        elif halted is None:
                            halted = step
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for log in logs.values():
                if log.status in ("pending", "running"):
                    log.status = "cancelled"
            raise
        for log in logs.values():
            if log.status == "pending":
                log.status = "cancelled"
                log.reason = f"the plan halted at step {halted.step_id!r}" if halted else None
        run.errors = [
            {**log.error, "step_id": log.step_id, "agent": log.agent}
            for log in logs.values()
            if log.error is not None
        ]
        failed = [log for log in logs.values() if log.status == "failure"]
        if halted is not None:
            run.status = "failure"
            if halted.on_error.strategy == "alternative_plan" and halted.on_error.alternative_plan:
                run.alternative = await self._alternative(halted, parameters, depth)
                if run.alternative is not None and run.alternative.status in OK:
                    run.status = "partial_success_with_errors"
        elif failed:
            run.status = "partial_success_with_errors"
        run.ended_at = time.time()
        return run

    async def _step(
        self,
        step: Step,
        checked: Checked,
        log: StepLog,
        scope: dict[str, Any],
        outputs: dict[str, dict[str, Any]],
    ) -> None:
        agent = checked.agents[step.step_id]
        policy = step.on_error
        attempts = 1 + (policy.retries if policy.strategy == "retry_with_backoff" else 0)
        log.started_at = time.time()
        for attempt in range(1, attempts + 1):
            log.attempts = attempt
            if attempt > 1:
                await asyncio.sleep(min(policy.delay(attempt - 1), self.max_backoff_s))
            try:
                value = compile_value(step.input_mapping).render(
                    {**scope, "system": {**scope["system"], "attempt": attempt}}
                )
            except TemplateError as exc:
                log.error = exc.to_dict()
                break  # an input that does not render fails the same way again
            try:
                result: RunResult = await self.call.run_graph(
                    agent,
                    value,
                    key=step.step_id if attempt == 1 else f"{step.step_id}#{attempt}",
                    subject=self.subject,
                    details={"master_plan_step": step.step_id, "attempt": attempt},
                )
            except IonfluxError as exc:
                log.error = exc.to_dict()
                continue
            log.run_ids.append(result.execution_id)
            log.outputs = self.mask(result.output) if result.overall_status in OK else None
            if result.overall_status in OK:
                log.status, log.error = "success", None
                outputs[step.step_id] = {"outputs": result.output, "status": "success"}
                break
            first = (result.error_details or [{}])[0]
            log.error = {
                "kind": "step_failed",
                "message": f"agent {agent.name} run {result.execution_id} ended "
                f"{result.overall_status}: {first.get('message', '')}".rstrip(": "),
                "child_run_id": result.execution_id,
                "child_status": result.overall_status,
                "child_errors": result.error_details,
            }
        if log.status != "success":
            log.status = "failure"
            outputs[step.step_id] = {"outputs": None, "status": "failure"}
            if log.error is not None and log.attempts > 1:
                log.error["message"] += f" (after {log.attempts} attempts)"
        log.ended_at = time.time()
        if self.on_step is not None:
            self.on_step(log)

    async def _alternative(self, step: Step, parameters: Any, depth: int) -> Execution | None:
        ref = step.on_error.alternative_plan
        assert ref is not None
        if depth >= self.max_alternative_depth:
            return None
        cid, checked = await self.alternative(ref)
        return await self.execute(checked, cid, parameters, depth=depth + 1)


def _gives_up(step: Step) -> str:
    """What a failed step does once its own attempts are spent: skip or halt."""
    strategy = step.on_error.strategy
    if strategy == "skip":
        return "skip"
    if strategy == "retry_with_backoff":
        return step.on_error.then
    return "halt"


def _downstream(steps: list[Step], step_id: str) -> list[str]:
    out: list[str] = []
    frontier = [step_id]
    while frontier:
        current = frontier.pop()
        for s in steps:
            if current in s.dependencies and s.step_id not in out:
                out.append(s.step_id)
                frontier.append(s.step_id)
    return out
