# ruff: noqa: F811  (pytest fixtures imported from serving, taken as parameters)
"""Attacks on the bus (issue 11, class 7), against real nats-servers and a serving host.

- The nats-server the host starts refuses clients without its token: nobody else
  on the machine can run graphs, publish fake ``*.completion`` events or read the
  traffic. Its token stays out of the URL file and off the command line.
- A client that may use the bus (it holds the server's credential) still cannot
  run a graph over a NATS trigger without an IONWALL token for it: no token, a
  forged one, one of another IONWALL, one for another graph: refused with a
  typed reply and a refusal event, nothing runs; the same for a durable
  (JetStream) trigger, whose refused message is terminated, not redelivered.
- A graph that opens its trigger (``authentication_method: none``) runs for anyone
  on the bus: the opt-out is explicit.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
from conftest import make_config
from ionflux.http import RunningHost, start_host
from ionflux.http.testing import chain_graph, deploy
from ionflux.triggers import NatsServer
from ionflux.triggers._jetstream import consumer_name, stream_name
from nats.aio.client import Client
from serving import http, nats_server, running, still_serves, token  # noqa: F401

from ionwall import Ionwall


async def refusal(url: str, **credentials: str) -> str | None:
    """The server's refusal of a client connecting with ``credentials``, or None."""
    nc = Client()
    try:
        await nc.connect(url, allow_reconnect=False, connect_timeout=2, **credentials)  # type: ignore[arg-type]
    except nats.errors.Error as exc:
        return str(exc).removeprefix("nats: ").strip("'")
    finally:
        await nc.close()
    return None


async def bus_client(server: NatsServer) -> Client:
    """A client holding the server's credential (another service on the bus)."""
    return await nats.connect(server.url, **server.connect_options())


def nats_trigger(subject: str, extra: str = "") -> str:
    return f"{{type: event_driven, config: {{topic: {subject}{extra}}}}}"


async def ask(nc: Client, subject: str, body: bytes, **kw: Any) -> tuple[str, dict[str, Any]]:
    msg = await nc.request(subject, body, timeout=10, **kw)
    return (msg.headers or {}).get("Ionflux-Status", ""), json.loads(msg.data)


async def test_the_host_started_server_refuses_anonymous_clients(
    tmp_path: Path, running: RunningHost, http: httpx.AsyncClient
) -> None:
    config = make_config(tmp_path / "own")  # no nats.url: the host starts its own server
    own = await start_host(config, serve_http=False)
    try:
        assert own.nats_server is not None
        url = own.nats_url
        assert await refusal(url) == "Authorization Violation"
        assert await refusal(url, token="guessed") == "Authorization Violation"
        assert await refusal(url, user="ionflux", password="ionflux") == "Authorization Violation"
        # Without a connection there is no fake completion event and no reading of
        # traffic: every publish and subscribe needs the host's credential.
        store = tmp_path / "own" / "nats"
        secret = own.nats_server.credentials.token
        assert secret is not None
        assert secret not in (store / "url").read_text()
        assert stat.S_IMODE(os.stat(store / "token").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(store / "server.conf").st_mode) == 0o600
        cmdline = Path(f"/proc/{own.nats_server.pid}/cmdline").read_text()
        assert secret not in cmdline
        # The host itself is connected with it.
        assert own.bus.connected
    finally:
        await own.aclose(5)
    await still_serves(running, http)


