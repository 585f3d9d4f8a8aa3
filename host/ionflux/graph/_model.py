"""The FluxGraph DSL as pydantic models: what a graph file may say, and nothing else.

The fields are the seeds' (``name``, ``version``, ``triggers``,
``input_schema``, ``output_schema``, ``graph:`` nodes with ``id``,
``transform``, ``inputs``, ``if``, ``outputs``, ``dependencies``,
``ionwall_approval_scope``). Additions, all optional: a node may call a
deployed graph (``subgraph``) instead of a transform, carries the policies
``timeout``, ``retry`` and ``on_error``, and the graph may name its result
with a top-level ``output`` template (by default the outputs of the nodes
nothing depends on).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

NODE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
GRAPH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

OnError = Literal["fail_run", "continue", "skip_dependents"]
TriggerType = Literal["manual", "event_driven", "webhook", "schedule", "scheduled", "cron"]


def parse_duration(value: Any) -> Any:
    """``1.5``, ``"250ms"``, ``"30s"``, ``"2m"``, ``"1h"`` -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '250ms', '30s', '2m'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError("a duration is a number of seconds or a string like '250ms', '30s', '2m'")


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
BackoffSeconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Trigger(_Strict):
    type: TriggerType
    config: dict[str, Any] = Field(default_factory=dict)


class Retry(_Strict):
    """Retries after a failed attempt: ``count`` more attempts, waiting
    ``backoff`` seconds, multiplied by ``factor`` after each one."""

    count: int = Field(default=0, ge=0, le=100)
    backoff: BackoffSeconds = 0.0
    factor: float = Field(default=2.0, ge=1.0)

    def delay(self, attempt: int) -> float:
        """The wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        return float(self.backoff * self.factor ** (attempt - 1))


def _retry(value: Any) -> Any:
    return {"count": value} if isinstance(value, int) and not isinstance(value, bool) else value


class SubgraphRef(_Strict):
    name: str = Field(pattern=GRAPH_NAME.pattern)
    version: str | None = Field(default=None, description="the graph's version field or a CID")


def _subgraph(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class Node(_Strict):
    id: str = Field(pattern=NODE_ID.pattern)
    description: str | None = None
    transform: str | None = Field(default=None, min_length=1)
    subgraph: Annotated[SubgraphRef | None, BeforeValidator(_subgraph)] = None
    inputs: Any = None
    if_: str | bool | None = Field(default=None, alias="if")
    outputs: list[str] | dict[str, str] | None = None
    dependencies: list[str] = Field(default_factory=list)
    ionwall_approval_scope: str | None = None
    timeout: Seconds | None = None
    retry: Annotated[Retry, BeforeValidator(_retry)] = Retry()
    on_error: OnError = "fail_run"
    # False: calling it twice is not safe (it charges, sends, appends). A run whose
    # host died while this node was in flight stops in ``needs_attention`` for a
    # person instead of calling it again on resume.
    idempotent: bool = True
    # A durable timer: the node starts this long after it is first ready (``2h``),
    # or at a time (ISO 8601, or a template rendering one). Meanwhile the run is
    # recorded ``waiting`` and holds no thread; the host that looks when it is due
    # drives it on, across restarts.
    delay: Seconds | None = None
    until: str | None = Field(default=None, min_length=1)
    # ``content``: a call whose transform is pure (its manifest says so) with the
    # same module, input, grant and limits as an earlier step's reuses that step's
    # output instead of calling the guest (``_content_cache``). Off by default.
    cache: Literal["content"] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Node:
        if (self.transform is None) == (self.subgraph is None):
            raise ValueError("a node names exactly one of 'transform' or 'subgraph'")
        if self.delay is not None and self.until is not None:
            raise ValueError("a node waits for 'delay' or 'until', not both")
        return self

    @property
    def declared_outputs(self) -> list[str] | None:
        if self.outputs is None:
            return None
        return list(self.outputs)


class Budget(_Strict):
    """What one run of the graph may spend, its sub-graphs' runs included; each
    at most the configuration's ``graph.max_nodes_per_run``/``max_fuel_per_run``
    (a larger value is bounded by it). Unset: the configuration's."""

    max_nodes: int | None = Field(default=None, gt=0, description="node calls, each attempt")
    max_fuel: int | None = Field(default=None, gt=0, description="fuel of every call together")


class FluxGraph(_Strict):
    name: str = Field(pattern=GRAPH_NAME.pattern)
    version: str = "0.0.0"
    description: str | None = None
    triggers: list[Trigger] = Field(default_factory=lambda: [Trigger(type="manual")])
    input_schema: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] = Field(default_factory=dict)
    graph: list[Node] = Field(min_length=1)
    output: Any = None
    budget: Budget = Budget()

    @property
    def nodes(self) -> dict[str, Node]:
        return {node.id: node for node in self.graph}
