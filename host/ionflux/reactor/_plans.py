"""Master plans: the seed's multi-agent workflows, as data, validated before anything runs.

A plan (JSON or YAML, stored in IONPOD and addressed by its CID)::

    name: publish_daily_digest
    version: "1.0.0"
    required_scopes: ["publish_nats_topic:ionflux.digest.**"]   # what the plan declares
    steps:
      - step_id: query
        agent_to_call: data_query          # a deployed graph: name, name@version or CID
        input_mapping: {segment: "{{trigger.input_data.target_audience_segment}}"}
      - step_id: summarize
        agent_to_call: digest
        input_mapping: {title: "daily", text: "{{nodes.query.outputs.text}}"}
        dependencies: [query]
        on_error: {strategy: retry_with_backoff, retries: 2, backoff: 200ms}

A step's ``input_mapping`` is templates as in a graph's ``inputs``:
``{{trigger.input_data.x}}`` reads the plan's parameters, ``{{nodes.<step>.outputs.y}}``
an earlier step's outputs (the step must depend on it), ``{{system.attempt}}``.

``on_error.strategy`` is the seed's: ``retry_with_backoff`` (``retries`` more
attempts, ``backoff`` seconds multiplied by ``factor`` each time, then ``then``:
halt or skip), ``skip`` (the step is recorded failed, its dependents are
skipped, the rest goes on: the plan ends ``partial_success_with_errors``),
``halt`` (the default: nothing new starts, the plan fails) and
``alternative_plan`` (the plan halts and the plan named by ``alternative_plan``
runs instead, under the same consent).

``validate`` checks, before any step runs: unknown agents, step inputs that
read a step the step does not depend on or miss a property the agent's
``input_schema`` requires, dependency cycles, and agents' scopes the plan's
``required_scopes`` do not declare. Every problem is reported at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ionwall import DocumentError, DocumentLimits, covers, load_yaml

from .._errors import IonfluxError, PlanValidationError, ReactorLimitExceeded, TemplateError
from ..config import ReactorSettings
from ..graph import Plan, compile_value
from ..graph import Retry as _Retry

STEP_ID = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
Strategy = Literal["retry_with_backoff", "skip", "halt", "alternative_plan"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OnError(_Strict):
    """What a failing step does (the seed's error handling strategies)."""

    strategy: Strategy = "halt"
    retries: int = Field(default=1, ge=0)
    backoff: float | str = 0.0
    factor: float = Field(default=2.0, ge=1.0)
    then: Literal["halt", "skip"] = "halt"  # after the retries ran out
    alternative_plan: str | None = None

    def delay(self, attempt: int) -> float:
        """The wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        return _Retry.model_validate(
            {"count": 1, "backoff": self.backoff, "factor": self.factor}
        ).delay(attempt)

    @field_validator("backoff")
    @classmethod
    def _duration(cls, value: float | str) -> float | str:
        _Retry.model_validate({"count": 1, "backoff": value})  # raises on a bad duration
        return value


def _on_error(value: Any) -> Any:
    return {"strategy": value} if isinstance(value, str) else value


class Step(_Strict):
    step_id: str = Field(pattern=STEP_ID)
    description: str | None = None
    agent_to_call: str = Field(min_length=1, max_length=300)
    input_mapping: dict[str, Any] = Field(default_factory=dict)
    dependencies: list[str] = Field(default_factory=list)
    on_error: OnError = OnError()

    @field_validator("on_error", mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        return _on_error(value)


class MasterPlan(_Strict):
    name: str = Field(min_length=1, max_length=200)
    version: str = "0.0.0"
    description: str | None = None
    required_scopes: list[str] = Field(default_factory=list)
    # A plan that may act drastically (an emergency plan: lockdown, shutdown) runs
    # only after a person confirms it, unless an alert rule pre-authorized it.
    drastic: bool = False
    steps: list[Step] = Field(min_length=1)

    @property
    def step_ids(self) -> list[str]:
        return [s.step_id for s in self.steps]


def parse_plan(text: str | bytes, settings: ReactorSettings, origin: str = "plan") -> MasterPlan:
    """A plan from JSON or YAML text; raises ``PlanValidationError`` (every field
    problem) or ``ReactorLimitExceeded``."""
    data = text.encode() if isinstance(text, str) else text
    if len(data) > settings.max_plan_bytes:
        raise ReactorLimitExceeded(
            "max_plan_bytes", f"{origin} is {len(data)} bytes, more than {settings.max_plan_bytes}"
        )
    try:
        raw = load_yaml(data, origin, DocumentLimits(max_bytes=settings.max_plan_bytes))
    except (DocumentError, UnicodeDecodeError) as exc:
        problem = {"step": None, "problem": f"not YAML/JSON: {exc}"}
        raise PlanValidationError(origin, [problem]) from None
    return plan_from_data(raw, settings, origin)


def plan_from_data(raw: Any, settings: ReactorSettings, origin: str = "plan") -> MasterPlan:
    if not isinstance(raw, dict):
        raise PlanValidationError(origin, [{"step": None, "problem": "a plan is a mapping"}])
    steps = raw.get("steps")
    if isinstance(steps, list) and len(steps) > settings.max_plan_steps:
        raise ReactorLimitExceeded(
            "max_plan_steps",
            f"{origin} has {len(steps)} steps, more than {settings.max_plan_steps}",
        )
    try:
        plan = MasterPlan.model_validate(raw)
    except ValidationError as exc:
        name = str(raw.get("name") or origin)
        problems = [
            {
                "step": _step_of(raw, e["loc"]),
                "field": ".".join(str(p) for p in e["loc"]),
                "problem": e["msg"],
            }
            for e in exc.errors()
        ]
        raise PlanValidationError(name, problems) from None
    for step in plan.steps:
        if step.on_error.delay(1) > settings.max_backoff_s:
            raise ReactorLimitExceeded(
                "max_backoff_s",
                f"step {step.step_id} waits {step.on_error.delay(1):g} s before a retry, more "
                f"than {settings.max_backoff_s:g}",
            )
        if step.on_error.retries > settings.max_step_retries:
            raise ReactorLimitExceeded(
                "max_step_retries",
                f"step {step.step_id} retries {step.on_error.retries} times, more than "
                f"{settings.max_step_retries}",
            )
    return plan


def _step_of(raw: Mapping[str, Any], loc: tuple[Any, ...]) -> str | None:
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        steps = raw.get("steps") or []
        if loc[1] < len(steps) and isinstance(steps[loc[1]], dict):
            return str(steps[loc[1]].get("step_id") or f"#{loc[1] + 1}")
    return None


def plan_bytes(plan: MasterPlan) -> bytes:
    """The canonical JSON of a plan, as it is stored in IONPOD."""
    return json.dumps(plan.model_dump(mode="json", exclude_none=True), sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class Checked:
    """A plan that validated: each step's agent planned, the levels of steps that
    can run together, and the union of the agents' scopes."""

    plan: MasterPlan
    agents: dict[str, Plan]  # step id -> the agent's graph, pinned by CID
    levels: list[list[str]]
    scopes: list[str]  # the union of every agent's scopes, sorted
    alternatives: dict[str, str]  # step id -> alternative plan reference


AgentLookup = Callable[[str], Plan]  # raises for an unknown agent
ScopesOf = Callable[[Plan, Any], list[str]]


def validate(plan: MasterPlan, lookup: AgentLookup, scopes_of: ScopesOf) -> Checked:
    """Checks ``plan`` against the deployed agents; raises ``PlanValidationError``
    with every problem (see the module docstring)."""
    problems: list[dict[str, Any]] = []

    def problem(step: str | None, field: str, text: str) -> None:
        problems.append({"step": step, "field": field, "problem": text})

    ids = plan.step_ids
    seen: set[str] = set()
    for step_id in ids:
        if step_id in seen:
            problem(step_id, "step_id", "two steps share this step_id")
        seen.add(step_id)
    deps = {s.step_id: set(s.dependencies) for s in plan.steps}
    for step in plan.steps:
        for dep in step.dependencies:
            if dep == step.step_id:
                problem(step.step_id, "dependencies", "a step cannot depend on itself")
            elif dep not in deps:
                problem(step.step_id, "dependencies", f"depends on unknown step {dep!r}")
    levels, cycle = _levels(deps)
    if cycle:
        problem(cycle[0], "dependencies", "dependency cycle: " + " -> ".join(cycle))
    upstream = _upstream(deps) if not cycle else {}
    agents: dict[str, Plan] = {}
    union: set[str] = set()
    alternatives: dict[str, str] = {}
    for step in plan.steps:
        if step.on_error.strategy == "alternative_plan":
            if not step.on_error.alternative_plan:
                problem(step.step_id, "on_error.alternative_plan", "names no plan")
            else:
                alternatives[step.step_id] = step.on_error.alternative_plan
        try:
            agent = lookup(step.agent_to_call)
        except IonfluxError as exc:
            problem(step.step_id, "agent_to_call", f"unknown agent {step.agent_to_call!r}: {exc}")
            continue
        agents[step.step_id] = agent
        errors: list[Any] = []
        compiled = compile_value(
            step.input_mapping, errors, node=step.step_id, field="input_mapping"
        )
        for path, error in errors:
            problem(step.step_id, "input_mapping." + ".".join(map(str, path)), str(error))
        for ref in compiled.refs:
            root = ref[0] if ref else None
            if root == "nodes":
                other = str(ref[1]) if len(ref) > 1 else ""
                if other not in deps:
                    problem(step.step_id, "input_mapping", f"reads unknown step {other!r}")
                elif other not in upstream.get(step.step_id, set()):
                    problem(
                        step.step_id,
                        "input_mapping",
                        f"reads step {other!r} but does not depend on it (add it to dependencies)",
                    )
            elif root == "trigger" and (len(ref) < 2 or ref[1] != "input_data"):
                problem(
                    step.step_id,
                    "input_mapping",
                    "reads trigger: a step reads trigger.input_data (the plan's parameters)",
                )
        required = agent.graph.input_schema.get("required") or []
        missing = [k for k in required if k not in step.input_mapping]
        defaults = agent.graph.input_schema.get("properties") or {}
        missing = [k for k in missing if "default" not in (defaults.get(k) or {})]
        if missing:
            problem(
                step.step_id,
                "input_mapping",
                f"missing input {', '.join(missing)} required by agent {agent.name}",
            )
        try:
            static = None if compiled.located else step.input_mapping
            union.update(scopes_of(agent, static))
        except (IonfluxError, TemplateError) as exc:
            problem(step.step_id, "agent_to_call", f"cannot list the scopes of {agent.name}: {exc}")
    declared = plan.required_scopes
    for scope in sorted(union):
        if not any(covers(d, scope) for d in declared):
            problem(
                None,
                "required_scopes",
                f"an agent asks for {scope}, which the plan does not declare in required_scopes",
            )
    if problems:
        raise PlanValidationError(plan.name, problems)
    return Checked(plan, agents, levels, sorted(union), alternatives)


def _levels(deps: Mapping[str, set[str]]) -> tuple[list[list[str]], list[str]]:
    """Kahn's levels; a cycle found instead is returned as the second value."""
    remaining = {k: {d for d in v if d in deps} for k, v in deps.items()}
    levels: list[list[str]] = []
    done: set[str] = set()
    while remaining:
        ready = sorted(k for k, v in remaining.items() if v <= done)
        if not ready:
            return levels, _cycle(remaining)
        levels.append(ready)
        done.update(ready)
        for k in ready:
            del remaining[k]
    return levels, []


def _cycle(remaining: Mapping[str, set[str]]) -> list[str]:
    start = sorted(remaining)[0]
    path, node = [start], start
    while True:
        node = sorted(d for d in remaining[node] if d in remaining)[0]
        if node in path:
            return [*path[path.index(node) :], node]
        path.append(node)


def _upstream(deps: Mapping[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}

    def visit(k: str) -> set[str]:
        if k not in out:
            out[k] = set()
            for d in deps.get(k, ()):
                if d in deps:
                    out[k] |= {d} | visit(d)
        return out[k]

    for k in deps:
        visit(k)
    return out
