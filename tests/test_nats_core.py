"""Core NATS triggers against a real nats-server: request-reply, completion events,
invalid messages, queue groups across hosts, tokens, backpressure, server restarts,
and the server's own credentials."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from conftest import TESTING, make_config
from ionflux.config import Config
from ionflux.http import RunningHost, start_host
from ionflux.http.testing import chain_graph, deploy, publish_wasm
from ionflux.triggers import BusUnavailable, NatsServer
from ionflux.triggers._nats_server import credentials_for
from nats.aio.client import Client

SEED_FIELDS = ("execution_id", "overall_status", "step_results_summary_cid", "error_details")


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


async def serving(data_dir: Path, server: NatsServer, *, concurrency: int = 4) -> RunningHost:
    running = await start_host(
        host_config(data_dir, server, concurrency=concurrency), serve_http=False
    )
    publish_wasm(running.host, "echo", TESTING / "echo.wasm")
    return running


@pytest.fixture
async def running(
    tmp_path: Path, nats_server: NatsServer, built: Path
) -> AsyncIterator[RunningHost]:
    host = await serving(tmp_path / "host", nats_server)
    yield host
    await host.aclose(5)


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url, **nats_server.connect_options())
    yield nc
    await nc.close()


async def refused(url: str, **credentials: str) -> str | None:
    """The server's refusal of a client connecting with ``credentials``, or None."""
    nc = Client()
    try:
        await nc.connect(url, allow_reconnect=False, connect_timeout=2, **credentials)  # type: ignore[arg-type]
    except nats.errors.Error as exc:
        return str(exc).removeprefix("nats: ").strip("'")
    finally:
        await nc.close()  # a refused client's transport too
    return None


def bearer(running: RunningHost, graph: str) -> dict[str, str]:
    """The header a caller allowed to run ``graph`` sends."""
    token = running.ionwall.issue_token([f"execute_graph:{graph}"]).token
    return {"Authorization": f"Bearer {token}"}


async def request(nc: Client, subject: str, data: bytes, timeout: float, **kw: Any) -> Any:
    """``nc.request``, retried while the server reports no responders.

    A request right after an in-process deploy has, rarely and only when this module
    runs after the HTTP modules, met no responder although the host subscribed and
    flushed before ``deploy`` returned (cause not found yet). No responders means
    nobody received the message, so retrying cannot run anything twice."""
    for _ in range(40):
        try:
            return await nc.request(subject, data, timeout=timeout, **kw)
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"no responders on {subject} for 2 s")


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Polls ``condition`` until it holds; the timeout only stops a hang (the caller's
    assertion then says what did not happen)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)


def topic() -> str:
    return f"t.{uuid.uuid4().hex[:12]}.run"


def nats_trigger(subject: str, **config: str) -> str:
    extra = "".join(f", {k}: {v}" for k, v in config.items())
    return f"{{type: event_driven, config: {{event_source: NATS, topic: {subject}{extra}}}}}"


async def test_request_gets_the_result_and_a_completion_event(
    running: RunningHost, client: Client
) -> None:
    subject = topic()
    await deploy(running, chain_graph("digest", triggers=[nats_trigger(subject)]))
    completions = await client.subscribe(f"{subject}.completion")
    msg = await request(
        client, subject, b'{"text": "hello"}', timeout=10, headers=bearer(running, "digest")
    )
    body = json.loads(msg.data)
    assert msg.headers == {"Ionflux-Status": "200"}
    assert body["overall_status"] == "success", body
    assert body["output"] == {"text": "hello"}
    event = json.loads((await completions.next_msg(timeout=5)).data)
    assert all(key in event for key in SEED_FIELDS)
    assert event["execution_id"] == body["execution_id"]
    assert event["step_results_summary_cid"]
    assert event["error_details"] is None
    record = running.engine.history.get(body["execution_id"])
    assert record is not None and record.status == "success"
    assert record.trigger_type == "event_driven"


