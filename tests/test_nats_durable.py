"""Durable (JetStream) triggers against a real nats-server: a flood is bounded and
nothing is lost, a message id runs once, a host killed mid-run hands the message on."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from conftest import TESTING, make_config
from ionflux.config import Config
from ionflux.graph import Engine, RunHistory
from ionflux.host import Host
from ionflux.http import RunningHost, start_host
from ionflux.http.testing import UpProcess, chain_graph, deploy, publish_wasm
from ionflux.triggers import NatsServer
from ionflux.triggers._jetstream import consumer_name, stream_name
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo, StreamConfig


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url, **nats_server.connect_options())
    yield nc
    await nc.close()


def host_config(data_dir: Path, server: NatsServer, *, concurrency: int = 4) -> Config:
    config = make_config(data_dir)
    return config.model_copy(
        update={
            "nats": config.nats.model_copy(
                update={"url": server.url, "token": server.credentials.token}
            ),
            "graph": config.graph.model_copy(update={"concurrency": concurrency}),
        }
    )


def durable(subject: str, ack_wait: str = "30s", auth: str = "none") -> str:
    """A durable trigger; open (``authentication_method: none``) unless ``auth``: the
    hosts of a test have an IONWALL each, and a token one issued the other refuses."""
    return (
        f"{{type: event_driven, config: {{topic: {subject}, delivery: jetstream, "
        f"ack_wait: {ack_wait}, authentication_method: {auth}}}}}"
    )


async def serving(data_dir: Path, server: NatsServer, concurrency: int = 4) -> RunningHost:
    running = await start_host(
        host_config(data_dir, server, concurrency=concurrency), serve_http=False
    )
    publish_wasm(running.host, "echo", TESTING / "echo.wasm")
    return running


async def collect(sub: nats.aio.subscription.Subscription, n: int, timeout: float) -> list[dict]:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        try:
            msg = await sub.next_msg(timeout=max(0.05, deadline - time.monotonic()))
        except nats.errors.TimeoutError:
            break
        out.append(json.loads(msg.data))
    return out


async def settled(js: JetStreamContext, stream: str, consumer: str) -> ConsumerInfo:
    """Waits until the consumer has nothing left to deliver and nothing unacked: from
    then on no message of the stream can run (again). The timeout only stops a hang."""
    deadline = time.monotonic() + 30
    while True:
        info: ConsumerInfo = await js.consumer_info(stream, consumer)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return info
        assert time.monotonic() < deadline, info
        await asyncio.sleep(0.05)


async def test_a_flood_waits_in_the_stream_and_every_message_runs_once(
    tmp_path: Path, nats_server: NatsServer, client: Client, built: Path
) -> None:
    subject = f"d.{uuid.uuid4().hex[:10]}"
    host = await serving(tmp_path / "host", nats_server, concurrency=2)
    try:
        trigger = durable(subject, auth="ionwall_jwt")
        await deploy(host, chain_graph("dflood", nodes=1, triggers=[trigger]))
        completions = await client.subscribe(f"{subject}.completion")
        js = client.jetstream()
        token = host.ionwall.issue_token(["execute_graph:dflood"]).token
        for i in range(150):
            await js.publish(
                subject,
                json.dumps({"text": str(i)}).encode(),
                headers={"Nats-Msg-Id": f"m{i}", "Authorization": f"Bearer {token}"},
            )
        # the same id again, within the duplicate window: JetStream drops it
        ack = await js.publish(subject, b'{"text": "0"}', headers={"Nats-Msg-Id": "m0"})
        assert ack.duplicate
        events = await collect(completions, 150, timeout=60)
        assert sorted(e["msg_id"] for e in events) == sorted(f"m{i}" for i in range(150))
        assert all(e["overall_status"] == "success" for e in events)
        assert host.triggers.dispatcher.slots.high_water == 2
        # Everything delivered and acked: nothing more can run. The history is the
        # record that nothing ran twice.
        await settled(js, stream_name(subject), consumer_name("dflood"))
        runs = host.engine.history.list_runs(graph="dflood", limit=1000)
        assert len(runs) == 150
    finally:
        await host.aclose(5)


async def test_a_processed_message_id_is_not_run_again_after_the_window(
    tmp_path: Path, nats_server: NatsServer, client: Client, built: Path
) -> None:
    subject = f"d.{uuid.uuid4().hex[:10]}"
    js = client.jetstream()
    # A stream with a short duplicate window (the host uses the stream it finds).
    await js.add_stream(
        StreamConfig(name=stream_name(subject), subjects=[subject], duplicate_window=0.5)
    )
    host = await serving(tmp_path / "host", nats_server)
    try:
        await deploy(host, chain_graph("donce", nodes=1, triggers=[durable(subject)]))
        completions = await client.subscribe(f"{subject}.completion")
        await js.publish(subject, b'{"text": "a"}', headers={"Nats-Msg-Id": "order-1"})
        assert len(await collect(completions, 1, timeout=10)) == 1
        # Publish the same id again until the stream takes it: inside the window
        # it drops each copy (nothing runs), past it the stream stores it.
        deadline = time.monotonic() + 30
        while True:
            ack = await js.publish(subject, b'{"text": "a"}', headers={"Nats-Msg-Id": "order-1"})
            if not ack.duplicate:
                break
            assert time.monotonic() < deadline, "the duplicate window never ended"
            await asyncio.sleep(0.05)
        await js.publish(subject, b"not json", headers={"Nats-Msg-Id": "order-2"})
        events = await collect(completions, 1, timeout=10)
        assert [e["msg_id"] for e in events] == ["order-2"]  # order-1 did not run again
        assert events[0]["error_details"][0]["kind"] == "invalid_input"
        # Both delivered and acked (order-1 before order-2): the history and the
        # duplicates counter say order-1 was recognised, not run.
        await settled(js, stream_name(subject), consumer_name("donce"))
        assert len(host.engine.history.list_runs(graph="donce")) == 1
        metrics = host.triggers.metrics.render().decode()
        assert 'ionflux_durable_duplicates_total{graph="donce"} 1.0' in metrics
    finally:
        await host.aclose(5)


async def test_a_message_without_a_valid_token_is_refused_once_and_terminated(
    tmp_path: Path, nats_server: NatsServer, client: Client, built: Path
) -> None:
    subject = f"d.{uuid.uuid4().hex[:10]}"
    host = await serving(tmp_path / "host", nats_server)
    try:
        # No authentication_method: a durable trigger needs a token by default.
        trigger = f"{{type: event_driven, config: {{topic: {subject}, delivery: jetstream}}}}"
        await deploy(host, chain_graph("dauth", nodes=1, triggers=[trigger]))
        completions = await client.subscribe(f"{subject}.completion")
        js = client.jetstream()
        wrong = host.ionwall.issue_token(["execute_graph:other"]).token
        await js.publish(subject, b'{"text": "a"}', headers={"Nats-Msg-Id": "no-token"})
        await js.publish(
            subject,
            b'{"text": "b"}',
            headers={"Nats-Msg-Id": "bad-token", "Authorization": "Bearer forged"},
        )
        await js.publish(
            subject,
            b'{"text": "c"}',
            headers={"Nats-Msg-Id": "wrong-scope", "Authorization": f"Bearer {wrong}"},
        )
        good = host.ionwall.issue_token(["execute_graph:dauth"]).token
        await js.publish(
            subject,
            b'{"text": "d"}',
            headers={"Nats-Msg-Id": "good", "Authorization": f"Bearer {good}"},
        )
        events = await collect(completions, 4, timeout=10)
        kinds = {e["msg_id"]: (e["error_details"] or [{}])[0].get("kind") for e in events}
        assert kinds == {
            "no-token": "unauthorized",
            "bad-token": "token_invalid",
            "wrong-scope": "permission_denied",
            "good": None,
        }, events
        runs = host.engine.history.list_runs(graph="dauth")
        assert [r.trigger_details["msg_id"] for r in runs] == ["good"]  # type: ignore[index]
        # Terminated, not left for redelivery: nothing stays pending (the last run's
        # ack follows its completion event), so nothing can come again.
        info = await settled(js, stream_name(subject), consumer_name("dauth"))
        assert info.num_redelivered == 0
    finally:
        await host.aclose(5)


def prepare(data_dir: Path, server: NatsServer, text: str) -> None:
    """A data directory with the transforms published and ``text`` deployed."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # Fuel enough for spin to run into its 1.5 s deadline: a slow run.
    (data_dir / "ionflux.yaml").write_text(
        f"limits: {{fuel: 1000000000000}}\nnats: {{token: {server.credentials.token}}}\n"
    )
    config = host_config(data_dir, server)
    host = Host(config)
    publish_wasm(host, "echo", TESTING / "echo.wasm")
    publish_wasm(host, "spin", TESTING / "spin.wasm", limits={"timeout_ms": 1500})
    engine = Engine.for_host(host)
    plan = engine.validate(text)
    engine.repository.deploy(text, plan.name, plan.graph.version, "test")
    engine.close()
    host.close()


