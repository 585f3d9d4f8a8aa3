"""Master plans through a real serving host: real wasm agents (deployed graphs over
the standard transforms), a real nats-server, IONWALL's consent. What ran is read
from the run history (each step a child run of the plan's run) and the plan's
completion event on NATS."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from conftest import GuestPublisher, make_config, on_nats
from ionflux import PlanValidationError
from ionflux.http._hosting import RunningHost, start_host
from ionflux.reactor import EXECUTE_GRAPH, Reactor
from ionflux.triggers import NatsServer
from nats.aio.client import Client
from test_graph_examples import STANDARD, publish_built


def agent(name: str, *, fails_unless: str | None = None, scope: str | None = None) -> str:
    """A deployed agent: uppercases its ``text``. ``fails_unless``: its output must be
    that text (else the run fails its output_schema); ``scope``: an approval scope."""
    schema = (
        f"output_schema: {{type: object, properties: {{text: {{const: '{fails_unless}'}}}}}}\n"
        if fails_unless
        else ""
    )
    approval = f'    ionwall_approval_scope: "{scope}"\n' if scope else ""
    return (
        f"name: {name}\nversion: '1.0.0'\n"
        "input_schema: {type: object, properties: {text: {type: string}}, required: [text]}\n"
        f"{schema}"
        "graph:\n  - id: up\n    transform: uppercase\n"
        "    inputs: {text: '{{trigger.input_data.text}}'}\n"
        f"{approval}"
        "    outputs: {text: text}\noutput: {text: '{{nodes.up.outputs.text}}'}\n"
    )


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


def deploy(running: RunningHost, text: str) -> None:
    plan = running.engine.validate(text)
    running.engine.repository.deploy(text, plan.name, plan.graph.version, "test")


async def approve_and_rerun(running: RunningHost, reactor: Reactor, ref: str, params: Any) -> Any:
    """First run: waits for the plan's one consent; approved, the next run goes."""
    first = await reactor.run_plan(ref, params)
    assert first.overall_status == "awaiting_approval", first.error_details
    [consent] = [c for c in running.ionwall.consents("pending")]
    assert consent.transform.startswith("ION Reactor Agent: Master Plan")
    running.ionwall.approve(consent.id)
    return consent


def diamond(prefix: str) -> dict[str, Any]:
    return {
        "name": f"{prefix}-diamond",
        "version": "1.0.0",
        "required_scopes": ["read_pod_data:**"],
        "steps": [
            {"step_id": "a", "agent_to_call": f"{prefix}_a",
             "input_mapping": {"text": "{{trigger.input_data.word}}"}},
            {"step_id": "b", "agent_to_call": f"{prefix}_b", "dependencies": ["a"],
             "input_mapping": {"text": "b-{{nodes.a.outputs.text}}"}},
            {"step_id": "c", "agent_to_call": f"{prefix}_c", "dependencies": ["a"],
             "input_mapping": {"text": "c-{{nodes.a.outputs.text}}"}},
            {"step_id": "d", "agent_to_call": f"{prefix}_d", "dependencies": ["b", "c"],
             "input_mapping": {"text": "{{nodes.b.outputs.text}}+{{nodes.c.outputs.text}}"}},
        ],
    }  # fmt: skip