async def test_invalid_json_gets_an_error_reply_and_event_and_the_host_goes_on(
    running: RunningHost, client: Client
) -> None:
    subject = topic()
    await deploy(running, chain_graph("digest", triggers=[nats_trigger(subject)]))
    completions = await client.subscribe(f"{subject}.completion")
    auth = bearer(running, "digest")
    msg = await request(client, subject, b'{"text": ', timeout=10, headers=auth)
    body = json.loads(msg.data)
    assert msg.headers == {"Ionflux-Status": "422"}
    assert body["overall_status"] == "failure"
    assert body["error_details"][0]["kind"] == "invalid_input"
    assert body["error_details"][0]["field"] == "(body)"
    event = json.loads((await completions.next_msg(timeout=5)).data)
    assert event["execution_id"] == body["execution_id"]
    # nothing ran, yet the id is of the same kind as a run's (a ULID: sortable with them)
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", body["execution_id"]), body["execution_id"]
    assert event["overall_status"] == "failure"
    # schema violation: refused before a run, the field named
    msg = await request(client, subject, b'{"txt": 1}', timeout=10, headers=auth)
    assert msg.headers == {"Ionflux-Status": "422"}
    assert json.loads(msg.data)["error_details"][0]["field"] == "$.text"
    assert running.engine.history.list_runs(graph="digest") == []
    ok = await request(client, subject, b'{"text": "still here"}', timeout=10, headers=auth)
    assert json.loads(ok.data)["output"] == {"text": "still here"}


async def test_a_queue_group_runs_each_message_once_across_hosts(
    running: RunningHost, client: Client, tmp_path: Path, nats_server: NatsServer
) -> None:
    other = await serving(tmp_path / "other", nats_server)
    try:
        subject = topic()
        # Each host has an IONWALL of its own (a token one issued the other refuses):
        # the open trigger says so explicitly.
        trigger = nats_trigger(subject, authentication_method="none")
        text = chain_graph("spread", nodes=1, triggers=[trigger])
        await deploy(running, text)
        await deploy(other, text)
        completions = await client.subscribe(f"{subject}.completion")
        sent = 0
        for _wave in range(3):  # NATS picks a member at random: waves until both ran some
            replies = await asyncio.gather(
                *(
                    request(client, subject, json.dumps({"text": str(i)}).encode(), timeout=20)
                    for i in range(sent, sent + 40)
                )
            )
            outputs = sorted(int(json.loads(r.data)["output"]["text"]) for r in replies)
            assert outputs == list(range(sent, sent + 40))
            sent += 40
            mine = len(running.engine.history.list_runs(graph="spread", limit=1000))
            theirs = len(other.engine.history.list_runs(graph="spread", limit=1000))
            assert mine + theirs == sent  # each message ran once, on one host
            if mine and theirs:
                break
        assert mine > 0 and theirs > 0, (mine, theirs)
        events = [await completions.next_msg(timeout=5) for _ in range(sent)]
        assert len({json.loads(e.data)["execution_id"] for e in events}) == sent
        with pytest.raises(nats.errors.TimeoutError):
            await completions.next_msg(timeout=0.3)
    finally:
        await other.aclose(5)


