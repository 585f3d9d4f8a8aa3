"""Agents with a lifecycle and health rules that act, on a real serving host (real
wasm agents, a real nats-server, IONWALL consents). What served is read from the
run records (the graph CID each run ran)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from conftest import make_config, on_nats
from ionflux import PermissionDenied
from ionflux.graph import RunResult, RunTrigger
from ionflux.http._hosting import RunningHost, start_host
from ionflux.reactor import EXECUTE_GRAPH
from ionflux.triggers import NatsServer
from test_graph_examples import STANDARD, publish_built
from test_reactor_plans import agent


@pytest.fixture
async def serving(
    tmp_path: Path, nats_server: NatsServer, built: Path
) -> AsyncIterator[RunningHost]:
    config = on_nats(make_config(tmp_path / "host"), nats_server)
    running = await start_host(config, require_token=False, serve_http=False)
    for name in STANDARD:
        publish_built(running.host, name)
    running.reactor.ensure_graphs()
    await running.triggers.sync()
    yield running
    await running.aclose()


async def run(running: RunningHost, name: str) -> RunResult:
    return await running.engine.run(name, {"text": "hi"}, trigger=RunTrigger("manual"))


async def test_update_with_wider_scopes_waits_while_the_old_version_serves_then_rollback_and_retire(
    serving: RunningHost,
) -> None:
    running, reactor, wall = serving, serving.reactor, serving.ionwall
    name = f"ag{uuid.uuid4().hex[:6]}"
    v1, _ = reactor.agents.put_definition(
        {"agent_name": "Digest Agent", "version": "1.0.0",
         "flux_graph_dsl_yaml": agent(name, scope="read_pod_data:reports/*")}
    )  # fmt: skip
    shown = await reactor.agents.manage("deploy", agent_definition_cid=v1)
    assert shown["status"] == "active" and shown["serving"]["definition_cid"] == v1
    v1_graph = shown["serving"]["graph_cid"]
    assert (await run(running, name)).overall_status == "awaiting_approval"
    [consent] = wall.consents("pending")
    wall.approve(consent.id)
    assert (await run(running, name)).graph_cid == v1_graph

    wider_text = agent(name, scope="write_pod_data:reports/*").replace("1.0.0", "2.0.0")
    v2, _ = reactor.agents.put_definition(
        {"agent_name": "Digest Agent", "version": "2.0.0", "flux_graph_dsl_yaml": wider_text}
    )
    shown = await reactor.agents.manage("update", agent_definition_cid=v2, agent_id=name)
    assert shown["status"] == "updating" and shown["pending"]["state"] == "pending_consent"
    pending = wall.consent(shown["consent_id"])
    assert "write_pod_data:reports/*" in pending.scopes
    served = await run(running, name)  # the old version keeps serving meanwhile
    assert served.overall_status == "success" and served.graph_cid == v1_graph

    wall.approve(pending.id)
    shown = reactor.agents.show(name)  # looks at the consent: approved, v2 serves
    assert shown["status"] == "active" and shown["serving"]["definition_cid"] == v2
    v2_graph = shown["serving"]["graph_cid"]
    assert (await run(running, name)).graph_cid == v2_graph

    # An update v2's grant covers serves at once, with no new prompt.
    narrow_text = agent(name, scope="write_pod_data:reports/*").replace("1.0.0", "3.0.0")
    v3, _ = reactor.agents.put_definition(
        {"agent_name": "Digest Agent", "version": "3.0.0", "flux_graph_dsl_yaml": narrow_text}
    )
    before = len(wall.consents("pending"))
    shown = await reactor.agents.manage("update", agent_definition_cid=v3, agent_id=name)
    assert shown["status"] == "active" and len(wall.consents("pending")) == before
    assert (await run(running, name)).overall_status == "success"

    shown = await reactor.agents.manage("rollback", agent_id=name)
    assert shown["serving"]["definition_cid"] == v2
    assert (await run(running, name)).graph_cid == v2_graph
    operations = [v["operation"] for v in shown["history"]]
    assert operations == ["deploy", "update", "update", "rollback"]

    # Retire: triggers off, the run in flight ends, new runs are refused.
    in_flight = asyncio.create_task(run(running, name))
    await asyncio.sleep(0)
    shown = await reactor.agents.manage("retire", agent_id=name)
    assert shown["status"] == "retired"
    done = await in_flight
    assert done.overall_status == "success"
    assert all(
        r.status not in ("running", "accepted")
        for r in running.engine.history.list_runs(graph=name, limit=50)
    )
    assert name not in running.triggers.graphs
    refused = await run(running, name)
    assert refused.overall_status == "failure"
    assert refused.error_details and refused.error_details[0]["kind"] == "permission_denied"
    with pytest.raises(Exception, match="retired"):
        await reactor.agents.manage("retire", agent_id=name)
    assert PermissionDenied.kind == "permission_denied"
    gauge = reactor.metrics.value("agent_lifecycle_actions_count_deploy_update_retire")
    assert gauge == 5


async def test_a_rule_fires_on_a_real_failure_rate_and_its_emergency_plans_act(
    serving: RunningHost, nats_server: NatsServer
) -> None:
    running, reactor, wall = serving, serving.reactor, serving.ionwall
    p = f"h{uuid.uuid4().hex[:6]}"
    flaky = f"{p}_flaky"
    deploy_text = agent(flaky, fails_unless="never")
    plan = running.engine.validate(deploy_text)
    running.engine.repository.deploy(deploy_text, plan.name, plan.graph.version, "test")
    running.engine.repository.deploy(agent(f"{p}_ok"), f"{p}_ok", "1.0.0", "test")
    steps = [{"step_id": "s", "agent_to_call": f"{p}_ok", "input_mapping": {"text": "calm"}}]
    reactor.put_plan({"name": f"{p}-calm", "steps": steps})
    reactor.put_plan({"name": f"{p}-lockdown", "drastic": True, "steps": steps})
    for ref in (f"{p}-calm", f"{p}-lockdown"):  # the plans' own consent, given ahead
        assert (await reactor.run_plan(ref)).overall_status == "awaiting_approval"
        [consent] = wall.consents("pending")
        wall.approve(consent.id)

    metric = f'run_failure_rate{{graph="{flaky}"}}'
    reactor.add_rule({"name": "flaky", "metric": metric, "condition": "value > 0.5",
                      "severity": "critical", "notification_channel": "ops_pager",
                      "emergency_plan": f"{p}-calm"})  # fmt: skip
    reactor.add_rule({"name": "flaky-drastic", "metric": metric, "condition": "value > 0.5",
                      "severity": "critical", "notification_channel": "ops_pager",
                      "emergency_plan": f"{p}-lockdown"})  # fmt: skip
    assert await reactor.evaluate() == []  # no runs: nothing fires
    assert reactor.metrics.value("system_health_status_current") == 1

    nc = await nats.connect(nats_server.url, **nats_server.connect_options())
    alerts = await nc.subscribe("ionflux.system.critical_alert")
    for _ in range(2):
        assert (await run(running, flaky)).overall_status == "failure"
    fired = await reactor.evaluate()
    assert [a["rule"]["name"] for a in fired] == ["flaky", "flaky-drastic"]
    assert fired[0]["value"] == 1.0 and fired[0]["action"] == "emergency_plan_started"
    assert fired[1]["action"] == "awaiting_confirmation"
    for _ in range(2):
        event = json.loads((await alerts.next_msg(timeout=30)).data)
        assert event["severity"] == "critical" and event["notification_channel"] == "ops_pager"
    assert reactor.metrics.value("system_health_status_current") == 0
    assert await reactor.evaluate() == []  # still holding: fires once, not every time

    history = running.engine.history

    async def plan_runs() -> list[str]:
        for _ in range(600):
            found = [
                r for r in history.list_runs(graph=EXECUTE_GRAPH, limit=50)
                if r.status == "success" and r.trigger_type == "reactor_health"
            ]  # fmt: skip
            if found:
                return [r.run_id for r in found]
            await asyncio.sleep(0.05)
        raise AssertionError("the emergency plan did not run")

    assert len(await plan_runs()) == 1  # the calm plan ran; the drastic one waits
    [confirmation] = reactor.confirmations("pending")
    result = await reactor.confirm(confirmation.id)
    assert result.overall_status == "success" and result.output["overall_status"] == "success"
    assert reactor.confirmations("pending") == []
    assert reactor.metrics.value("critical_events_responded_to_count") == 2
    await nc.close()
