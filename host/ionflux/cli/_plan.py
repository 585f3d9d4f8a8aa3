"""``ionflux plan validate|run|show|confirm`` and ``ionflux agent
deploy|update|retire|rollback|list|show``: the ION Reactor from the command line.

They run here, in this process, over the data directory (as ``ionflux graph
run`` does): a plan's run asks IONWALL once (``ionflux consent approve``), and
its steps run as child runs recorded in the run history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ..graph import Engine, IonwallAuthorizer
from ._app import App, pass_app


@contextmanager
def reactor_for(app: App) -> Iterator[Any]:
    from ..reactor import Reactor

    wall = app.host.ionwall
    engine = Engine.for_host(app.host, authorizer=IonwallAuthorizer(wall))
    reactor = Reactor(engine, wall=wall, local_files=True)
    try:
        reactor.ensure_graphs()
        yield reactor
    finally:
        reactor.close()
        engine.flush()
        engine.close()


@click.group()
def plan() -> None:
    """Master plans: multi-agent workflows the ION Reactor runs under one consent."""


@plan.command()
@click.argument("ref")
@pass_app
def validate(app: App, ref: str) -> None:
    """Store REF (a plan file, name or CID) and check it against the deployed agents."""
    with reactor_for(app) as reactor:
        cid, parsed = reactor.resolve_plan(ref)
        checked = reactor.check_plan(parsed)
        consent = reactor.consent_for(cid)
    click.echo(f"ok: {parsed.name} {parsed.version} ({len(parsed.steps)} steps) {cid}")
    for index, level in enumerate(checked.levels, 1):
        click.echo(f"  level {index}: {', '.join(level)}")
    click.echo("\nthe consent it asks:\n" + consent.text())


@plan.command(name="run")
@click.argument("ref")
@click.option("--params", "params", help="JSON runtime parameters of the plan.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@pass_app
def run_plan(app: App, ref: str, params: str | None, as_json: bool) -> None:
    """Run plan REF (file, name or CID); the first run asks your consent once."""
    value = json.loads(params) if params else None
    with reactor_for(app) as reactor:
        cid, _ = reactor.resolve_plan(ref)
        result = asyncio.run(reactor.run_plan(cid, value))
        prompt = None
        for error in result.error_details or []:
            if error.get("kind") == "consent_required" and error.get("consent_id"):
                prompt = reactor.consent_text(error["consent_id"])
    if as_json:
        click.echo(json.dumps({"master_plan_cid": cid, **result.to_dict()}, indent=2, default=str))
    else:
        out = result.output or {}
        click.echo(f"run {result.execution_id}: {result.overall_status}")
        if not out and not prompt:
            for error in result.error_details or []:
                click.echo(f"  {error.get('kind')}: {error.get('message')}")
        if out:
            click.echo(f"plan {cid}: {out.get('overall_status')}")
            click.echo(f"step log: {out.get('step_results_summary_cid')}")
            for error in out.get("error_details") or []:
                click.echo(f"  step {error.get('step_id')}: {error.get('message')}")
        if prompt:
            click.echo("\n" + prompt)
    if result.overall_status != "success" or (result.output or {}).get("overall_status") not in (
        None,
        "success",
    ):
        raise SystemExit(1)


@plan.command()
@click.argument("ref", required=False)
@pass_app
def show(app: App, ref: str | None) -> None:
    """Show plan REF (its steps and consent), or list the plans by name."""
    with reactor_for(app) as reactor:
        if ref is None:
            for name, cid, version, _ in reactor.store.plans():
                click.echo(f"{name:<30} {version:<10} {cid}")
            return
        cid, parsed = reactor.resolve_plan(ref)
        click.echo(json.dumps({"cid": cid, **parsed.model_dump(mode="json")}, indent=2))


@plan.command()
@click.argument("confirmation_id")
@pass_app
def confirm(app: App, confirmation_id: str) -> None:
    """Confirm a drastic emergency plan an alert rule started: it runs now."""
    with reactor_for(app) as reactor:
        result = asyncio.run(reactor.confirm(confirmation_id))
    click.echo(f"run {result.execution_id}: {result.overall_status}")


@click.group()
def agent() -> None:
    """Agents: deploy, update, retire and roll back from definitions in IONPOD."""


def _definition(reactor: Any, ref: str) -> str:
    path = Path(ref)
    if path.is_file():
        cid, _ = reactor.agents.put_definition(path.read_bytes())
        return str(cid)
    return ref


def _manage(app: App, operation: str, **kwargs: Any) -> None:
    with reactor_for(app) as reactor:
        if kwargs.get("agent_definition_cid"):
            kwargs["agent_definition_cid"] = _definition(reactor, kwargs["agent_definition_cid"])
        shown = asyncio.run(reactor.agents.manage(operation, **kwargs))
        text = reactor.consent_text(shown["consent_id"]) if shown.get("consent_id") else None
    _print_agent(shown)
    if shown.get("consent_id"):
        click.echo(
            f"\nthe new version asks for more: it serves once you approve\n"
            f"  ionflux consent show {shown['consent_id']}\n"
            f"  ionflux consent approve {shown['consent_id']}"
        )
        if text:
            click.echo(text)


def _print_agent(shown: dict[str, Any]) -> None:
    serving = shown.get("serving") or {}
    click.echo(
        f"{shown['name']}: {shown['status']}, serving {serving.get('version', '-')} "
        f"({serving.get('graph_cid', '-')})"
    )
    for v in shown.get("history", []):
        click.echo(
            f"  #{v['seq']:<3} {v['operation']:<9} {v['version']:<10} {v['state']:<16} "
            f"{v['definition_cid']}"
        )


@agent.command()
@click.argument("definition")
@pass_app
def deploy(app: App, definition: str) -> None:
    """Deploy an agent from DEFINITION (a file, stored first, or its CID in IONPOD)."""
    _manage(app, "deploy", agent_definition_cid=definition)


@agent.command()
@click.argument("name")
@click.argument("definition")
@pass_app
def update(app: App, name: str, definition: str) -> None:
    """Update agent NAME to DEFINITION; wider scopes wait for your consent."""
    _manage(app, "update", agent_definition_cid=definition, agent_id=name)


@agent.command()
@click.argument("name")
@pass_app
def retire(app: App, name: str) -> None:
    """Retire agent NAME: its triggers go off, runs in flight end."""
    _manage(app, "retire", agent_id=name)


@agent.command()
@click.argument("name")
@click.option("--to", "to_seq", type=int, help="The history row (#) to serve again.")
@pass_app
def rollback(app: App, name: str, to_seq: int | None) -> None:
    """Serve the version of NAME that served before (or --to #)."""
    _manage(app, "rollback", agent_id=name, to_seq=to_seq)


@agent.command(name="list")
@pass_app
def list_agents(app: App) -> None:
    """The agents and their status."""
    with reactor_for(app) as reactor:
        for shown in reactor.agents.summaries():
            _print_agent(shown)


@agent.command(name="show")
@click.argument("name")
@pass_app
def show_agent(app: App, name: str) -> None:
    """Agent NAME: status and version history."""
    with reactor_for(app) as reactor:
        _print_agent(reactor.agents.show(name))
