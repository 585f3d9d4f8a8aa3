"""OpenTelemetry traces follow a run: a span per run, per node's guest call and
per import (with the scope and the gate's decision), linked parent to child
across the engine's worker threads, and across hosts through ``traceparent`` on
HTTP requests and NATS messages. The SDK's in-memory exporter collects the
spans (the OTLP exporter is what ``tracing.otlp_endpoint`` configures)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import ionflux
import nats
import pytest
from conftest import TESTING, GuestPublisher, make_config, on_nats
from ionflux import _tracing
from ionflux.config import TracingSettings
from ionflux.graph import Engine, GraphRepository, HostInvoker, RunHistory
from ionflux.host import Host
from ionflux.http import RunningHost, start_host
from ionflux.http.testing import chain_graph, deploy, publish_wasm
from ionflux.triggers import EngineRunner, NatsServer
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# A caller's trace: what an upstream service sends in its traceparent header.
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


class Ended(SpanProcessor):
    """Tells when a span of a given name has ended (a span that ends after the
    answer a test waits on)."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.changed = threading.Condition()

    def on_end(self, span: ReadableSpan) -> None:
        with self.changed:
            self.names.add(span.name)
            self.changed.notify_all()

    def wait(self, name: str, timeout: float = 10) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: name in self.names, timeout)


ended = Ended()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ended.names.clear()
    provider.add_span_processor(ended)
    _tracing.use(provider)
    yield exporter
    _tracing.use(None)
    provider.shutdown()


TWO_NODES = """
name: traced
input_schema: {type: object}
graph:
  - id: say
    transform: all-imports
    inputs: {call: log, level: info, message: "hello from say"}
  - id: peek
    transform: all-imports
    inputs: {call: config, key: secret}
    dependencies: [say]
output:
  said: "{{ nodes.say.outputs }}"
  peeked: "{{ nodes.peek.outputs }}"
"""


