# ruff: noqa: F811  (pytest fixtures imported from serving, taken as parameters)
"""Attacks through the host imports (issue 11, classes 5 and 6, and the bus
import's reach to completion subjects), against a serving host.

Each attack is a graph of one node running the all-imports test guest under a
manifest that asks for broad scopes (``http_fetch:**``, ``publish_nats_topic:**``,
…), with the graph's consent approved: the grant allows everything a careless
owner could approve, and the host must still refuse.

- A granted name reaches no internal address: ``localhost`` (the host's own
  API), a name pointing at the cloud metadata address or a private network.
  The guest gets ``error.denied`` naming the address class; the audit log has
  the refusal.
- One call cannot make unbounded import calls, audit entries or log bytes: the
  run fails with ``ImportBudgetExceeded`` and the audit log grows by at most
  the budget.
- No grant lets a guest publish a fake completion event (or to reply inboxes,
  JetStream or system subjects): ``error.denied`` naming the subject; the
  first completion event an observer sees afterwards is the genuine one.

The resolver (``ionflux.runtime._egress.resolve``) is the one stand-in: it
points test names at 169.254.169.254 and 10.0.0.1 without touching the system.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from conftest import TESTING
from ionflux.http import RunningHost
from ionflux.http.testing import consent_to
from ionflux.manifest import Manifest, ModuleRef
from ionflux.runtime import _egress
from ionflux.store import cid_for_bytes
from serving import http, nats_server, running, still_serves, token  # noqa: F401

SCOPES = ["emit_log:*", "read_config:*", "publish_nats_topic:**", "http_fetch:**"]


async def attack(
    running: RunningHost, http: httpx.AsyncClient, name: str, inputs: dict[str, Any]
) -> dict[str, Any]:
    """Deploys graph ``name`` (one all-imports node with ``inputs``), approves
    its consent, runs it over the API and returns the run's answer."""
    data = (TESTING / "all-imports.wasm").read_bytes()
    manifest = Manifest.model_validate(
        {
            "name": "attack-imports",
            "version": "0.1.0",
            "abi": "component",
            "module": ModuleRef(cid=cid_for_bytes(data)),
            "scopes": SCOPES,
        }
    )
    running.host.publish_bytes(manifest, data)
    engine = running.engine
    text = "\n".join(
        [
            f"name: {name}",
            'version: "1.0.0"',
            "triggers: [{type: manual}]",
            "graph:",
            "  - id: attack",
            "    transform: attack-imports",
            f"    inputs: {json.dumps(inputs)}",
        ]
    )
    plan = engine.validate(text)
    engine.repository.deploy(text, plan.name, plan.graph.version, "attack")
    consent_to(running.ionwall, engine, name, SCOPES)
    r = await http.post(
        f"/graphs/{name}/runs",
        json={"input": {}},
        headers=token(running, f"execute_graph:{name}"),
    )
    assert r.status_code in (200, 422, 500), r.text
    body: dict[str, Any] = r.json()
    return body


def guest_error(answer: dict[str, Any]) -> dict[str, str]:
    """The import error the guest reported as its output (the run itself succeeds)."""
    assert answer["overall_status"] == "success", answer
    error: dict[str, str] = answer["output"]["error"]
    return error


def audit_size(running: RunningHost) -> int:
    return (running.config.data_dir / "ionwall" / "audit.jsonl").stat().st_size


# --- class 5: a granted host name reaches internal addresses ------------------------


