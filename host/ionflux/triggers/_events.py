"""Wire formats of the triggers, as pure functions: completion events and replies.

A completion event carries the seeds' fields (``execution_id``,
``overall_status``, ``step_results_summary_cid``, ``error_details``) plus the
graph, its version, the trigger and the timings. A reply to a NATS request
(and the body of a synchronous webhook answer) is the same with the run's
``output``. A trigger event refused before any run (bad JSON, schema, token)
gets an ``execution_id`` of its own, ``overall_status: failure`` and the error
in ``error_details``, so an observer of completion events sees it too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Protocol


class RunResultLike(Protocol):
    """What the triggers read from the graph engine's ``RunResult``."""

    @property
    def execution_id(self) -> str: ...
    @property
    def graph_name(self) -> str: ...
    @property
    def graph_version(self) -> str: ...
    @property
    def overall_status(self) -> str: ...
    @property
    def output(self) -> Any: ...
    @property
    def error_details(self) -> list[dict[str, Any]] | None: ...
    @property
    def step_results_summary_cid(self) -> str | None: ...
    @property
    def started_at(self) -> float: ...
    @property
    def ended_at(self) -> float: ...


def encode(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def completion_event(result: RunResultLike, trigger: str) -> dict[str, Any]:
    return {
        "execution_id": result.execution_id,
        "overall_status": result.overall_status,
        "step_results_summary_cid": result.step_results_summary_cid,
        "error_details": result.error_details,
        "graph": result.graph_name,
        "graph_version": result.graph_version,
        "trigger": trigger,
        "started_at": result.started_at,
        "ended_at": result.ended_at,
        "duration_ms": round((result.ended_at - result.started_at) * 1000, 3),
    }


def reply(result: RunResultLike, trigger: str) -> dict[str, Any]:
    return {**completion_event(result, trigger), "output": result.output}


def rejection(
    execution_id: str, graph: str, trigger: str, error: Mapping[str, Any]
) -> dict[str, Any]:
    """The event and reply for a trigger event refused before anything ran."""
    now = time.time()
    return {
        "execution_id": execution_id,
        "overall_status": "failure",
        "step_results_summary_cid": None,
        "error_details": [dict(error)],
        "graph": graph,
        "graph_version": None,
        "trigger": trigger,
        "started_at": now,
        "ended_at": now,
        "duration_ms": 0.0,
        "output": None,
    }


def parse_input(body: bytes) -> Any:
    """A trigger's body as JSON; an empty body is ``{}``. Raises ``ValueError``."""
    if not body.strip():
        return {}
    return json.loads(body)