def traced_engine(host: Host, publish_guest: GuestPublisher, where: Path) -> Engine:
    """An engine over ``host`` with ``all-imports`` allowed to log (granted) and
    nothing else: its ``config`` import is denied by the gate."""
    publish_guest(host, "all-imports", scopes=["emit_log:*"])
    with pytest.raises(ionflux.ConsentRequired) as asked:
        host.invoke("all-imports", {"call": "log", "level": "info", "message": "consent"})
    host.ionwall.approve(asked.value.request.id)
    return Engine(
        host.config,
        invoker=HostInvoker(host),
        repository=GraphRepository(where / "graphs.sqlite3", pod=host.pod),
        history=RunHistory(where / "runs.sqlite3"),
        pod=host.pod,
    )


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in finished if s.name == name]
    assert len(found) == 1, [s.name for s in finished]
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_run_is_one_trace_from_run_to_node_to_import(
    host: Host, publish_guest: GuestPublisher, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    engine = traced_engine(host, publish_guest, tmp_path)
    spans.clear()  # the consent call above ran outside any run
    graph = tmp_path / "traced.yaml"
    graph.write_text(TWO_NODES)
    try:
        result = await EngineRunner(engine).run(str(graph), {})
    finally:
        engine.close()
    assert result.overall_status == "success", result.error_details
    assert result.output["peeked"]["error"]["case"] == "denied"

    finished = spans.get_finished_spans()
    run = by_name(finished, "run traced")
    say, peek = by_name(finished, "node say"), by_name(finished, "node peek")
    logged, peeked = by_name(finished, "import log_write"), by_name(finished, "import config_get")
    # One trace, linked parent to child: run -> node (guest call) -> import,
    # although the guest calls ran on the engine's worker threads.
    assert {s.context.trace_id for s in finished} == {run.context.trace_id}
    assert parent_of(run) is None
    assert parent_of(say) == parent_of(peek) == run.context.span_id
    assert parent_of(logged) == say.context.span_id
    assert parent_of(peeked) == peek.context.span_id

    assert run.attributes is not None and say.attributes is not None
    assert run.attributes["ionflux.run_id"] == result.execution_id
    assert run.attributes["ionflux.status"] == "success"
    assert say.attributes["ionflux.node"] == "say"
    assert say.attributes["ionflux.run_id"] == result.execution_id
    assert say.attributes["ionflux.transform"] == "all-imports@0.1.0"
    assert str(say.attributes["ionflux.module_cid"]).startswith("bafk")
    assert say.attributes["ionflux.outcome"] == "success"
    assert int(str(say.attributes["ionflux.fuel_used"])) > 0
    # The scope and the gate's decision, on each import's span.
    assert logged.attributes == {
        "ionflux.scope": "emit_log:info",
        "ionflux.gate.decision": "allow",
        "ionflux.gate.reason": logged.attributes["ionflux.gate.reason"],  # type: ignore[index]
    }
    assert peeked.attributes is not None
    assert peeked.attributes["ionflux.scope"] == "read_config:secret"
    assert peeked.attributes["ionflux.gate.decision"] == "deny"
    assert peeked.attributes["ionflux.import.error"] == "denied"


async def test_a_failed_guest_call_is_an_error_span_with_its_kind(
    host: Host, publish_guest: GuestPublisher, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    engine = traced_engine(host, publish_guest, tmp_path)
    publish_guest(host, "trap")
    graph = tmp_path / "trapped.yaml"
    graph.write_text("name: trapped\ngraph:\n  - id: boom\n    transform: trap\n    inputs: {}\n")
    try:
        result = await EngineRunner(engine).run(str(graph), {})
    finally:
        engine.close()
    assert result.overall_status == "failure"
    boom = by_name(spans.get_finished_spans(), "node boom")
    assert boom.attributes is not None
    assert boom.attributes["ionflux.outcome"] == "trap"  # the error's kind
    assert not boom.status.is_ok


async def test_a_subgraphs_guest_calls_stay_in_the_parents_trace(
    host: Host, publish_guest: GuestPublisher, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    engine = traced_engine(host, publish_guest, tmp_path)
    child = tmp_path / "child.yaml"
    child.write_text(
        "name: child\nversion: 1.0.0\ngraph:\n"
        "  - {id: inner, transform: all-imports, inputs: {call: log, level: info, message: hi}}\n"
    )
    engine.deploy(child, "m")
    parent = tmp_path / "parent.yaml"
    parent.write_text("name: parent\ngraph:\n  - {id: sub, subgraph: child, inputs: {}}\n")
    spans.clear()
    try:
        result = await EngineRunner(engine).run(str(parent), {})
    finally:
        engine.close()
    assert result.overall_status == "success", result.error_details
    finished = spans.get_finished_spans()
    run, inner = by_name(finished, "run parent"), by_name(finished, "node inner")
    assert inner.context.trace_id == run.context.trace_id
    assert parent_of(inner) == run.context.span_id
    assert inner.attributes is not None
    assert inner.attributes["ionflux.run_id"] == result.step("sub").child_run_id
    assert parent_of(by_name(finished, "import log_write")) == inner.context.span_id


def test_without_an_endpoint_tracing_stays_off() -> None:
    assert _tracing.tracer is None
    assert _tracing.setup(TracingSettings()) is False
    assert _tracing.tracer is None
    with _tracing.run_span("r", "g") as span:
        assert span is None
    assert _tracing.outgoing() is None
    assert _tracing.outgoing({"a": "b"}) == {"a": "b"}


def test_an_endpoint_sets_up_the_otlp_exporter() -> None:
    try:
        settings = TracingSettings(otlp_endpoint="http://127.0.0.1:9/v1/traces", sample_ratio=0.25)
        assert _tracing.setup(settings)
        assert _tracing.tracer is not None
        assert "TraceIdRatioBased{0.25}" in _tracing._provider.sampler.get_description()
    finally:
        _tracing.shutdown()  # nothing was recorded: nothing to send
    assert _tracing.tracer is None


# --- across hosts ------------------------------------------------------------------

HOOK = "/webhooks/invoke/relay"
TOPIC = "tracing.relay.run"


@pytest.fixture
async def running(
    tmp_path: Path, nats_server: NatsServer, built: Path
) -> AsyncIterator[RunningHost]:
    """A serving host with the graph ``relay`` (two echo nodes) behind a webhook
    and a NATS trigger, both open (no token)."""
    config = make_config(tmp_path / "data")
    config = on_nats(config, nats_server)
    host = await start_host(config)
    publish_wasm(host.host, "echo", TESTING / "echo.wasm")
    await deploy(
        host,
        chain_graph(
            "relay",
            nodes=2,
            triggers=[
                f"{{type: webhook, config: {{path: {HOOK}, method: POST, "
                "authentication_method: none}}",
                f"{{type: event_driven, config: {{event_source: NATS, topic: {TOPIC}, "
                "authentication_method: none}}",
            ],
        ),
    )
    yield host
    await host.aclose(5)


async def completion(nats_server: NatsServer, subject: str) -> Any:
    nc = await nats.connect(nats_server.url, token=nats_server.credentials.token)
    return nc, await nc.subscribe(subject)


async def test_a_webhook_call_continues_the_callers_trace_and_passes_it_on(
    running: RunningHost, nats_server: NatsServer, spans: InMemorySpanExporter
) -> None:
    subject = running.triggers.completion_subject("relay")
    assert subject is not None
    nc, events = await completion(nats_server, subject)
    try:
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as http:
            r = await http.post(HOOK, json={"text": "hi"}, headers={"traceparent": TRACEPARENT})
        assert r.status_code == 200, r.text
        event = await events.next_msg(timeout=10)
    finally:
        await nc.close()
    finished = spans.get_finished_spans()
    hook = by_name(finished, f"webhook {HOOK}")
    run = by_name(finished, "run relay")
    assert hook.context.trace_id == int(TRACE_ID, 16)
    assert parent_of(hook) == int(PARENT_ID, 16)
    assert parent_of(run) == hook.context.span_id
    assert parent_of(by_name(finished, "node n0")) == run.context.span_id
    # The completion event carries the trace on to whoever consumes it.
    assert event.headers is not None
    assert event.headers["traceparent"].split("-")[1] == TRACE_ID


async def test_a_nats_event_continues_the_publishers_trace(
    running: RunningHost, nats_server: NatsServer, spans: InMemorySpanExporter
) -> None:
    nc = await nats.connect(nats_server.url, token=nats_server.credentials.token)
    try:
        answer = await nc.request(
            TOPIC, b'{"text": "hi"}', timeout=10, headers={"traceparent": TRACEPARENT}
        )
    finally:
        await nc.close()
    assert answer.headers is not None
    assert answer.headers["traceparent"].split("-")[1] == TRACE_ID  # the reply too
    # The trigger's span ends just after its reply is sent.
    assert await asyncio.to_thread(ended.wait, f"nats {TOPIC}")
    finished = spans.get_finished_spans()
    message = by_name(finished, f"nats {TOPIC}")
    run = by_name(finished, "run relay")
    assert parent_of(message) == int(PARENT_ID, 16)
    assert message.context.trace_id == int(TRACE_ID, 16)
    assert parent_of(run) == message.context.span_id