async def test_a_diamond_plan_runs_each_agent_once_in_order_concurrently_under_one_consent(
    serving: RunningHost, nats_server: NatsServer
) -> None:
    running, reactor = serving, serving.reactor
    p = f"d{uuid.uuid4().hex[:6]}"
    for step in "abcd":
        deploy(running, agent(f"{p}_{step}", scope="read_pod_data:reports/*"))
    cid, _ = reactor.put_plan(diamond(p))
    consent_text = reactor.consent_for(cid).text()
    assert f"ION Reactor Agent wants to execute Master Plan: '{p}-diamond'" in consent_text
    assert "orchestrate 4 agents" in consent_text and "reports" in consent_text

    nc: Client = await nats.connect(nats_server.url, **nats_server.connect_options())
    events = await nc.subscribe("ionflux.reactor.execute_master_plan.completion")
    consent = await approve_and_rerun(running, reactor, cid, {"word": "hi"})
    assert set(consent.scopes) >= {"read_pod_data:reports/*", f"execute_master_plan:{cid}"}
    result = await reactor.run_plan(cid, {"word": "hi"})
    assert result.overall_status == "success", result.error_details
    assert result.output["overall_status"] == "success"
    assert result.output["error_details"] is None
    assert len(running.ionwall.consents()) == 1  # one consent, no prompt per agent

    history = running.engine.history
    children = [r for r in history.list_runs(limit=100) if r.parent_run_id == result.execution_id]
    by_graph = {r.graph_name: r for r in children}
    assert sorted(by_graph) == [f"{p}_{s}" for s in "abcd"] and len(children) == 4  # once each
    assert all(r.status == "success" for r in children)
    a, b, c, d = (by_graph[f"{p}_{s}"] for s in "abcd")
    assert a.end_time is not None and b.end_time is not None and c.end_time is not None
    assert a.end_time <= min(b.start_time, c.start_time)  # after its dependency
    assert max(b.start_time, c.start_time) < min(b.end_time, c.end_time)  # b and c together
    assert d.start_time >= max(b.end_time, c.end_time)
    assert d.output == {"text": "B-HI+C-HI"}

    log = json.loads(running.host.pod.get_bytes(result.output["step_results_summary_cid"]))
    assert [s["status"] for s in log["steps"]] == ["success"] * 4
    assert log["steps"][-1]["outputs"] == {"text": "B-HI+C-HI"}  # each step's output
    event = json.loads((await events.next_msg(timeout=30)).data)
    assert event["master_plan_cid"] == cid and event["overall_status"] == "success"
    assert event["step_results_summary_cid"] == result.output["step_results_summary_cid"]
    await nc.close()


async def test_each_error_strategy(serving: RunningHost) -> None:
    running, reactor = serving, serving.reactor
    p = f"e{uuid.uuid4().hex[:6]}"
    deploy(running, agent(f"{p}_ok"))
    deploy(running, agent(f"{p}_second", fails_unless="N2"))  # fails on attempt 1
    deploy(running, agent(f"{p}_never", fails_unless="never"))
    reactor.put_plan(
        {
            "name": f"{p}-fallback",
            "steps": [
                {
                    "step_id": "rescue",
                    "agent_to_call": f"{p}_ok",
                    "input_mapping": {"text": "saved"},
                }
            ],
        }
    )

    def plan(strategy: dict[str, Any], failing: str) -> dict[str, Any]:
        return {"name": f"{p}-{strategy['strategy']}", "steps": [
            {"step_id": "x", "agent_to_call": failing,
             "input_mapping": {"text": "n{{system.attempt}}"}, "on_error": strategy},
            {"step_id": "after_x", "agent_to_call": f"{p}_ok", "dependencies": ["x"],
             "input_mapping": {"text": "{{nodes.x.outputs.text}}"}},
            {"step_id": "free", "agent_to_call": f"{p}_ok", "input_mapping": {"text": "f"}},
        ]}  # fmt: skip

    retry = {"strategy": "retry_with_backoff", "retries": 2, "backoff": "10ms"}
    cases = {
        "retry": (plan(retry, f"{p}_second"), "success"),
        "skip": (plan({"strategy": "skip"}, f"{p}_never"), "partial_success_with_errors"),
        "halt": (plan({"strategy": "halt"}, f"{p}_never"), "failure"),
        "alternative": (
            plan({"strategy": "alternative_plan", "alternative_plan": f"{p}-fallback"},
                 f"{p}_never"),
            "partial_success_with_errors",
        ),
    }  # fmt: skip
    for label, (data, expected) in cases.items():
        cid, _ = reactor.put_plan(data)
        await approve_and_rerun(running, reactor, cid, None)
        result = await reactor.run_plan(cid)
        assert result.overall_status == "success", (label, result.error_details)
        out = result.output
        assert out["overall_status"] == expected, (label, out["error_details"])
        log = json.loads(running.host.pod.get_bytes(out["step_results_summary_cid"]))
        steps = {s["step_id"]: s for s in log["steps"]}
        if label == "retry":
            assert steps["x"]["attempts"] == 2 and len(steps["x"]["run_ids"]) == 2
            assert steps["after_x"]["status"] == "success"
        if label == "skip":
            assert steps["x"]["status"] == "failure"
            assert steps["after_x"]["status"] == "skipped" and steps["free"]["status"] == "success"
            assert out["error_details"][0]["step_id"] == "x"
        if label in ("halt", "alternative"):
            assert steps["x"]["status"] == "failure" and steps["after_x"]["status"] == "cancelled"
        if label == "alternative":
            [rescue] = log["alternative_plan"]["steps"]
            assert rescue["status"] == "success"
            run = running.engine.history.get(rescue["run_ids"][0])
            assert run is not None and run.output == {"text": "SAVED"}


