# ruff: noqa: F811  (pytest fixtures imported from serving, taken as parameters)
"""Attacks through the Extism host functions (``extism:host/user`` ``ionflux_*``)
against a serving host: an Extism plugin gets exactly what a component gets
through the same imports, no more.

Each attack is a graph of one node running an inline-WAT Extism plugin (see
``tests/test_runtime_extism_imports.py``: ``run`` passes its input to one host
function, ``times`` times) under a manifest asking for broad scopes, with the
graph's consent approved: the grant allows what a careless owner could
approve, and the host must still refuse.

- A granted name reaches no internal address (the host's own API): ``denied``,
  audited.
- No grant publishes a fake completion event; an ordinary publish reaches a
  real NATS subscriber.
- A flood of host-function calls stops at the per-call import budget
  (``ImportBudgetExceeded``), the audit log grows by at most the budget.
- A forged kernel block header (a length past the plugin's memory) is an
  ``invalid`` answer, not a read of host memory (the SDK's own ``input_string``
  faults the host process there).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from ionflux.http import RunningHost
from ionflux.http.testing import consent_to
from ionflux.manifest import Manifest, ModuleRef
from ionflux.store import cid_for_bytes
from serving import http, nats_server, running, still_serves, token  # noqa: F401
from test_runtime_extism_imports import caller

SCOPES = ["emit_log:*", "read_config:*", "publish_nats_topic:**", "http_fetch:**"]


async def attack(
    running: RunningHost,
    http: httpx.AsyncClient,
    name: str,
    plugin: bytes,
    inputs: dict[str, Any],
) -> dict[str, Any]:
    """Deploys graph ``name`` (one node running ``plugin`` on ``inputs``),
    approves its consent, runs it over the API and returns the run's answer."""
    manifest = Manifest.model_validate(
        {
            "name": f"{name}-plugin",
            "version": "0.1.0",
            "abi": "extism",
            "module": ModuleRef(cid=cid_for_bytes(plugin)),
            "scopes": SCOPES,
        }
    )
    running.host.publish_bytes(manifest, plugin)
    engine = running.engine
    text = "\n".join(
        [
            f"name: {name}",
            'version: "1.0.0"',
            "triggers: [{type: manual}]",
            "graph:",
            "  - id: attack",
            f"    transform: {name}-plugin",
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


def answer_of(run: dict[str, Any]) -> dict[str, Any]:
    """What the host function answered (the plugin returns it as its output)."""
    assert run["overall_status"] == "success", run
    answer: dict[str, Any] = run["output"]
    return answer


def audit_size(running: RunningHost) -> int:
    return (running.config.data_dir / "ionwall" / "audit.jsonl").stat().st_size


async def test_an_extism_plugin_gets_no_more_than_a_component(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    # The host's own API through a granted name: refused at the address, audited.
    port = httpx.URL(running.url).port
    fetch = caller("ionflux_http_fetch")
    url = f"http://localhost:{port}/healthz"
    error = answer_of(await attack(running, http, "ext-own-api", fetch, {"url": url}))["error"]
    assert error["case"] == "denied", error
    assert "127.0.0.1" in error["message"] and "loopback" in error["message"]
    denials = [x for x in running.ionwall.audit_tail(20) if x.decision == "deny"]
    assert any(x.scope == f"http_fetch:localhost:{port}" for x in denials), denials

    # The bus: a real publish arrives; a fake completion event does not.
    publish = caller("ionflux_bus_publish")
    events = await running.bus.nc.subscribe("ext.attack.out")
    sent = {"subject": "ext.attack.out", "payload": '{"from": "plugin"}'}
    assert answer_of(await attack(running, http, "ext-bus", publish, sent)) == {"ok": None}
    assert (await events.next_msg(timeout=10)).data == b'{"from": "plugin"}'
    await events.unsubscribe()
    subject = running.triggers.completion_subject("digest")
    assert subject is not None
    completions = await running.bus.nc.subscribe(subject)
    fake = json.dumps({"graph": "digest", "overall_status": "success", "execution_id": "fake"})
    forged = {"subject": subject, "payload": fake}
    error = answer_of(await attack(running, http, "ext-forger", publish, forged))["error"]
    assert error["case"] == "denied" and "completion" in error["message"], error

    # A flood of host-function calls: the call fails at the budget.
    limits = running.config.limits
    before = audit_size(running)
    flood = caller("ionflux_config_get", times=1_000_000)
    run = await attack(running, http, "ext-flood", flood, {"key": "k" * 200})
    assert run["overall_status"] == "failure", run
    [detail] = run["error_details"]
    assert detail["kind"] == "import_budget_exceeded", detail
    assert audit_size(running) - before <= limits.max_audit_bytes + 16 * 1024

    # A forged block header: an answer, not a read past the plugin's memory.
    forger = caller("ionflux_config_get", forge_length=4 * 1024 * 1024)
    error = answer_of(await attack(running, http, "ext-header", forger, {"key": "k"}))["error"]
    assert error["case"] == "invalid" and "forged" in error["message"], error

    await still_serves(running, http)  # publishes digest's genuine completion event
    first = json.loads((await completions.next_msg(timeout=10)).data)
    assert first["execution_id"] != "fake" and first["graph"] == "digest"
    await completions.unsubscribe()