async def test_a_subject_needs_a_token_unless_its_graph_opens_it(
    running: RunningHost, client: Client
) -> None:
    subject = topic()
    await deploy(running, chain_graph("guarded", nodes=1, triggers=[nats_trigger(subject)]))
    completions = await client.subscribe(f"{subject}.completion")
    msg = await request(client, subject, b'{"text": "x"}', timeout=10)
    assert msg.headers == {"Ionflux-Status": "401"}
    refused = json.loads(msg.data)
    assert refused["error_details"][0]["kind"] == "unauthorized", refused
    event = json.loads((await completions.next_msg(timeout=5)).data)
    assert (event["execution_id"], event["overall_status"]) == (
        refused["execution_id"],
        "failure",
    )
    # A caller without a token learns nothing of the body: the token is checked first.
    msg = await request(client, subject, b"not json", timeout=10)
    assert msg.headers == {"Ionflux-Status": "401"}
    msg = await request(
        client, subject, b'{"text": "x"}', timeout=10, headers={"Authorization": "Bearer forged"}
    )
    assert msg.headers == {"Ionflux-Status": "401"}
    wrong = running.ionwall.issue_token(["execute_graph:other"]).token
    msg = await request(
        client, subject, b'{"text": "x"}', timeout=10, headers={"Authorization": f"Bearer {wrong}"}
    )
    assert msg.headers == {"Ionflux-Status": "403"}
    assert running.engine.history.list_runs(graph="guarded") == []
    msg = await request(
        client, subject, b'{"text": "x"}', timeout=10, headers=bearer(running, "guarded")
    )
    assert json.loads(msg.data)["overall_status"] == "success"
    open_subject = topic()
    trigger = nats_trigger(open_subject, authentication_method="none")
    await deploy(running, chain_graph("open", nodes=1, triggers=[trigger]))
    msg = await request(client, open_subject, b'{"text": "y"}', timeout=10)
    assert json.loads(msg.data)["output"] == {"text": "y"}