async def test_a_plan_asking_more_than_its_grant_waits_and_validation_comes_first(
    serving: RunningHost,
) -> None:
    running, reactor = serving, serving.reactor
    p = f"g{uuid.uuid4().hex[:6]}"
    deploy(running, agent(f"{p}_reads", scope="read_pod_data:reports/*"))
    one = {"name": f"{p}-one", "required_scopes": ["read_pod_data:**"], "steps": [
        {"step_id": "r", "agent_to_call": f"{p}_reads",
         "input_mapping": {"text": "x"}}]}  # fmt: skip
    cid, _ = reactor.put_plan(one)
    await approve_and_rerun(running, reactor, cid, None)
    assert (await reactor.run_plan(cid)).output["overall_status"] == "success"

    # The agent now asks for more: the same plan's grant does not cover it.
    wants_more = agent(f"{p}_reads", scope="write_pod_data:reports/*")
    deploy(running, wants_more.replace("1.0.0", "2.0.0"))
    wider = {**one, "required_scopes": ["read_pod_data:**", "write_pod_data:**"]}
    cid2, _ = reactor.put_plan(wider)
    waited = await reactor.run_plan(cid2)
    assert waited.overall_status == "awaiting_approval"
    pending = running.ionwall.consents("pending")
    assert len(pending) == 1 and "write_pod_data:reports/*" in pending[0].scopes
    run = running.engine.history.get(waited.execution_id)
    assert run is not None and run.status == "awaiting_approval"
    assert not [r for r in running.engine.history.list_runs(graph=f"{p}_reads", limit=50)
                if r.parent_run_id == waited.execution_id]  # fmt: skip

    bad = {"name": f"{p}-bad", "steps": [
        {"step_id": "u", "agent_to_call": "no_such_agent"},
        {"step_id": "m", "agent_to_call": f"{p}_reads", "dependencies": ["n"]},
        {"step_id": "n", "agent_to_call": f"{p}_reads", "dependencies": ["m"],
         "input_mapping": {"text": "{{nodes.u.outputs.text}}"}},
    ]}  # fmt: skip
    _, parsed = reactor.put_plan(bad)
    with pytest.raises(PlanValidationError) as caught:
        reactor.check_plan(parsed)
    text = " | ".join(p_["problem"] for p_ in caught.value.problems)
    assert "unknown agent 'no_such_agent'" in text
    assert "dependency cycle" in text
    assert "missing input text" in text
    assert "does not depend on it" in text
    assert "does not declare in required_scopes" in text
    assert running.engine.repository.latest(EXECUTE_GRAPH) is not None


def storing(name: str, path: str) -> str:
    """An agent that stores its text in IONPOD at ``path`` (pod-store)."""
    return (
        f"name: {name}\nversion: '1.0.0'\n"
        "graph:\n  - id: keep\n    transform: pod-store\n"
        f"    inputs: {{path: '{path}', data: {{text: '{{{{trigger.input_data.text}}}}'}}}}\n"
    )


async def test_ionwall_checks_every_import_of_every_child_under_the_plans_grant(
    serving: RunningHost,
) -> None:
    """The owner approves less than the plan asked (write only to reports/): the child
    writing there succeeds, the one writing elsewhere is refused at its import."""
    running, reactor, wall = serving, serving.reactor, serving.ionwall
    p = f"i{uuid.uuid4().hex[:6]}"
    deploy(running, storing(f"{p}_reports", f"reports/{p}.json"))
    deploy(running, storing(f"{p}_private", f"private/{p}.json"))
    steps = [
        {"step_id": "ok", "agent_to_call": f"{p}_reports", "input_mapping": {"text": "a"},
         "on_error": "skip"},
        {"step_id": "no", "agent_to_call": f"{p}_private", "input_mapping": {"text": "b"},
         "on_error": "skip"},
    ]  # fmt: skip
    cid, _ = reactor.put_plan(
        {"name": f"{p}-writes", "required_scopes": ["write_pod_data:**"], "steps": steps}
    )
    assert (await reactor.run_plan(cid)).overall_status == "awaiting_approval"
    [consent] = wall.consents("pending")
    assert "write_pod_data:**" in consent.scopes
    narrowed = [s for s in consent.scopes if s != "write_pod_data:**"]
    wall.approve(consent.id, only=[*narrowed, f"write_pod_data:reports/{p}.json"])
    result = await reactor.run_plan(cid)
    assert result.overall_status == "success", result.error_details
    assert result.output["overall_status"] == "partial_success_with_errors"
    [error] = result.output["error_details"]
    assert error["step_id"] == "no"
    child = error["child_errors"][0]
    assert child["kind"] == "transform_failed" and f"private/{p}.json" in child["message"]
    wall.flush()
    log = json.loads(running.host.pod.get_bytes(result.output["step_results_summary_cid"]))
    refused_run = {s["step_id"]: s for s in log["steps"]}["no"]["run_ids"][0]
    [denied] = [
        e for e in wall.audit_tail(200)
        if e.decision == "deny" and e.scope == f"write_pod_data:private/{p}.json"
    ]  # fmt: skip
    assert denied.grant_id == consent_grant(wall, consent.id)  # the plan's one grant
    assert denied.run_id == refused_run  # in the child's own run
    [allowed] = [
        e for e in wall.audit_tail(200)
        if e.decision == "allow" and e.scope == f"write_pod_data:reports/{p}.json"
    ]  # fmt: skip
    assert allowed.grant_id == denied.grant_id