async def test_a_granted_name_cannot_reach_the_hosts_own_api(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    port = httpx.URL(running.url).port
    answer = await attack(
        running, http, "own-api", {"call": "http", "url": f"http://localhost:{port}/healthz"}
    )
    error = guest_error(answer)
    assert error["case"] == "denied"
    assert "127.0.0.1" in error["message"] and "loopback" in error["message"]
    denials = [e for e in running.ionwall.audit_tail(20) if e.decision == "deny"]
    assert any(e.scope == f"http_fetch:localhost:{port}" for e in denials), denials
    await still_serves(running, http)


@pytest.mark.parametrize(
    ("address", "kind"),
    [("169.254.169.254", "link-local"), ("10.0.0.1", "private"), ("::ffff:10.0.0.1", "private")],
)
async def test_a_granted_name_pointing_inside_is_refused(
    running: RunningHost,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    address: str,
    kind: str,
) -> None:
    real = _egress.resolve
    monkeypatch.setattr(
        _egress,
        "resolve",
        lambda host, port: [address] if host == "inside.attack.example" else real(host, port),
    )
    url = "http://inside.attack.example/latest/meta-data/"
    answer = await attack(running, http, "inside", {"call": "http", "url": url})
    error = guest_error(answer)
    assert error["case"] == "denied" and kind in error["message"], error
    await still_serves(running, http)


# --- class 6: import calls have no per-call budget ---------------------------------


async def test_an_import_flood_stops_at_the_call_budget(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    limits = running.config.limits
    before = audit_size(running)
    answer = await attack(
        running, http, "flood", {"call": "config", "key": "k" * 200, "repeat": 1_000_000}
    )
    assert answer["overall_status"] == "failure", answer
    [error] = answer["error_details"]
    assert error["kind"] == "import_budget_exceeded", error
    assert (
        "limits.max_audit_bytes" in error["message"]
        or "limits.max_import_calls" in (error["message"])
    )
    grown = audit_size(running) - before
    # The call's entries within its budget, plus the run's own few (consent, token).
    assert grown <= limits.max_audit_bytes + 16 * 1024, grown
    await still_serves(running, http)


async def test_a_log_flood_stops_at_the_log_budget(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    answer = await attack(
        running,
        http,
        "chatty",
        {"call": "log", "level": "info", "message": "x" * 8000, "repeat": 1_000_000},
    )
    assert answer["overall_status"] == "failure", answer
    [error] = answer["error_details"]
    assert error["kind"] == "import_budget_exceeded"
    assert "limits.max_log_bytes" in error["message"]
    await still_serves(running, http)


# --- the bus import and the host's own subjects ---------------------------------------


async def test_no_grant_publishes_a_fake_completion_event(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    subject = running.triggers.completion_subject("digest")
    assert subject is not None
    events = await running.bus.nc.subscribe(subject)
    fake = json.dumps({"graph": "digest", "overall_status": "success", "execution_id": "fake"})
    answer = await attack(
        running, http, "forger", {"call": "bus", "subject": subject, "payload": fake}
    )
    error = guest_error(answer)
    assert error["case"] == "denied"
    assert f"publish_nats_topic:{subject}" in error["message"] and "completion" in error["message"]
    reserved = ("_INBOX.someone.else", "$JS.API.STREAM.DELETE.x", "x.y.completion")
    for i, subject in enumerate(reserved):
        answer = await attack(
            running, http, f"forger{i}", {"call": "bus", "subject": subject, "payload": "{}"}
        )
        assert guest_error(answer)["case"] == "denied", subject
    await still_serves(running, http)  # publishes digest's genuine completion event
    first = json.loads((await events.next_msg(timeout=10)).data)
    assert first["execution_id"] != "fake" and first["graph"] == "digest"
    await events.unsubscribe()


async def test_a_deployed_graphs_own_completion_topic_is_not_publishable(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    """A graph may name its completion subject (``completion_topic``); once it is
    deployed, no guest may publish there either, whatever its grant."""
    from ionflux.http.testing import chain_graph, deploy

    await deploy(
        running,
        chain_graph(
            "announcer",
            triggers=[
                "{type: event_driven, config: {event_source: NATS, topic: ops.announce, "
                "completion_topic: ops.announced}}"
            ],
        ),
    )
    answer = await attack(
        running, http, "forger", {"call": "bus", "subject": "ops.announced", "payload": "{}"}
    )
    error = guest_error(answer)
    assert error["case"] == "denied"
    assert "ops.announced" in error["message"] and "completion" in error["message"]
    await still_serves(running, http)