async def test_the_server_the_host_starts_refuses_clients_without_its_token(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats").start()
    try:
        assert await refused(server.url) == "Authorization Violation"
        assert await refused(server.url, token="guessed") == "Authorization Violation"
        token = server.credentials.token
        assert token and len(token) >= 40
        # The URL file (for scripts) holds no secret; the token and the server's
        # configuration that carries it are the owner's alone.
        assert token not in (tmp_path / "nats" / "url").read_text()
        for name in ("token", "server.conf"):
            assert stat.S_IMODE(os.stat(tmp_path / "nats" / name).st_mode) == 0o600
        assert token not in " ".join(Path(f"/proc/{server.pid}/cmdline").read_text().split("\0"))
        nc = await nats.connect(server.url, **server.connect_options())
        await nc.publish("anything", b"x")
        await nc.close()
        # The same data directory keeps its token across restarts (workers, the CLI).
        port = server.port
        server.stop()
        server = NatsServer(tmp_path / "nats", port=port).start()
        assert server.credentials.token == token
    finally:
        server.stop()


async def test_a_flood_is_bounded_by_the_concurrency_limit(
    tmp_path: Path, nats_server: NatsServer, client: Client, built: Path
) -> None:
    host = await serving(tmp_path / "small", nats_server, concurrency=2)
    try:
        subject = topic()
        await deploy(host, chain_graph("flood", triggers=[nats_trigger(subject)]))
        auth = bearer(host, "flood")
        replies = await asyncio.gather(
            *(
                request(
                    client, subject, json.dumps({"text": str(i)}).encode(), timeout=30, headers=auth
                )
                for i in range(120)
            )
        )
        assert all(json.loads(r.data)["overall_status"] == "success" for r in replies)
        assert host.triggers.dispatcher.slots.high_water == 2
        metrics = host.triggers.metrics.render().decode()
        assert 'ionflux_runs_succeeded_total{graph="flood"} 120.0' in metrics
    finally:
        await host.aclose(5)


async def test_the_host_reconnects_after_nats_server_restarts_under_load(
    tmp_path: Path, built: Path
) -> None:
    server = NatsServer(tmp_path / "nats").start()
    host: RunningHost | None = None
    try:
        host = await serving(tmp_path / "host", server)
        subject = topic()
        await deploy(host, chain_graph("sturdy", nodes=1, triggers=[nats_trigger(subject)]))
        auth = bearer(host, "sturdy")
        nc = await nats.connect(
            server.url,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.1,  # type: ignore[arg-type]
            **server.connect_options(),
        )
        results: list[Any] = []

        async def load() -> None:
            i = 0
            while True:
                try:
                    r = await nc.request(
                        subject, json.dumps({"text": str(i)}).encode(), timeout=0.5, headers=auth
                    )
                    results.append(json.loads(r.data)["overall_status"])
                except (nats.errors.Error, TimeoutError):
                    results.append("lost")
                    await asyncio.sleep(0.05)
                i += 1

        loader = asyncio.get_running_loop().create_task(load())
        # Under load: requests are being answered when the server goes.
        await until(lambda: results.count("success") >= 5)
        port = server.port
        server.stop()
        await until(lambda: not host.bus.connected)  # the host has seen it go
        server = NatsServer(tmp_path / "nats", port=port).start()
        before = len(results)
        # Both sides reconnect: answers come again.
        await until(lambda: results[before:].count("success") >= 20, timeout=30)
        loader.cancel()
        assert results[before:].count("success") >= 20, results[before:][-10:]
        assert host.bus.connected
        await nc.close()
    finally:
        if host is not None:
            await host.aclose(5)
        server.stop()


async def test_guests_publish_through_the_host_bus_and_gate_denials_are_counted(
    running: RunningHost, client: Client
) -> None:
    from conftest import MANIFESTS
    from ionflux.http.testing import approve_pending

    running.host.publish(MANIFESTS / "nats-publish.yaml")
    prefix = f"out{uuid.uuid4().hex[:8]}"
    text = "\n".join(
        [
            "name: notify",
            "graph:",
            "  - id: send",
            "    transform: nats-publish",
            '    inputs: {subject: "{{trigger.input_data.subject}}", payload: {n: 1}}',
            "",
        ]
    )
    await deploy(running, text)
    first = await running.engine.run("notify", {"subject": f"{prefix}.a"})
    # No grant yet: a consent request is open and the run waits for it.
    assert first.overall_status == "awaiting_approval"
    approve_pending(running.ionwall, only=[f"publish_nats_topic:{prefix}.*"])
    received = await client.subscribe(f"{prefix}.*")
    await client.flush()
    ok = await running.engine.run("notify", {"subject": f"{prefix}.a"})
    assert ok.overall_status == "success", ok.error_details
    msg = await received.next_msg(timeout=5)
    assert (msg.subject, json.loads(msg.data)) == (f"{prefix}.a", {"n": 1})
    denied = await running.engine.run("notify", {"subject": "elsewhere.b"})
    assert denied.overall_status == "failure"
    metrics = running.triggers.metrics.render().decode()
    assert 'ionflux_gate_denials_total{action="publish_nats_topic",graph="notify"} 1.0' in metrics


async def test_a_host_without_the_servers_credentials_stops_at_start_saying_so(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    config = host_config(tmp_path / "h", nats_server)
    for token in (None, "wrong"):
        wrong = config.model_copy(update={"nats": config.nats.model_copy(update={"token": token})})
        with pytest.raises(BusUnavailable, match="refused this host's credentials"):
            await start_host(wrong, serve_http=False)


def test_credentials_come_from_the_config_or_the_data_directorys_own_server(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    (data / "nats").mkdir(parents=True)
    (data / "nats" / "token").write_text("own-secret\n")
    (data / "nats" / "url").write_text("nats://127.0.0.1:4999\n")
    config = make_config(data)

    def with_nats(**nats_settings: Any) -> Config:
        return config.model_copy(update={"nats": config.nats.model_copy(update=nats_settings)})

    # The host's own server (no nats.url), or a worker given its URL: its token.
    assert credentials_for(config).options() == {"token": "own-secret"}
    assert credentials_for(with_nats(url="nats://127.0.0.1:4999")).token == "own-secret"
    # Another server: only what the configuration says.
    assert not credentials_for(with_nats(url="nats://10.0.0.9:4222"))
    given = with_nats(url="nats://10.0.0.9:4222", user="svc", password="pw")
    assert credentials_for(given).options() == {"user": "svc", "password": "pw"}
    creds = with_nats(url="nats://10.0.0.9:4222", credentials_file=tmp_path / "svc.creds")
    assert credentials_for(creds).options() == {"user_credentials": str(tmp_path / "svc.creds")}
    assert "own-secret" not in repr(credentials_for(config))
