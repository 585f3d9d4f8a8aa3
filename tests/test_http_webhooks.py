"""Webhook triggers and the management API against a real uvicorn server and a
real nats-server: tokens (401/403, nothing runs), bodies (422 naming the field),
async runs (202 + status URL), OpenAPI, metrics."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import nats
import pytest
from conftest import BUILD, MANIFESTS, TESTING, make_config, on_nats, serve_digest
from ionflux.http import RunningHost, start_host
from ionflux.http.testing import chain_graph, deploy, publish_wasm
from ionflux.triggers import NatsServer

from ionwall import Ionwall

HOOK = "/webhooks/invoke/digest"


@pytest.fixture
async def running(
    tmp_path: Path, nats_server: NatsServer, built: Path
) -> AsyncIterator[RunningHost]:
    config = make_config(tmp_path / "data")
    config = on_nats(config, nats_server)
    host = await start_host(config)
    await serve_digest(host, HOOK)
    yield host
    await host.aclose(5)


@pytest.fixture
async def http(running: RunningHost) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running.url, timeout=20) as client:
        yield client


def token(running: RunningHost, *scopes: str) -> dict[str, str]:
    grant = running.ionwall.issue_token(list(scopes or ["execute_graph:digest"]))
    return {"Authorization": f"Bearer {grant.token}"}


def runs(running: RunningHost) -> int:
    return len(running.engine.history.list_runs(graph="digest"))


async def test_a_webhook_with_a_token_runs_the_graph(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    r = await http.post(HOOK, json={"text": "hello"}, headers=token(running))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["overall_status"] == "success"
    assert body["output"] == {"text": "hello"}
    assert body["execution_id"] and body["step_results_summary_cid"]
    status = await http.get(f"/runs/{body['execution_id']}", headers=token(running))
    assert status.status_code == 200, status.text
    assert [s["node_id"] for s in status.json()["steps"]] == ["n0", "n1", "n2"]


async def test_bad_tokens_get_401_or_403_and_nothing_runs(
    running: RunningHost, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    body = {"text": "x"}
    missing = await http.post(HOOK, json=body)
    assert missing.status_code == 401
    assert missing.json()["detail"]["kind"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    malformed = await http.post(HOOK, json=body, headers={"Authorization": "Basic abc"})
    assert malformed.status_code == 401
    garbage = await http.post(HOOK, json=body, headers={"Authorization": "Bearer not.a.jwt"})
    assert garbage.status_code == 401
    assert garbage.json()["detail"]["kind"] == "token_invalid"
    with Ionwall(tmp_path / "elsewhere") as other:  # another key: a forged token
        forged = other.issue_token(["execute_graph:digest"]).token
    r = await http.post(HOOK, json=body, headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401
    assert "signature" in r.json()["detail"]["message"]
    past = Ionwall(running.config.data_dir / "ionwall", clock=lambda: time.time() - 7200)
    try:
        expired = past.issue_token(["execute_graph:digest"], timedelta(hours=1)).token
    finally:
        past.close()
    r = await http.post(HOOK, json=body, headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401
    assert r.json()["detail"]["kind"] == "token_expired"
    r = await http.post(HOOK, json=body, headers=token(running, "execute_graph:other"))
    assert r.status_code == 403
    assert r.json()["detail"]["kind"] == "permission_denied"
    assert r.json()["detail"]["scope"] == "execute_graph:digest"
    assert runs(running) == 0


async def test_bad_bodies_get_422_naming_the_field_and_nothing_runs(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    auth = token(running)
    r = await http.post(HOOK, content=b'{"text": ', headers=auth)
    assert r.status_code == 422
    assert r.json()["detail"]["field"] == "(body)"
    r = await http.post(HOOK, json={"txt": "x"}, headers=auth)
    assert r.status_code == 422
    assert r.json()["detail"]["field"] == "$.text"
    r = await http.post(HOOK, json={"text": 7}, headers=auth)
    assert r.status_code == 422
    assert r.json()["detail"]["field"] == "$.text"
    assert "string" in r.json()["detail"]["message"]
    assert runs(running) == 0


async def test_prefer_respond_async_answers_202_with_a_status_url(
    running: RunningHost, http: httpx.AsyncClient, nats_server: NatsServer
) -> None:
    nc = await nats.connect(nats_server.url, **nats_server.connect_options())
    completions = await nc.subscribe("ionflux.graph.digest.completion")
    r = await http.post(
        HOOK, json={"text": "later"}, headers={**token(running), "Prefer": "respond-async"}
    )
    assert r.status_code == 202
    body = r.json()
    assert r.headers["location"] == body["status_url"]
    for _ in range(100):
        status = (await http.get(body["status_url"], headers=token(running))).json()
        if status.get("overall_status") == "success":
            break
        await asyncio.sleep(0.05)
    assert status["overall_status"] == "success"
    assert status["output_preview"] == '{"text":"later"}'
    assert len(status["steps"]) == 3
    event = json.loads((await completions.next_msg(timeout=5)).data)
    assert event["execution_id"] == status["execution_id"]
    await nc.close()


async def test_deploying_over_http_switches_a_webhook_on(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    name = f"g{uuid.uuid4().hex[:8]}"
    path = f"/hooks/{name}"
    text = chain_graph(name, nodes=1, triggers=[f"{{type: webhook, config: {{path: {path}}}}}"])
    r = await http.post("/graphs", json={"graph": text})
    assert r.status_code == 401  # deploying needs a token
    r = await http.post(
        "/graphs",
        json={"graph": text, "message": "v1"},
        headers=token(running, f"manage_agent_lifecycle:{name}"),
    )
    assert r.status_code == 201, r.text
    versions = (
        await http.get(f"/graphs/{name}/versions", headers=token(running, "read_host:graphs"))
    ).json()
    assert [v["message"] for v in versions] == ["v1"]
    r = await http.post(path, json={"text": "new"}, headers=token(running, f"execute_graph:{name}"))
    assert r.status_code == 200 and r.json()["output"] == {"text": "new"}
    spec = (await http.get("/openapi.json", headers=token(running, "read_host:graphs"))).json()
    assert path in spec["paths"] and HOOK in spec["paths"]
    anonymous = (await http.get("/openapi.json")).json()  # the API, not what is deployed
    assert HOOK not in anonymous["paths"] and "/graphs" in anonymous["paths"]
    body = spec["paths"][HOOK]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["text"]  # the graph's input_schema
    for route in (
        "/transforms",
        "/graphs",
        "/graphs/{name}/versions",
        "/graphs/{name}/runs",
        "/runs/{run_id}",
        "/healthz",
        "/metrics",
        "/ionwall/consents",
    ):
        assert route in spec["paths"], route
    clash = chain_graph("clash", nodes=1, triggers=["{type: webhook, config: {path: /healthz}}"])
    r = await http.post(
        "/graphs", json={"graph": clash}, headers=token(running, "manage_agent_lifecycle:*")
    )
    assert r.status_code == 201 and "collides" in r.json()["problem"]
    assert (await http.get("/healthz")).json()["status"] == "ok"  # the host goes on
    bad = await http.post(
        "/graphs",
        json={"graph": "name: x\ngraph: []\n"},
        headers=token(running, "manage_agent_lifecycle:*"),
    )
    assert bad.status_code == 422


async def test_manual_runs_health_and_metrics(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    r = await http.post(
        "/graphs/digest/runs", json={"input": {"text": "m"}}, headers=token(running)
    )
    assert r.status_code == 200 and r.json()["output"] == {"text": "m"}
    r = await http.post("/graphs/digest/runs", json={"input": {}}, headers=token(running))
    assert r.status_code == 422 and r.json()["detail"]["field"] == "$.text"
    assert (await http.get("/healthz")).json()["status"] == "ok"
    transforms = (
        await http.get("/transforms", headers=token(running, "read_host:transforms"))
    ).json()
    assert [t["name"] for t in transforms] == ["echo"]
    # the same summary `ionflux transforms --json` prints
    assert transforms == [running.host.registry.get("echo").summary()]
    manifest = (MANIFESTS / "uppercase.yaml").read_text()
    module = base64.b64encode((BUILD / "uppercase.wasm").read_bytes()).decode()
    r = await http.post("/transforms", json={"manifest": manifest, "module_base64": module})
    assert r.status_code == 401
    r = await http.post(
        "/transforms",
        json={"manifest": manifest, "module_base64": module},
        headers=token(running, "manage_agent_lifecycle:transforms"),
    )
    assert r.status_code == 201 and r.json()["name"] == "uppercase"
    r = await http.post(
        "/transforms",
        json={"manifest": manifest, "module_base64": "AAAA"},
        headers=token(running, "manage_agent_lifecycle:transforms"),
    )
    assert r.status_code == 422 and r.json()["detail"]["kind"] == "cid_mismatch"
    await http.post(HOOK, json={"text": "x"})  # refused: counted
    text = (await http.get("/metrics", headers=token(running, "read_host:metrics"))).text
    assert 'ionflux_runs_started_total{graph="digest",trigger="manual"} 1.0' in text
    assert 'ionflux_runs_succeeded_total{graph="digest"} 1.0' in text
    assert 'ionflux_runs_rejected_total{graph="digest",reason="unauthorized"} 1.0' in text
    assert 'ionflux_step_duration_seconds_count{graph="digest",node="n0"} 1.0' in text
    assert "ionflux_queue_depth 0.0" in text
    assert "ionflux_gate_denials_total" in text or "ionflux_gate_denials" in text


async def test_a_test_host_without_tokens_still_bounds_bodies(
    tmp_path: Path, nats_server: NatsServer, built: Path
) -> None:
    """``require_token=False`` (a test host on loopback): routes take no token,
    but a webhook that asks for one still does, and the body limits hold."""
    config = make_config(tmp_path / "data")
    config = on_nats(config, nats_server, http={"max_body_bytes": 1024})
    host = await start_host(config, require_token=False)
    try:
        publish_wasm(host.host, "echo", TESTING / "echo.wasm")
        await deploy(
            host,
            chain_graph("digest", triggers=[f"{{type: webhook, config: {{path: {HOOK}}}}}"]),
        )
        async with httpx.AsyncClient(base_url=host.url, timeout=20) as http:
            for path in ("/transforms", "/graphs", "/triggers", "/metrics", "/runs"):
                assert (await http.get(path)).status_code == 200, path
            assert (await http.post(HOOK, json={"text": "x"})).status_code == 401
            r = await http.post("/graphs/digest/runs", json={"input": {"text": "y" * 2000}})
            assert r.status_code == 413 and r.json()["detail"]["limit"] == 1024
            r = await http.post("/graphs/digest/runs", content=b"[" * 100 + b"]" * 100)
            assert r.status_code == 422 and r.json()["detail"]["kind"] == "json_too_deep"
            r = await http.post("/graphs/digest/runs", json={"input": {"text": "z"}})
            assert r.status_code == 200 and r.json()["output"] == {"text": "z"}
    finally:
        await host.aclose(5)


async def test_metrics_public_opens_metrics_only(
    tmp_path: Path, nats_server: NatsServer, built: Path
) -> None:
    """``http.metrics_public``: a local Prometheus scraper reads /metrics without a
    token; every other route still needs one."""
    config = make_config(tmp_path / "data")
    config = on_nats(config, nats_server, http={"metrics_public": True})
    host = await start_host(config)
    try:
        async with httpx.AsyncClient(base_url=host.url, timeout=20) as http:
            r = await http.get("/metrics")
            assert r.status_code == 200 and "ionflux_queue_depth" in r.text
            for path in ("/triggers", "/transforms", "/graphs", "/runs"):
                assert (await http.get(path)).status_code == 401, path
    finally:
        await host.aclose(5)