def consent_grant(wall: Any, consent_id: str) -> str | None:
    grant_id: str | None = wall.consent(consent_id).grant_id
    return grant_id


async def test_a_child_cannot_use_the_reactors_own_scopes(
    serving: RunningHost, publish_guest: GuestPublisher
) -> None:
    """The plan's grant also holds what the Reactor's own nodes need (write_pod_data:**
    for the step log). A child whose agent asks only to read reports/ but whose guest
    writes to IONPOD is refused at that import, and the refusal is audited."""
    running, reactor, wall = serving, serving.reactor, serving.ionwall
    p = f"o{uuid.uuid4().hex[:6]}"
    publish_guest(running.host, "all-imports", scopes=[])  # its manifest declares nothing
    target = f"reactor_plan_execution_logs/{p}.json"
    sneaky = (
        f"name: {p}_sneaky\nversion: '1.0.0'\ngraph:\n  - id: put\n    transform: all-imports\n"
        "    ionwall_approval_scope: 'read_pod_data:reports/*'\n"
        f"    inputs: {{call: pod-put, path: '{target}', data: x}}\n"
    )
    deploy(running, sneaky)
    steps = [{"step_id": "s", "agent_to_call": f"{p}_sneaky"}]
    cid, _ = reactor.put_plan(
        {"name": f"{p}-sneaky", "required_scopes": ["read_pod_data:**"], "steps": steps}
    )
    assert (await reactor.run_plan(cid)).overall_status == "awaiting_approval"
    [consent] = wall.consents("pending")
    assert "write_pod_data:**" in consent.scopes  # the Reactor's pod-store, for its log
    wall.approve(consent.id)
    result = await reactor.run_plan(cid)
    assert result.overall_status == "success", result.error_details
    log = json.loads(running.host.pod.get_bytes(result.output["step_results_summary_cid"]))
    child = running.engine.history.get(log["steps"][0]["run_ids"][0])
    assert child is not None and "denied" in json.dumps(child.output)  # the guest was told no
    wall.flush()
    [denied] = [
        e for e in wall.audit_tail(200) if e.decision == "deny" and e.scope.endswith(target)
    ]
    assert denied.reason == "outside the scopes of the master plan's agents"
    assert denied.run_id == child.run_id


async def test_the_step_log_masks_secrets_and_sensitive_fields(
    tmp_path: Path, nats_server: NatsServer, built: Path
) -> None:
    config = on_nats(make_config(tmp_path / "host"), nats_server)
    settings = config.ionwall.model_copy(update={"secret_values": ["SESAME"]})
    running = await start_host(
        config.model_copy(update={"ionwall": settings}), require_token=False, serve_http=False
    )
    try:
        for name in STANDARD:
            publish_built(running.host, name)
        running.reactor.ensure_graphs()
        deploy(running, agent("masked_agent"))
        steps = [{"step_id": "s", "agent_to_call": "masked_agent",
                  "input_mapping": {"text": "open sesame"}}]  # fmt: skip
        cid, _ = running.reactor.put_plan({"name": "masked", "steps": steps})
        await approve_and_rerun(running, running.reactor, cid, None)
        result = await running.reactor.run_plan(cid)
        text = running.host.pod.get_bytes(result.output["step_results_summary_cid"]).decode()
        assert "SESAME" not in text and "OPEN" in text  # the secret masked, the rest kept
    finally:
        await running.aclose()
