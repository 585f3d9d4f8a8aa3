"""The engine's seams: how it calls transforms, asks IONWALL, stores values and
pauses for a debugger. Small Protocols, one real implementation each.

- ``Invoker``: the sandboxes. ``HostInvoker`` adapts ``ionflux.host.Host``. Its
  ``invoke`` blocks; the engine calls it on its own worker threads, so a
  chain of nodes can run back to back on one thread (see ``_engine``).
- ``Authorizer``: the graph-level IONWALL check of the requested scope set
  (the union of the nodes' manifest scopes and their ``ionwall_approval_scope``).
  Without one, nothing is checked at graph level; every import call is still
  gated by the host's gate.
- ``Debugger``: ``step_through_debug`` awaits it before each node.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ionwall import CallContext, Gate

from .. import _logging, _tracing
from .._errors import UnknownTransform
from ._plan import TransformInfo

if TYPE_CHECKING:
    from ..host import Host


@dataclass(frozen=True, slots=True)
class Invoked:
    value: Any
    fuel_used: int
    duration_s: float
    wait_s: float = 0.0  # of duration_s, the time spent waiting on I/O (imports)


class Invoker(Protocol):
    def lookup_transform(self, name: str) -> TransformInfo | None: ...

    def invoke(
        self, transform: TransformInfo, input: Any, *, ctx: CallContext, gate: Gate | None
    ) -> Invoked:
        """Runs one call to the end; called on a worker thread, never on the event loop."""
        ...


class HostInvoker:
    """Runs nodes through the real host: a fresh sandbox per call."""

    def __init__(self, host: Host):
        self.host = host

    def lookup_transform(self, name: str) -> TransformInfo | None:
        try:
            found = self.host.registry.get(name)
        except UnknownTransform:
            return None
        manifest = found.manifest
        return TransformInfo(
            name=found.name,
            version=found.version,
            cid=found.cid,
            scopes=tuple(manifest.scopes),
            input_schema=manifest.input_schema,
            output_schema=manifest.output_schema,
        )

    def invoke(
        self, transform: TransformInfo, input: Any, *, ctx: CallContext, gate: Gate | None
    ) -> Invoked:
        ref = f"{transform.name}@{transform.version}"
        if _tracing.tracer is None and not _logging.enabled:
            done = self.host.invoke(ref, input, ctx=ctx, gate=gate)
            return Invoked(done.value, done.fuel_used, done.duration_s, done.import_s)
        return self._observed(ref, transform, input, ctx, gate)

    def _observed(
        self, ref: str, transform: TransformInfo, input: Any, ctx: CallContext, gate: Gate | None
    ) -> Invoked:
        """``invoke`` with its log fields bound and, when tracing, in a span (a
        child of its run's span; its imports' spans are its children)."""
        with contextlib.ExitStack() as stack:
            if _logging.enabled:
                stack.enter_context(_logging.bind(**_logging.call_fields(ctx)))
            span = None
            if _tracing.tracer is not None:
                span = stack.enter_context(
                    _tracing.tracer.start_as_current_span(
                        f"node {ctx.node_id or transform.name}",
                        context=_tracing.run_context(ctx.run_id),
                        attributes={
                            "ionflux.run_id": ctx.run_id or "",
                            "ionflux.node": ctx.node_id or "",
                            "ionflux.transform": ref,
                            "ionflux.module_cid": transform.cid,
                        },
                        record_exception=False,
                        set_status_on_exception=False,
                    )
                )
            try:
                done = self.host.invoke(ref, input, ctx=ctx, gate=gate)
            except Exception as exc:
                if span is not None:
                    from opentelemetry.trace import Status, StatusCode

                    span.set_attribute("ionflux.outcome", getattr(exc, "kind", type(exc).__name__))
                    span.set_attribute("ionflux.fuel_used", getattr(exc, "fuel_used", 0) or 0)
                    span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
                raise
            if span is not None:
                span.set_attribute("ionflux.outcome", "success")
                span.set_attribute("ionflux.fuel_used", done.fuel_used)
            return Invoked(done.value, done.fuel_used, done.duration_s, done.import_s)

    def cancel(self, run_id: str) -> None:
        """Stops the calls of ``run_id`` in flight at their next epoch tick
        (``CallCancelled``); a call outside a run is never stopped so."""
        from ..runtime import cancel_run

        cancel_run(run_id)

    def forget(self, run_id: str) -> None:
        """Calls of ``run_id`` run again (a cancelled run retried)."""
        from ..runtime import forget_run

        forget_run(run_id)


@dataclass(frozen=True, slots=True)
class Authorization:
    """The answer of the graph-level check. ``missing`` are the scopes no grant
    covers (what a consent request would ask); ``gate`` replaces the host's gate
    for this run's import calls when given."""

    grant_id: str | None = None
    gate: Gate | None = None
    missing: tuple[str, ...] = ()


class Authorizer(Protocol):
    def authorize(
        self,
        *,
        subject: str,
        graph: str,
        version: str,
        cid: str,
        scopes: list[str],
        dry_run: bool,
    ) -> Authorization:
        """Raises an ``IonfluxError`` (``PermissionDenied``, consent required) to refuse;
        with ``dry_run`` only reports."""
        ...


class NoAuthorizer:
    """No graph-level check: every requested scope is reported as one to ask."""

    def authorize(
        self,
        *,
        subject: str,
        graph: str,
        version: str,
        cid: str,
        scopes: list[str],
        dry_run: bool,
    ) -> Authorization:
        return Authorization(missing=tuple(scopes))


DebugAction = Literal["continue", "skip", "abort"]


@dataclass(frozen=True, slots=True)
class DebugPause:
    """Where ``step_through_debug`` stopped: the next node and its rendered inputs."""

    run_id: str
    graph_name: str
    node_id: str
    target: str
    level: int
    inputs: Any
    approval_scope: str | None
    done: dict[str, str]  # node id -> status of the nodes finished so far


Debugger = Callable[[DebugPause], Awaitable[DebugAction]]
