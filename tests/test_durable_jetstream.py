"""Durable messages whose run cannot be recorded are not acked: they come back, and
run once when they can; a run waiting for consent is acked once recorded waiting,
and runs after approval. A real nats-server and
a real serving host; the history's closing write is made to fail by a stand-in
wrapped around the real method (the process-level full-disk test is elsewhere)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from conftest import MANIFESTS
from ionflux.http.testing import approve_pending, chain_graph, deploy
from ionflux.triggers import NatsServer
from ionflux.triggers._jetstream import consumer_name, stream_name
from nats.aio.client import Client
from test_nats_durable import collect, durable, serving, settled


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url, **nats_server.connect_options())
    yield nc
    await nc.close()


async def until(what: Any, describe: str) -> None:
    deadline = time.monotonic() + 60  # stops a hang; never a measure
    while not what():
        assert time.monotonic() < deadline, f"still waiting for {describe}"
        await asyncio.sleep(0.05)


async def until_success(sub: Any, msg_id: str) -> list[dict[str, Any]]:
    """Completion events up to and with the first success of ``msg_id``."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60  # stops a hang
    while not any(e.get("overall_status") == "success" for e in events):
        assert time.monotonic() < deadline, events
        events += await collect(sub, 1, timeout=max(0.1, deadline - time.monotonic()))
    assert all(e["msg_id"] == msg_id for e in events)
    return events


async def test_a_run_the_history_cannot_record_is_nakd_then_runs_once_it_can(
    tmp_path: Path, nats_server: NatsServer, client: Client, built: Path
) -> None:
    subject = f"d.{uuid.uuid4().hex[:10]}"
    host = await serving(tmp_path / "host", nats_server)
    history = host.engine.history
    real_finish = history.finish_run
    refused: list[str] = []
    full = True

    def finish_run(run_id: str, **kwargs: Any) -> bool:  # stand-in: a full disk
        if full:
            refused.append(run_id)
            raise sqlite3.OperationalError("database or disk is full")
        return real_finish(run_id, **kwargs)

    history.finish_run = finish_run  # type: ignore[method-assign]
    try:
        await deploy(host, chain_graph("dfull", nodes=1, triggers=[durable(subject, "30s")]))
        completions = await client.subscribe(f"{subject}.completion")
        js = client.jetstream()
        await js.publish(subject, b'{"text": "keep me"}', headers={"Nats-Msg-Id": "full-1"})
        # Refused twice: nak'd each time (redelivered long before ack_wait's 30 s).
        await until(lambda: len(refused) >= 2, "two deliveries refused")
        assert host.host.health.status()["status"] == "degraded"
        assert "run-history" in host.host.health.status()["components"]
        full = False
        events = await until_success(completions, "full-1")
        # the refusals said so, retryable, with the kind of the error
        assert {e["error_details"][0]["kind"] for e in events[:-1]} == {"run_not_recorded"}
        assert host.host.health.is_ok("run-history")
        stream, consumer = stream_name(subject), consumer_name("dfull")

        async def settled() -> bool:
            info = await js.consumer_info(stream, consumer)
            return info.num_pending == 0 and info.num_ack_pending == 0

        deadline = time.monotonic() + 30
        while not await settled():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        done = [r for r in history.list_runs(graph="dfull") if r.status == "success"]
        assert len(done) == 1 and done[0].run_key is not None
    finally:
        history.finish_run = real_finish  # type: ignore[method-assign]
        await host.aclose()


async def test_a_run_awaiting_consent_is_acked_once_recorded_and_resumes_after_approval(
    tmp_path: Path, nats_server: NatsServer, client: Client, built: Path
) -> None:
    subject = f"d.{uuid.uuid4().hex[:10]}"
    out = f"out{uuid.uuid4().hex[:8]}"
    host = await serving(tmp_path / "host", nats_server)
    try:
        host.host.publish(MANIFESTS / "nats-publish.yaml")
        text = "\n".join(
            [
                "name: dgrant",
                "triggers:",
                f"  - {durable(subject, '30s')}",
                "graph:",
                "  - id: send",
                "    transform: nats-publish",
                f'    inputs: {{subject: "{out}.x", payload: {{n: 1}}}}',
                "",
            ]
        )
        # deploy() approves nothing for scopes it is not given: the grant is missing
        await deploy(host, text)
        sent = await client.subscribe(f"{out}.>")
        completions = await client.subscribe(f"{subject}.completion")
        js = client.jetstream()
        await js.publish(subject, b"{}", headers={"Nats-Msg-Id": "grant-1"})
        first = await collect(completions, 1, timeout=30)
        assert first and first[0]["overall_status"] == "awaiting_approval"
        [error] = first[0]["error_details"]
        assert error["kind"] == "consent_required" and error["consent_id"]
        # Recorded waiting, so the message is acked (not redelivered, not nak'd forever).
        info = await settled(js, stream_name(subject), consumer_name("dgrant"))
        assert info.num_redelivered == 0
        [run] = host.engine.history.list_runs(graph="dgrant")
        assert run.status == "awaiting_approval" and run.consent_id == error["consent_id"]
        assert run.run_key is not None and run.run_key.startswith("jetstream:dgrant.")
        approve_pending(host.ionwall)
        # What the dispatcher's scan does every graph.resume_interval_s, now:
        assert await asyncio.to_thread(host.engine.wake) == [run.run_id]
        host.triggers.dispatcher.nudge(run.run_id)
        msg = await sent.next_msg(timeout=30)
        assert json.loads(msg.data) == {"n": 1}
        await until(
            lambda: host.engine.history.get(run.run_id).status == "success",  # type: ignore[union-attr]
            "the approved run to end",
        )
        assert len(host.engine.history.list_runs(graph="dgrant")) == 1
    finally:
        await host.aclose()
