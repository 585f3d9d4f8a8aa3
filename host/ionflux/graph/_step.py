"""One node of one run: render its inputs, call its transform or sub-graph under
its policies (``timeout``, ``retry``), and shape what it returned into outputs.

The ``Outcome`` goes back to the driver, which feeds the scheduler. Errors
are kept as serialisable dicts (``kind``, ``message``) so they reach the run
record and the completion event unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import BackendUnavailable, GuestError, IonfluxError, TemplateError
from ._model import Node
from ._plan import PlannedNode
from ._template import Scope, walk

RETRYABLE = (GuestError, TimeoutError, BackendUnavailable)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A node's inputs and scope rendered for one attempt; ``run`` false when ``if`` said no."""

    run: bool
    inputs: Any = None
    approval_scope: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # success | failure | skipped
    started_at: float
    ended_at: float
    attempts: int = 0
    inputs: Any = None
    outputs: Any = None
    error: dict[str, Any] | None = None
    reason: str | None = None
    fuel_used: int = 0
    child_run_id: str | None = None
    cached: bool = False  # reused from an earlier step (``cache: content``)
    cache_key: str | None = None  # a miss of ``cache: content``: the entry it makes


@dataclass(frozen=True, slots=True)
class Called:
    """What one successful attempt returned. ``cached``: no call was made, ``value``
    is the outputs an earlier step recorded (shaped already)."""

    value: Any
    fuel_used: int = 0
    child_run_id: str | None = None
    cached: bool = False
    cache_key: str | None = None


class ChildRunFailed(IonfluxError):
    """A sub-graph node's run did not succeed."""

    kind = "subgraph_failed"

    def __init__(self, run_id: str, status: str, details: list[dict[str, Any]] | None):
        self.run_id = run_id
        self.details = details or []
        first = f": {self.details[0].get('message')}" if self.details else ""
        super().__init__(f"sub-graph run {run_id} ended {status}{first}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "child_run_id": self.run_id, "child_errors": self.details}


def render(planned: PlannedNode, scope: Scope) -> Rendered:
    """Evaluates ``if`` then the inputs; raises ``TemplateError``."""
    if planned.node.if_ is False:
        return Rendered(False)
    if planned.condition is not None and not _truthy(planned.condition.render(scope)):
        return Rendered(False)
    inputs = planned.inputs.render(scope)
    if inputs is None:
        inputs = {}
    approval = None
    if planned.approval_scope is not None:
        approval = str(planned.approval_scope.render(scope))
    return Rendered(True, inputs, approval)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        # A mixed template renders to text: "false", "none", "null", "" and "0" are false.
        return value.strip().lower() not in ("", "false", "none", "null", "0")
    return bool(value)


Call = Callable[[Any, int], Awaitable[Called]]


async def execute(
    planned: PlannedNode,
    first: Rendered,
    rerender: Callable[[int], Rendered],
    call: Call,
) -> Outcome:
    """Runs ``call(inputs, attempt)`` with the node's timeout and retries.

    Inputs are re-rendered for every retry (``system.attempt`` changes); a
    template failure is never retried: it would fail the same way.
    """
    node = planned.node
    started = time.time()
    rendered = first
    attempts = 0
    fuel = 0
    last: dict[str, Any] | None = None
    for attempt in range(1, node.retry.count + 2):
        attempts = attempt
        if attempt > 1:
            await asyncio.sleep(node.retry.delay(attempt - 1))
            try:
                rendered = rerender(attempt)
            except TemplateError as exc:
                return _failed(started, attempts, rendered.inputs, error_dict(exc, node), fuel)
        try:
            if node.timeout is not None:
                async with asyncio.timeout(node.timeout):
                    called = await call(rendered.inputs, attempt)
            else:
                called = await call(rendered.inputs, attempt)
        except TimeoutError:
            last = {
                "kind": "timeout",
                "message": f"node {node.id!r} timed out after {node.timeout:g} s",
                "node_id": node.id,
            }
            continue
        except RETRYABLE as exc:
            last = error_dict(exc, node)
            fuel += getattr(exc, "fuel_used", 0) or 0
            continue
        except IonfluxError as exc:
            return _failed(started, attempts, rendered.inputs, error_dict(exc, node), fuel)
        fuel += called.fuel_used
        return Outcome(
            "success",
            started,
            time.time(),
            attempts,
            rendered.inputs,
            called.value if called.cached else shape_outputs(node, called.value),
            fuel_used=fuel,
            child_run_id=called.child_run_id,
            cached=called.cached,
            cache_key=called.cache_key,
        )
    assert last is not None
    if attempts > 1:
        last = {**last, "message": f"{last['message']} (after {attempts} attempts)"}
    return _failed(started, attempts, rendered.inputs, last, fuel)


def run_once(
    planned: PlannedNode, rendered: Rendered, call: Callable[[Any], Called], started: float
) -> Outcome:
    """``execute`` for a node without ``timeout`` or ``retry``, blocking: one attempt
    on the calling (worker) thread, its outcome built exactly as ``execute`` builds it."""
    node = planned.node
    try:
        called = call(rendered.inputs)
    except RETRYABLE as exc:
        fuel = getattr(exc, "fuel_used", 0) or 0
        return _failed(started, 1, rendered.inputs, error_dict(exc, node), fuel)
    except IonfluxError as exc:
        return _failed(started, 1, rendered.inputs, error_dict(exc, node), 0)
    return Outcome(
        "success",
        started,
        time.time(),
        1,
        rendered.inputs,
        called.value if called.cached else shape_outputs(node, called.value),
        fuel_used=called.fuel_used,
        child_run_id=called.child_run_id,
        cached=called.cached,
        cache_key=called.cache_key,
    )


def _failed(
    started: float, attempts: int, inputs: Any, error: dict[str, Any], fuel: int
) -> Outcome:
    return Outcome("failure", started, time.time(), attempts, inputs, None, error, fuel_used=fuel)


def error_dict(exc: Exception, node: Node | None = None) -> dict[str, Any]:
    out: dict[str, Any]
    if isinstance(exc, IonfluxError):
        out = dict(exc.to_dict())
    else:
        out = {"kind": type(exc).__name__, "message": str(exc)}
    if node is not None:
        out["node_id"] = node.id
    return out


def shape_outputs(node: Node, value: Any) -> Any:
    """A transform's result as the node's outputs.

    - no ``outputs`` declared: the result as it is;
    - ``outputs: {key: path}``: each key from a dotted path into the result
      (``""`` is the whole result);
    - ``outputs: [keys]``: a result object that names any of them is kept
      (missing keys read ``null``); a single declared key the result does
      not name receives the whole result.
    """
    declared = node.outputs
    if declared is None:
        return value
    if isinstance(declared, Mapping):
        return {key: _dig(value, path) for key, path in declared.items()}
    if isinstance(value, dict) and any(key in value for key in declared):
        return {**value, **{key: value.get(key) for key in declared}}
    if len(declared) == 1:
        return {declared[0]: value}
    base = dict(value) if isinstance(value, dict) else {}
    return {**base, **{key: base.get(key) for key in declared}}


def _dig(value: Any, path: str) -> Any:
    return walk(value, [p for p in path.split(".") if p])
