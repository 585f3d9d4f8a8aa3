"""OpenTelemetry traces that follow a run: a span per run (the trigger runner),
per node's guest call (the graph's invoker) and per import (the runtime's
``_gated``, with the scope and the gate's decision), linked parent to child,
and across hosts through a W3C ``traceparent`` header on NATS messages and
HTTP requests.

Optional: ``pip install 'ionflux-host[otel]'`` and ``tracing.otlp_endpoint``
set. Otherwise ``tracer`` stays None and every hot path pays one None check;
the OpenTelemetry packages are not even imported.

The engine runs guest calls on its own worker threads, where the run's context
(a context variable) does not follow by itself; so the run's context is kept
by run id (``run_context``), which every guest call's ``CallContext`` carries.
Within a guest call, imports run on the call's thread: the call's span is the
current one there.

A root module: every package may import it; it imports nothing of ionflux but
the config's settings type (for typing).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import TracingSettings

log = logging.getLogger("ionflux.tracing")

# The tracer, or None: tracing off (the default). Hot paths check this first.
tracer: Any = None
_provider: Any = None

# run id -> the OpenTelemetry Context holding that run's span.
_runs: dict[str, Any] = {}

TRACEPARENT = "traceparent"


def setup(settings: TracingSettings) -> bool:
    """Sends spans to ``settings.otlp_endpoint`` (OTLP over HTTP). False (and one
    warning) when no endpoint is set or the ``otel`` extra is not installed."""
    if not settings.otlp_endpoint:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as exc:
        log.warning(
            "tracing.otlp_endpoint is set but OpenTelemetry is not installed "
            "(pip install 'ionflux-host[otel]'): no traces (%s)",
            exc,
        )
        return False
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
    )
    use(provider)
    return True


def use(provider: Any) -> None:
    """Traces through ``provider`` (an SDK ``TracerProvider``); None: off."""
    global tracer, _provider
    _provider = provider
    tracer = None if provider is None else provider.get_tracer("ionflux")


def shutdown() -> None:
    """Flushes and stops the exporter; tracing is off afterwards."""
    provider = _provider
    use(None)
    if provider is not None:
        provider.shutdown()


@contextlib.contextmanager
def run_span(run_id: str, graph: str, **attributes: Any) -> Iterator[Any]:
    """The span of one run (None when tracing is off), the current span meanwhile,
    and the parent of the run's guest calls on any thread."""
    if tracer is None:
        yield None
        return
    from opentelemetry import context

    with tracer.start_as_current_span(
        f"run {graph}",
        attributes={"ionflux.run_id": run_id, "ionflux.graph": graph, **attributes},
    ) as span:
        _runs[run_id] = context.get_current()
        try:
            yield span
        finally:
            _runs.pop(run_id, None)


def run_context(run_id: str | None) -> Any:
    """The Context of run ``run_id``'s span, or None (not traced here)."""
    return _runs.get(run_id) if run_id is not None else None


def outgoing(headers: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """``headers`` plus the current span's ``traceparent`` (a NATS message this
    host publishes); ``headers`` as given when tracing is off."""
    if tracer is None:
        return None if headers is None else dict(headers)
    from opentelemetry import propagate

    out = dict(headers or {})
    propagate.inject(out)
    return out or None


@contextlib.contextmanager
def trigger_span(name: str, headers: Mapping[str, str] | None, **attributes: Any) -> Iterator[Any]:
    """The span of one trigger event (a NATS message, an HTTP request), current in
    the block: the parent of the run it starts and of the events it publishes. It
    continues the trace of an incoming ``traceparent`` in ``headers``, if any."""
    if tracer is None:
        yield None
        return
    from opentelemetry import propagate, trace

    parent = None
    if headers and _has_traceparent(headers):
        parent = propagate.extract({k.lower(): v for k, v in headers.items()})
    with tracer.start_as_current_span(
        name, context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span


def _has_traceparent(headers: Mapping[str, str]) -> bool:
    return any(k.lower() == TRACEPARENT for k in headers)