async def test_a_host_killed_mid_run_hands_the_message_to_another_once(
    tmp_path: Path, nats_server: NatsServer, client: Client, built: Path
) -> None:
    subject = f"d.{uuid.uuid4().hex[:10]}"
    text = chain_graph("dslow", nodes=1, slow="spin", triggers=[durable(subject, "2s")])
    prepare(tmp_path / "a", nats_server, text)
    prepare(tmp_path / "b", nats_server, text)
    completions = await client.subscribe(f"{subject}.completion")
    a = UpProcess(tmp_path / "a", nats_url=nats_server.url).start()
    b = UpProcess(tmp_path / "b", nats_url=nats_server.url)
    try:
        js = client.jetstream()
        await js.publish(subject, b'{"text": "once"}', headers={"Nats-Msg-Id": "job-1"})
        stream, consumer = stream_name(subject), consumer_name("dslow")
        for _ in range(600):  # a generous bound: it only stops a hang
            info = await js.consumer_info(stream, consumer)
            if info.num_ack_pending == 1:
                break
            await asyncio.sleep(0.05)
        assert info.num_ack_pending == 1  # host A has it
        # Host A has started the run (its record says so) and is inside the 1.5 s
        # spin: kill it there.
        runs_a = RunHistory(tmp_path / "a" / "runs.sqlite3", recover=False)
        try:
            for _ in range(600):
                if runs_a.list_runs(graph="dslow"):
                    break
                await asyncio.sleep(0.05)
        finally:
            runs_a.close()
        a.kill()
        b.start()
        events = await collect(completions, 1, timeout=30)
        assert len(events) == 1, events
        assert events[0]["msg_id"] == "job-1"
        assert events[0]["overall_status"] in ("success", "partial_success_with_errors")
        # B's ack settles the message: no delivery (so no second run) can follow.
        await settled(js, stream, consumer)
        runs_a = RunHistory(tmp_path / "a" / "runs.sqlite3", recover=False)
        runs_b = RunHistory(tmp_path / "b" / "runs.sqlite3", recover=False)
        try:
            assert [r.status for r in runs_a.list_runs(graph="dslow")] == ["running"]  # died
            assert [r.run_id for r in runs_b.list_runs(graph="dslow")] == [
                events[0]["execution_id"]
            ]
        finally:
            runs_a.close()
            runs_b.close()
    finally:
        a.kill()
        b.terminate(15)


