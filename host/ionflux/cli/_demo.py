"""``ionflux demo``: the whole system in one run, on embedded defaults.

Publishes the standard transforms, runs a few, walks through an IONWALL
consent (the owner approves less than was asked), deploys a graph, starts the
host service with a nats-server of its own, invokes the graph over NATS and
shows the completion event, and verifies the audit log.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

import ionflux as errors

from ..host import Host
from ._app import App, pass_app
from ._ionwall import ionwall_for

SAMPLES: list[tuple[str, dict[str, Any]]] = [
    ("uppercase", {"text": "hello, ionflux"}),
    ("text-stats", {"text": "one two three\nfour five"}),
    (
        "json-path",
        {
            "data": {"user": {"emails": ["a@example.com", "b@example.com"]}},
            "path": "user.emails[1]",
        },
    ),
]


def _say(text: str) -> None:
    click.echo(click.style(f"\n== {text}", bold=True))


@click.command()
@click.option(
    "--manifests",
    "manifest_dir",
    default="manifests",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "--graph",
    "graph_file",
    default="graphs/digest.yaml",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@pass_app
def demo(app: App, manifest_dir: Path, graph_file: Path) -> None:
    """Publish the standard transforms, run them, consent, and serve a graph over NATS."""
    host = app.host
    click.echo(f"data directory: {app.config.data_dir}")
    _say("publishing the standard transforms (CID = what `ipfs add --cid-version=1` prints)")
    for path in sorted(manifest_dir.glob("*.yaml")):
        t = host.publish(path)
        click.echo(f"  {t.name:<14} {t.version:<7} {t.cid}  {t.size} bytes")

    _say("one call each, every call in a fresh sandbox")
    for name, value in SAMPLES:
        click.echo(f"$ ionflux invoke {name} --input '{json.dumps(value)}'")
        result = host.invoke(name, value)
        click.echo(
            f"{result.output}\n  ({result.duration_s * 1000:.2f} ms, fuel {result.fuel_used})"
        )

    _consent(host)

    _say(f"a graph over NATS: {graph_file}")
    engine_version, fresh = _deploy(app, graph_file)
    click.echo(f"  deployed {engine_version} ({'new version' if fresh else 'unchanged'})")
    asyncio.run(_reactor(app, graph_file.parent))
    asyncio.run(_serve_once(app))

    _say("the audit log: every consent answered, every allow and deny, hash-chained")
    wall = ionwall_for(app)
    for entry in wall.audit_tail(3):
        click.echo(f"  #{entry.index} {entry.decision.upper():<5} {entry.scope}  ({entry.reason})")
    click.echo(f"$ ionflux audit verify\n  {wall.audit_verify()}")


def _consent(host: Host) -> None:
    call = {"path": "demo/notes.json", "data": {"hello": "pod"}}
    _say("IONWALL: pod-store asks to write to your pod")
    try:
        stored = host.invoke("pod-store", call)
        click.echo(f"  already granted earlier: {stored.output}")
        return
    except errors.ConsentRequired as exc:
        request = exc.request
        click.echo(f"error: {exc}\n")
        click.echo(host.ionwall.prompt(request.id))
    click.echo(f"\n$ ionflux consent approve {request.id} --only 'write_pod_data:demo/*'")
    grant = host.ionwall.approve(request.id, only=["write_pod_data:demo/*"])
    click.echo(f"  grant {grant.id}: {', '.join(grant.scopes)}")
    stored = host.invoke("pod-store", call)
    click.echo(f"$ ionflux invoke pod-store ... demo/notes.json\n{stored.output}")
    try:
        host.invoke("pod-store", {"path": "private/keys.json", "data": {}})
    except errors.TransformFailed as denied:
        click.echo(f"$ ionflux invoke pod-store ... private/keys.json\nerror: {denied}")


def _deploy(app: App, graph_file: Path) -> tuple[str, bool]:
    from ..graph import Engine

    engine = Engine.for_host(app.host)
    try:
        version, fresh = engine.deploy(graph_file, "ionflux demo")
        return f"{version.name}@{version.version} {version.cid}", fresh
    finally:
        engine.close()


async def _serve_once(app: App) -> None:
    import nats

    from ..http import start_host

    app.host.close()  # the service opens the data directory itself
    running = await start_host(app.config, serve_http=False)
    try:
        click.echo(f"  nats-server started by the host at {running.nats_url}")
        # Its token (<data-dir>/nats/token): the host's server refuses anonymous clients.
        assert running.nats_server is not None
        nc = await nats.connect(running.nats_url, **running.nats_server.connect_options())
        try:
            events = await nc.subscribe("ionflux.digest.requested.completion")
            body = {"title": "weekly notes", "text": "one two three\nfour", "tags": ["ops"]}
            # A NATS trigger needs an IONWALL token for the graph, as a webhook does.
            token = running.ionwall.issue_token(["execute_graph:digest"]).token
            click.echo(
                f"$ nats request ionflux.digest.requested '{json.dumps(body)}' "
                "-H 'Authorization: Bearer <token>'"
            )
            reply = await nc.request(
                "ionflux.digest.requested",
                json.dumps(body).encode(),
                10,
                headers={"Authorization": f"Bearer {token}"},
            )
            answer = json.loads(reply.data)
            click.echo(json.dumps(answer.get("output", answer), indent=2))
            event = json.loads((await events.next_msg(timeout=10)).data)
            shown = {
                k: event.get(k)
                for k in (
                    "execution_id",
                    "overall_status",
                    "step_results_summary_cid",
                    "error_details",
                )
            }
            click.echo(f"completion event: {json.dumps(shown)}")
        finally:
            await nc.close()
    finally:
        await running.aclose(10)


async def _reactor(app: App, graphs: Path) -> None:
    """The ION Reactor: its three graphs, an agent deployed from its definition, a
    master plan under one consent, a health rule over the runs' failure rate."""
    from ..graph import Engine, IonwallAuthorizer
    from ..reactor import Reactor

    _say("the ION Reactor: its three graphs, deployed")
    wall = app.host.ionwall
    engine = Engine.for_host(app.host, authorizer=IonwallAuthorizer(wall))
    reactor = Reactor(engine, wall=wall, local_files=True)
    try:
        for name in reactor.ensure_graphs(graphs) or ["(unchanged)"]:
            click.echo(f"  {name}")
        click.echo("$ ionflux agent deploy graphs/plans/headline_agent.yaml")
        cid, _ = reactor.agents.put_definition(
            (graphs / "plans" / "headline_agent.yaml").read_bytes()
        )
        if reactor.store.agent("headline_agent") is None:
            await reactor.agents.manage("deploy", agent_definition_cid=cid, by="ionflux demo")
        shown = reactor.agents.show("headline_agent")
        click.echo(f"  headline_agent: {shown['status']}, definition {cid}")

        _say("a master plan: two digests at once, then a headline, under ONE consent")
        plan_file = graphs / "plans" / "daily_digest.yaml"
        params = {"title": "morning notes", "text": "one two three"}
        click.echo(f"$ ionflux plan run {plan_file} --params '{json.dumps(params)}'")
        plan_cid, _ = reactor.put_plan(plan_file.read_bytes())
        result = await reactor.run_plan(plan_cid, params)
        if result.overall_status == "awaiting_approval":
            consent_id = str((result.error_details or [{}])[0].get("consent_id"))
            click.echo(reactor.consent_text(consent_id) or "")
            click.echo(f"$ ionflux consent approve {consent_id}")
            wall.approve(consent_id)
            result = await reactor.run_plan(plan_cid, params)
        out = result.output or {}
        click.echo(
            f"  plan {out.get('overall_status')}; step log {out.get('step_results_summary_cid')}"
        )
        for record in engine.history.list_runs(limit=20):
            if record.parent_run_id == result.execution_id:
                click.echo(f"    child run {record.run_id} {record.graph_name}: {record.status}")

        _say("a health rule over the host's own metrics")
        rule = reactor.add_rule(
            {"metric": 'run_failure_rate{graph="digest"}', "condition": "value > 0.05",
             "severity": "critical", "notification_channel": "ops_pager"}
        )  # fmt: skip
        await reactor.evaluate()
        [state] = [r for r in reactor.health() if r["name"] == rule.name]
        click.echo(f"  {state['metric']} = {state['value']:g} ({rule.condition}): "
                   f"{'FIRING' if state['firing'] else 'ok'}")  # fmt: skip
    finally:
        reactor.close()
        engine.flush()
        engine.close()