async def test_a_nats_trigger_without_a_valid_ionwall_token_runs_nothing(
    tmp_path: Path, running: RunningHost, http: httpx.AsyncClient, nats_server: NatsServer
) -> None:
    subject = f"atk.{uuid.uuid4().hex[:10]}.run"
    await deploy(running, chain_graph("guarded", nodes=1, triggers=[nats_trigger(subject)]))
    nc = await bus_client(nats_server)
    try:
        completions = await nc.subscribe(f"{subject}.completion")
        with Ionwall(tmp_path / "other-wall") as other:
            foreign = other.issue_token(["execute_graph:guarded"]).token
        wrong_graph = running.ionwall.issue_token(["execute_graph:digest"]).token
        attempts = {
            "missing": {},
            "not bearer": {"Authorization": "Basic Z3Vlc3M6Z3Vlc3M="},
            "forged": {"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."},
            "another ionwall's": {"Authorization": f"Bearer {foreign}"},
            "another graph's": {"Authorization": f"Bearer {wrong_graph}"},
        }
        seen: dict[str, tuple[str, str]] = {}
        for name, headers in attempts.items():
            status, body = await ask(nc, subject, b'{"text": "x"}', headers=headers or None)
            seen[name] = (status, body["error_details"][0]["kind"])
            assert body["overall_status"] == "failure" and body["output"] is None
            event = json.loads((await completions.next_msg(timeout=5)).data)
            assert event["execution_id"] == body["execution_id"]  # the refusal's record
        assert seen == {
            "missing": ("401", "unauthorized"),
            "not bearer": ("401", "unauthorized"),
            "forged": ("401", "token_invalid"),
            "another ionwall's": ("401", "token_invalid"),
            "another graph's": ("403", "permission_denied"),
        }
        assert running.engine.history.list_runs(graph="guarded") == []
        metrics = running.triggers.metrics.render().decode()
        assert 'ionflux_runs_rejected_total{graph="guarded",reason="unauthorized"} 2.0' in metrics
        # The caller with a token for the graph runs it.
        good = token(running, "execute_graph:guarded")
        status, body = await ask(nc, subject, b'{"text": "ok"}', headers=good)
        assert (status, body["output"]) == ("200", {"text": "ok"})
    finally:
        await nc.close()
    await still_serves(running, http)


async def test_a_graph_that_opens_its_trigger_explicitly_runs_without_a_token(
    running: RunningHost, http: httpx.AsyncClient, nats_server: NatsServer
) -> None:
    subject = f"atk.{uuid.uuid4().hex[:10]}.open"
    trigger = nats_trigger(subject, ", authentication_method: none")
    await deploy(running, chain_graph("opened", nodes=1, triggers=[trigger]))
    nc = await bus_client(nats_server)
    try:
        status, body = await ask(nc, subject, b'{"text": "anyone"}')
        assert (status, body["output"]) == ("200", {"text": "anyone"})
    finally:
        await nc.close()
    await still_serves(running, http)


async def test_a_durable_trigger_terminates_messages_without_a_token(
    running: RunningHost, http: httpx.AsyncClient, nats_server: NatsServer
) -> None:
    subject = f"atk.{uuid.uuid4().hex[:10]}.durable"
    trigger = nats_trigger(subject, ", delivery: jetstream, ack_wait: 1s")
    await deploy(running, chain_graph("dguarded", nodes=1, triggers=[trigger]))
    nc = await bus_client(nats_server)
    try:
        completions = await nc.subscribe(f"{subject}.completion")
        js = nc.jetstream()
        for i in range(20):
            await js.publish(subject, b'{"text": "x"}', headers={"Nats-Msg-Id": f"atk-{i}"})
        await js.publish(
            subject,
            b'{"text": "x"}',
            headers={"Nats-Msg-Id": "forged", "Authorization": "Bearer x"},
        )
        events = [json.loads((await completions.next_msg(timeout=10)).data) for _ in range(21)]
        assert {e["error_details"][0]["kind"] for e in events} == {"unauthorized", "token_invalid"}
        assert running.engine.history.list_runs(graph="dguarded") == []
        with_token = {"Nats-Msg-Id": "good", **token(running, "execute_graph:dguarded")}
        await js.publish(subject, b'{"text": "fine"}', headers=with_token)
        done = json.loads((await completions.next_msg(timeout=10)).data)
        assert (done["msg_id"], done["overall_status"]) == ("good", "success")
        # Terminated once: past ack_wait (1 s) no refused message was handed out again.
        assert await _no_more(completions) is None
        info = await js.consumer_info(stream_name(subject), consumer_name("dguarded"))
        assert info.num_ack_pending == 0 and info.num_redelivered == 0
        assert [
            r.trigger_details["msg_id"] for r in running.engine.history.list_runs(graph="dguarded")
        ] == ["good"]  # type: ignore[index]
    finally:
        await nc.close()
    await still_serves(running, http)


async def _no_more(sub: Any) -> Any:
    """None once a second passes with no further event (no refused message came back)."""
    try:
        return json.loads((await sub.next_msg(timeout=1.5)).data)
    except nats.errors.TimeoutError:
        return None