async def test_durable_messages_survive_a_nats_server_restart_under_load(
    tmp_path: Path, built: Path
) -> None:
    server = NatsServer(tmp_path / "nats").start()
    subject = f"d.{uuid.uuid4().hex[:10]}"
    host = await serving(tmp_path / "host", server, concurrency=2)
    nc = await nats.connect(
        server.url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,  # type: ignore[arg-type]
        **server.connect_options(),
    )
    try:
        await deploy(host, chain_graph("drestart", nodes=1, triggers=[durable(subject, "3s")]))
        completions = await nc.subscribe(f"{subject}.completion")
        js = nc.jetstream()
        for i in range(60):
            await js.publish(
                subject, json.dumps({"text": str(i)}).encode(), headers={"Nats-Msg-Id": f"r{i}"}
            )
        port = server.port
        server.stop()  # mid-flood: some runs done, some in flight, the rest in the stream
        assert host.triggers.durable is not None
        bus = host.triggers.durable.nc
        for _ in range(600):  # the host has seen the server go before it comes back
            if not bus.is_connected:
                break
            await asyncio.sleep(0.05)
        assert not bus.is_connected
        server = NatsServer(tmp_path / "nats", port=port).start()
        for i in range(60, 80):
            for _ in range(100):
                try:
                    await js.publish(
                        subject,
                        json.dumps({"text": str(i)}).encode(),
                        headers={"Nats-Msg-Id": f"r{i}"},
                        timeout=1,
                    )
                    break
                except (nats.errors.Error, TimeoutError):
                    await asyncio.sleep(0.1)
        # Completion events published while the server was down may be lost (core
        # NATS); the run history is the record: every id ran, none twice.
        for _ in range(200):
            ran = host.engine.history.list_runs(graph="drestart", limit=1000)
            if len(ran) >= 80:
                break
            await asyncio.sleep(0.1)
        ids = sorted(r.trigger_details["msg_id"] for r in ran)  # type: ignore[index]
        assert ids == sorted(f"r{i}" for i in range(80))
        assert all(r.status == "success" for r in ran)
        del completions
    finally:
        await nc.close()
        await host.aclose(5)
        server.stop()


