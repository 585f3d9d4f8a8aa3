"""The graph engine behind the triggers: deployed graphs, input checks, runs.

The engine records a run whose input breaks ``input_schema`` as a failed run;
a trigger must instead refuse such an event before anything runs (HTTP 422),
so ``EngineRunner`` checks the input against the plan first and raises
``SchemaViolation`` with the path of the offending field (for a missing
required property, the path of that property).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
from jsonschema.protocols import Validator

from .. import _logging, _tracing
from .._errors import SchemaViolation
from ..graph import Engine, Plan, RunResult, RunTrigger, apply_defaults, new_run_id
from ._errors import TriggerConfigError
from ._spec import GraphTriggers, parse_triggers

log = logging.getLogger("ionflux.triggers")

_REQUIRED = re.compile(r"^'([^']+)' is a required property$")


def input_problem(validator: Validator | None, value: Any) -> SchemaViolation | None:
    """The first problem of ``value`` as a ``SchemaViolation`` naming the field, or None."""
    if validator is None:
        return None
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    parts = list(error.absolute_path)
    missing = _REQUIRED.match(error.message) if error.validator == "required" else None
    if missing:
        parts.append(missing.group(1))
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return SchemaViolation("input", path, error.message)


class EngineRunner:
    """``GraphRunner`` over ``ionflux.graph.Engine``.

    The plan of a deployed graph is kept between runs (resolving a reference
    costs a few SQLite queries and a stat); ``forget()`` drops them when the
    deployed graphs change.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._plans: dict[str, Plan] = {}
        self.problems: dict[str, str] = {}  # graph -> why its triggers are off

    def plan(self, graph_ref: str) -> Plan:
        plan = self._plans.get(graph_ref)
        if plan is None:
            plan = self.engine.load(graph_ref)
            if "@" not in graph_ref and not graph_ref.endswith((".yaml", ".yml")):
                self._plans[graph_ref] = plan
        return plan

    def forget(self) -> None:
        self._plans.clear()

    def deployed_stamp(self) -> tuple[tuple[str, str], ...]:
        """Changes whenever a graph is deployed (cheap: one query per graph)."""
        repo = self.engine.repository
        out = []
        for name in repo.names():
            latest = repo.latest(name)
            out.append((name, latest.cid if latest else ""))
        return tuple(out)

    def check_input(self, graph_ref: str, value: Any) -> None:
        plan = self.plan(graph_ref)
        problem = input_problem(
            plan.input_validator, apply_defaults(plan.graph.input_schema, value)
        )
        if problem is not None:
            raise problem

    async def run(
        self,
        graph_ref: str,
        input: Any,
        *,
        trigger: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        run_key: str | None = None,
    ) -> RunResult:
        plan = self.plan(graph_ref)
        problem = input_problem(
            plan.input_validator, apply_defaults(plan.graph.input_schema, input)
        )
        if problem is not None:
            raise problem
        # Checked above (a refusal there is a 422 / an error event, no run record).
        # The id is chosen here (as the engine would) so that the run's log lines
        # and its span carry it from the start.
        run_id = run_id or new_run_id()
        with _observed(run_id, plan.name, trigger) as span:
            result = await self.engine.run(
                plan,
                input,
                trigger=_run_trigger(trigger),
                run_id=run_id,
                input_checked=True,
                run_key=run_key,
            )
            if span is not None:
                _end_span(span, result)
            return result

    def accept(
        self,
        graph_ref: str,
        input: Any,
        *,
        trigger: Mapping[str, Any] | None,
        run_id: str,
        run_key: str,
    ) -> tuple[str, bool]:
        """Records the run ``accepted`` before anyone is told (``Engine.accept``);
        (run id, False) or, for a key recorded already, (its run id, True)."""
        plan = self.plan(graph_ref)
        problem = input_problem(
            plan.input_validator, apply_defaults(plan.graph.input_schema, input)
        )
        if problem is not None:
            raise problem
        found_id, found = self.engine.accept(
            plan, input, trigger=_run_trigger(trigger), run_key=run_key, run_id=run_id
        )
        return found_id, found is not None

    @property
    def resume_interval_s(self) -> float:
        return self.engine.config.graph.resume_interval_s

    def orphans(self) -> list[str]:
        return self.engine.orphans()

    def wake(self) -> list[str]:
        """Reopens the waiting runs whose consent was approved or whose timer is due
        (and fails those denied or expired): see ``Engine.wake``."""
        return self.engine.wake()

    def set_nudge(self, nudge: Any) -> None:
        """``nudge(run_id)`` drives a run the engine reopened here (on the loop)."""
        self.engine.nudge = nudge

    async def resume(self, run_id: str) -> RunResult | None:
        with _observed(run_id, "", {"type": "resume"}) as span:
            result = await self.engine.resume(run_id)
            if span is not None and result is not None:
                _end_span(span, result)
            return result

    def stop(self) -> None:
        self.engine.stop()

    def release(self) -> None:
        self.engine.release()

    def deployed(self) -> list[GraphTriggers]:
        """The triggers of the latest version of every deployed graph. A graph whose
        triggers block is invalid is left out; ``problems`` says why."""
        out = []
        self.problems = {}
        repo = self.engine.repository
        for name in repo.names():
            graph = repo.lookup_graph(name, None)
            if graph is None:
                continue
            try:
                out.append(parse_triggers(graph.name, graph.version, graph.triggers))
            except TriggerConfigError as exc:
                log.error("%s", exc)
                self.problems[graph.name] = str(exc)
        return out


def _run_trigger(trigger: Mapping[str, Any] | None) -> RunTrigger:
    info = dict(trigger or {})
    details = dict(info.get("details") or {})
    caller = details.get("caller")
    return RunTrigger(
        type=str(info.get("type", "manual")),
        details=details,
        subject=str(caller) if caller else "anonymous",
    )


@contextlib.contextmanager
def _observed(run_id: str, graph: str, trigger: Mapping[str, Any] | None) -> Iterator[Any]:
    """The run's log fields bound and its span open (None: tracing is off)."""
    with contextlib.ExitStack() as stack:
        if _logging.enabled:
            stack.enter_context(_logging.run_scope(run_id, graph))
        span = None
        if _tracing.tracer is not None:
            span = stack.enter_context(
                _tracing.run_span(
                    run_id, graph or "(resumed)", **{"ionflux.trigger": _trigger_type(trigger)}
                )
            )
        yield span


def _trigger_type(trigger: Mapping[str, Any] | None) -> str:
    return str((trigger or {}).get("type", "manual"))


def _end_span(span: Any, result: RunResult) -> None:
    status = getattr(result.overall_status, "value", result.overall_status)
    span.update_name(f"run {result.graph_name}")
    span.set_attribute("ionflux.graph", result.graph_name)
    span.set_attribute("ionflux.run_id", result.execution_id)
    span.set_attribute("ionflux.status", str(status))
    span.set_attribute("ionflux.fuel_used", result.fuel_used)
