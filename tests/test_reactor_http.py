"""The Reactor over the wire: its HTTP routes (each needing its scope) and the seed's
NATS subject ``ionflux.reactor.manage_agent`` (a token for the lifecycle graph, then
the graph's one consent), on a real serving host with real uvicorn and nats-server."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats
import pytest
from conftest import make_config, on_nats
from ionflux.http._hosting import RunningHost, start_host
from ionflux.reactor import MANAGE_GRAPH
from ionflux.triggers import NatsServer
from test_graph_examples import STANDARD, publish_built
from test_reactor_plans import agent


@pytest.fixture
async def serving(
    tmp_path: Path, nats_server: NatsServer, built: Path
) -> AsyncIterator[tuple[RunningHost, httpx.AsyncClient]]:
    config = on_nats(make_config(tmp_path / "host"), nats_server)
    running = await start_host(config)
    for name in STANDARD:
        publish_built(running.host, name)
    running.reactor.ensure_graphs()
    await running.triggers.sync()
    async with httpx.AsyncClient(base_url=running.url, timeout=60) as http:
        yield running, http
    await running.aclose()


def bearer(running: RunningHost, *scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {running.ionwall.issue_token(list(scopes)).token}"}


async def test_manage_agent_over_nats_and_http_each_needing_its_scope(
    serving: tuple[RunningHost, httpx.AsyncClient], nats_server: NatsServer
) -> None:
    running, http = serving
    name = f"hx{uuid.uuid4().hex[:6]}"
    definition = {"agent_name": "X", "version": "1.0.0", "flux_graph_dsl_yaml": agent(name)}
    r = await http.post("/reactor/agent-definitions", json={"definition": definition})
    assert r.status_code == 401
    r = await http.post(
        "/reactor/agent-definitions",
        json={"definition": definition},
        headers=bearer(running, "manage_agent_lifecycle:definitions"),
    )
    assert r.status_code == 201, r.text
    cid = r.json()["cid"]

    nc = await nats.connect(nats_server.url, **nats_server.connect_options())
    body = json.dumps({"operation": "deploy", "agent_definition_cid": cid}).encode()
    token = bearer(running, f"execute_graph:{MANAGE_GRAPH}")
    unauthorized = json.loads((await nc.request("ionflux.reactor.manage_agent", body, 30)).data)
    assert unauthorized["overall_status"] == "failure"
    first = json.loads(
        (await nc.request("ionflux.reactor.manage_agent", body, 30, headers=token)).data
    )
    assert first["overall_status"] == "awaiting_approval"  # the lifecycle graph's consent
    [consent] = running.ionwall.consents("pending")
    assert "manage_agent_lifecycle:**" in consent.scopes
    running.ionwall.approve(consent.id)
    done = json.loads(
        (await nc.request("ionflux.reactor.manage_agent", body, 30, headers=token)).data
    )
    assert done["overall_status"] == "success", done
    assert done["output"]["agent"]["status"] == "active"
    await nc.close()

    listed = await http.get("/reactor/agents", headers=bearer(running, "read_host:graphs"))
    assert [a["name"] for a in listed.json()] == [name]
    wrong = await http.post(
        "/reactor/agents/retire",
        json={"agent_id_to_update_or_retire": name},
        headers=bearer(running, "manage_agent_lifecycle:someone_else"),
    )
    assert wrong.status_code == 403
    retired = await http.post(
        "/reactor/agents/retire",
        json={"agent_id_to_update_or_retire": name},
        headers=bearer(running, f"manage_agent_lifecycle:{name}"),
    )
    assert retired.status_code == 200, retired.text
    assert retired.json()["status"] == "retired"
    assert [v["operation"] for v in retired.json()["history"]] == ["deploy", "retire"]
    run = await http.post(  # an agent asking no scope: refused all the same
        f"/graphs/{name}/runs",
        json={"input": {"text": "x"}},
        headers=bearer(running, f"execute_graph:{name}"),
    )
    assert run.json()["overall_status"] == "failure"
    assert run.json()["error_details"][0]["kind"] == "permission_denied"
    again = await http.post(
        "/reactor/agents/retire",
        json={"agent_id_to_update_or_retire": name},
        headers=bearer(running, f"manage_agent_lifecycle:{name}"),
    )
    assert again.status_code == 409 and again.json()["detail"]["kind"] == "invalid_agent_transition"
    unknown = await http.get("/reactor/agents/nobody", headers=bearer(running, "read_host:graphs"))
    assert unknown.status_code == 404
    bad = await http.post(
        "/reactor/plans",
        json={"plan": {"name": "p", "steps": [{"step_id": "no spaces", "agent_to_call": "a"}]}},
        headers=bearer(running, "execute_master_plan:p"),
    )
    assert bad.status_code == 422 and bad.json()["detail"]["problems"][0]["step"] == "no spaces"
    assert running.reactor.store.plans() == []  # nothing stored


async def test_a_plan_over_http_shows_its_one_prompt_and_its_metrics(
    serving: tuple[RunningHost, httpx.AsyncClient], nats_server: NatsServer
) -> None:
    running, http = serving
    name = f"hp{uuid.uuid4().hex[:6]}"
    plan = running.engine.validate(agent(f"{name}_a"))
    running.engine.repository.deploy(agent(f"{name}_a"), plan.name, "1.0.0", "test")
    step = {"step_id": "s", "agent_to_call": f"{name}_a", "input_mapping": {"text": "go"}}
    data = {"name": name, "steps": [step]}
    put = await http.post(
        "/reactor/plans",
        json={"plan": data},
        headers=bearer(running, f"execute_master_plan:{name}"),
    )
    assert put.status_code == 201, put.text
    runs = f"/reactor/plans/{name}/runs"
    assert (
        await http.post(runs, headers=bearer(running, "execute_master_plan:other"))
    ).status_code == 403
    asked = await http.post(runs, headers=bearer(running, f"execute_master_plan:{name}"))
    assert asked.json()["overall_status"] == "awaiting_approval"
    consent_id = asked.json()["error_details"][0]["consent_id"]
    prompt = await http.get(
        f"/reactor/consents/{consent_id}/prompt", headers=bearer(running, "manage_ionwall:consents")
    )
    assert f"ION Reactor Agent wants to execute Master Plan: '{name}'" in prompt.json()["text"]
    approved = await http.post(
        f"/ionwall/consents/{consent_id}/approve",
        headers=bearer(running, "manage_ionwall:consents"),
    )
    assert approved.status_code == 200, approved.text
    ran = await http.post(runs, headers=bearer(running, f"execute_master_plan:{name}"))
    assert ran.json()["overall_status"] == "success", ran.text
    assert ran.json()["output"]["overall_status"] == "success"
    metrics = await http.get("/metrics", headers=bearer(running, "read_host:metrics"))
    text = metrics.text
    for seed_name in (
        "master_plans_executed_count",
        "master_plans_successful_count",
        "master_plans_failed_count",
        "avg_master_plan_duration_ms",
        "agent_lifecycle_actions_count_deploy_update_retire",
        "critical_events_responded_to_count",
        "system_health_status_current",
    ):
        assert seed_name in text
    assert "master_plans_successful_count 1.0" in text

    # The seed's trigger: a plan run by NATS request, under the same one grant.
    cid = put.json()["cid"]
    nc = await nats.connect(nats_server.url, **nats_server.connect_options())
    try:
        token = bearer(running, "execute_graph:ion_reactor_execute_master_plan")
        msg = await nc.request(
            "ionflux.reactor.execute_master_plan",
            json.dumps({"master_plan_cid": cid}).encode(),
            30,
            headers=token,
        )
        answer = json.loads(msg.data)
        assert answer["overall_status"] == "success", answer
        assert answer["output"]["master_plan_cid"] == cid
        assert answer["output"]["overall_status"] == "success"
    finally:
        await nc.close()
    assert len(running.ionwall.consents()) == 1  # still the one consent
