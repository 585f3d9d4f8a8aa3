"""Host-native nodes: a transform name the host answers itself, on the event loop.

A graph names them as any transform (``transform: master-plan-executor``); the
planner finds them in the engine's ``natives`` before the registry, and the run
loop awaits them on the loop instead of calling a guest on a worker thread. They
exist for what a sandboxed guest cannot do: the ION Reactor's executor starts
sub-runs of other graphs. A native is trusted host code; its node's scopes are
asked for like any transform's, and it checks what it does on the run's gate
(``NativeCall.check``).

``NativeCall.run_graph`` starts a run of another graph as a child of the node's
run (recorded with ``parent_run_id``, sharing the run's budget and its sub-run
slots), as a ``subgraph:`` node's run is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ionwall import CallContext, Gate

from .._errors import GraphError, PermissionDenied
from ._plan import Plan, TransformCatalog, TransformInfo
from ._result import RunResult

if TYPE_CHECKING:
    from ._context import RunContext
    from ._engine import Engine


@dataclass(frozen=True, slots=True)
class NativeCall:
    """One call of a native node: who runs it, under which grant, and a way to start
    child runs."""

    run_id: str
    node_id: str
    graph: str
    subject: str
    grant_id: str | None
    gate: Gate | None
    depth: int
    _engine: Engine = field(repr=False)
    _ctx: RunContext = field(repr=False)

    def check(self, scope: str) -> None:
        """Asks the run's gate for ``scope``; raises ``PermissionDenied``."""
        if self.gate is None:
            raise PermissionDenied(scope, "no grant covers this run", self.graph)
        ctx = CallContext(
            subject=self.graph,
            transform=self.node_id,
            run_id=self.run_id,
            node_id=self.node_id,
            grant_id=self.grant_id,
        )
        decision = self.gate.check(ctx, scope)
        if not decision.allowed:
            raise PermissionDenied(scope, decision.reason, self.graph)

    async def run_graph(
        self,
        graph: Plan | str,
        input: Any,
        *,
        key: str,
        subject: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Runs ``graph`` as a child of this node's run (``parent_run_id`` = this
        run; the child's node is ``<node_id>/<key>``). ``subject`` is who the
        child's authorizer sees (default: this run's)."""
        return await self._engine._run_native_child(
            self._ctx, self.node_id, graph, input, key=key, subject=subject, details=details
        )


NativeFn = Callable[[NativeCall, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Native:
    """A host-native transform: its catalog entry and the coroutine answering a call."""

    info: TransformInfo
    fn: NativeFn


class NativeCatalog:
    """The planner's catalog: natives first, then the registry's transforms."""

    def __init__(self, inner: TransformCatalog, natives: Mapping[str, Native]) -> None:
        self.inner = inner
        self.natives = natives

    def lookup_transform(self, name: str) -> TransformInfo | None:
        native = self.natives.get(name)
        return native.info if native is not None else self.inner.lookup_transform(name)

    def __getattr__(self, name: str) -> Any:  # what else the planner asks the registry
        return getattr(self.inner, name)


def native_for(natives: Mapping[str, Native], transform: TransformInfo | None) -> Native | None:
    """The native a planned node's transform is (same name and CID), or None."""
    if transform is None or not natives:
        return None
    found = natives.get(transform.name)
    return found if found is not None and found.info.cid == transform.cid else None


async def call_native(native: Native, call: NativeCall, inputs: Any) -> Any:
    try:
        return await native.fn(call, inputs)
    except asyncio.CancelledError:
        raise
    except GraphError:
        raise
    except Exception as exc:  # a native's own bug: the node fails, the host serves on
        if hasattr(exc, "kind"):
            raise
        raise GraphError(f"native {native.info.name} failed: {exc}") from exc