@pytest.mark.soak
@pytest.mark.timeout(600)
async def test_soak_two_hosts_a_long_flood_and_two_restarts_every_id_once(
    tmp_path: Path, built: Path
) -> None:
    server = NatsServer(tmp_path / "nats").start()
    subject = f"d.{uuid.uuid4().hex[:10]}"
    text = chain_graph("dsoak", nodes=3, triggers=[durable(subject, "5s")])
    a = await serving(tmp_path / "a", server, concurrency=4)
    b = await serving(tmp_path / "b", server, concurrency=4)
    nc = await nats.connect(
        server.url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,  # type: ignore[arg-type]
        **server.connect_options(),
    )
    total = 5000
    try:
        await deploy(a, text)
        await deploy(b, text)
        js = nc.jetstream()
        for i in range(total):
            if i in (total // 3, 2 * total // 3):
                port = server.port
                server.stop()
                server = NatsServer(tmp_path / "nats", port=port).start()
            for _ in range(100):
                try:
                    await js.publish(
                        subject,
                        json.dumps({"text": str(i)}).encode(),
                        headers={"Nats-Msg-Id": f"s{i}"},
                        timeout=1,
                    )
                    break
                except (nats.errors.Error, TimeoutError):
                    await asyncio.sleep(0.1)
        ran: list = []
        for _ in range(3000):
            ran = a.engine.history.list_runs(
                graph="dsoak", limit=total * 2
            ) + b.engine.history.list_runs(graph="dsoak", limit=total * 2)
            if len({r.trigger_details["msg_id"] for r in ran}) >= total:  # type: ignore[index]
                break
            await asyncio.sleep(0.1)
        # Every message delivered and acked: no stray redelivery can follow.
        await settled(js, stream_name(subject), consumer_name("dsoak"))
        ran = a.engine.history.list_runs(graph="dsoak", limit=total * 2)
        ran += b.engine.history.list_runs(graph="dsoak", limit=total * 2)
        ids = [r.trigger_details["msg_id"] for r in ran]  # type: ignore[index]
        from collections import Counter

        twice = [k for k, v in Counter(ids).items() if v > 1]
        missing = sorted({f"s{i}" for i in range(total)} - set(ids))
        assert not twice and not missing, (len(ids), twice[:10], missing[:10])
    finally:
        await nc.close()
        await a.aclose(10)
        await b.aclose(10)
        server.stop()
