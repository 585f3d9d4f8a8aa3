"""``ionflux graph validate|deploy|versions|run`` and ``ionflux runs
list|show|rerun|pause|resume|cancel|retry``.

The operator controls change the run's record (and write one IONWALL audit
entry each): a run driven by a serving host (``ionflux up``) is paused or
cancelled by that host when it next renews its leases; a run resumed or retried
is driven by the next serving host that looks (every ``graph.resume_interval_s``),
or here with ``--drive``."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import click

from .. import GraphNotFound, InvalidInput
from ..graph import (
    MODES,
    Control,
    DebugAction,
    DebugPause,
    Engine,
    IonwallAuthorizer,
    Mode,
    RunRecord,
    RunResult,
    StepRecord,
    audit_control,
    preview,
)
from ._app import App, pass_app


@contextmanager
def _engine(app: App, *, runs: bool = True) -> Iterator[Engine]:
    # A run needs a grant covering the union of its nodes' scopes, as over HTTP and NATS.
    # Commands that only read (``runs=False``) leave IONWALL closed: they work on a
    # read-only data directory, even one where IONWALL never wrote its files.
    authorizer = IonwallAuthorizer(app.host.ionwall) if runs else None
    engine = Engine.for_host(app.host, authorizer=authorizer)
    reactor = None
    if runs:  # the ION Reactor's host-native nodes (its graphs validate and run here)
        from ..reactor import Reactor

        reactor = Reactor(engine, wall=app.host.ionwall, local_files=True)
    try:
        yield engine
    finally:
        if reactor is not None:
            reactor.close()
        engine.close()


@click.group()
def graph() -> None:
    """Validate, deploy and run FluxGraphs."""


@graph.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_app
def validate(app: App, file: Path) -> None:
    """Check FILE and print its execution plan, or every problem at once."""
    with _engine(app) as engine:
        plan = engine.validate(file.read_text(encoding="utf-8"), str(file))
    click.echo(f"ok: {plan.name} {plan.graph.version} ({len(plan.nodes)} nodes)")
    click.echo("plan (nodes on one level can run together):")
    for index, level in enumerate(plan.levels, 1):
        targets = ", ".join(f"{n} [{plan.nodes[n].target}]" for n in level)
        click.echo(f"  level {index}: {targets}")
    scopes = plan.manifest_scopes
    approvals = [
        p.node.ionwall_approval_scope for p in plan.nodes.values() if p.node.ionwall_approval_scope
    ]
    click.echo(f"manifest scopes: {', '.join(scopes) or '-'}")
    if approvals:
        click.echo(f"approval scopes: {', '.join(dict.fromkeys(a for a in approvals if a))}")


@graph.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-m", "--message", default="", help="What changed in this version.")
@pass_app
def deploy(app: App, file: Path, message: str) -> None:
    """Store FILE as a new immutable version of its graph (earlier versions are kept)."""
    with _engine(app) as engine:
        version, new = engine.deploy(file, message)
        count = len(engine.repository.versions(version.name))
    state = "deployed" if new else "unchanged (same as the latest version)"
    click.echo(f"{state}: {version.name} {version.version} {version.cid} (version {count})")


@graph.command()
@click.argument("name")
@pass_app
def versions(app: App, name: str) -> None:
    """List the deployed versions of graph NAME, oldest first."""
    with _engine(app, runs=False) as engine:
        rows = engine.repository.versions(name)
    if not rows:
        raise GraphNotFound(f"no deployed graph {name!r} (deploy one: ionflux graph deploy FILE)")
    click.echo(f"{'#':>3}  {'VERSION':<10} {'DEPLOYED':<19}  {'CID':<60} MESSAGE")
    for index, v in enumerate(rows, 1):
        click.echo(
            f"{index:>3}  {v.version:<10} {_when(v.created_at):<19}  {v.cid:<60} {v.message}"
        )


@graph.command(name="run")
@click.argument("ref")
@click.option("--input", "input_text", help="JSON input; '-' reads standard input.")
@click.option("--input-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--mode", type=click.Choice(MODES), default="run_all", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@pass_app
def run_graph(
    app: App,
    ref: str,
    input_text: str | None,
    input_file: Path | None,
    mode: str,
    as_json: bool,
) -> None:
    """Run graph REF (a YAML file, a deployed name, name@version or a CID)."""
    value = _input(input_text, input_file)
    debugger = _prompt if mode == "step_through_debug" else None
    with _engine(app) as engine:
        result = asyncio.run(engine.run(ref, value, mode=cast(Mode, mode), debugger=debugger))
    _print_result(result, as_json)
    sys.exit(0 if result.ok else 1)


async def _prompt(pause: DebugPause) -> DebugAction:
    click.echo(f"\n-- next: {pause.node_id} [{pause.target}] (level {pause.level + 1})")
    if pause.approval_scope:
        click.echo(f"   approval scope: {pause.approval_scope}")
    click.echo("   inputs: " + json.dumps(pause.inputs, indent=2).replace("\n", "\n   "))
    answer = await asyncio.to_thread(
        click.prompt,
        "   [c]ontinue, [s]kip, [a]bort",
        type=click.Choice(["c", "s", "a", "continue", "skip", "abort"]),
        default="c",
        show_choices=False,
    )
    return cast(DebugAction, {"c": "continue", "s": "skip", "a": "abort"}.get(answer, answer))


def _input(text: str | None, file: Path | None) -> Any:
    if file is not None:
        text = file.read_text(encoding="utf-8")
    elif text == "-":
        text = sys.stdin.read()
    if text is None or not text.strip():
        return {}
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"--input is not JSON: {exc}") from None


def _print_result(result: RunResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    rows = []
    for step in result.steps:
        if step.status == "planned":
            detail = "inputs " + preview(step.inputs, 70)
            if step.reason:
                detail += f"  ({step.reason})"
        elif step.error:
            detail = str(step.error.get("message"))
        elif step.reason:
            detail = step.reason
        else:
            detail = preview(step.outputs, 70)
        rows.append((step.node_id, step.status, _secs(step.duration_s), str(step.attempts), detail))
    _table(("NODE", "STATUS", "DURATION", "TRIES", "OUTPUT / ERROR"), rows)
    if result.mode == "dry_run_validate_only":
        click.echo(f"\nscopes requested: {', '.join(result.requested_scopes) or '-'}")
        click.echo(f"scopes to ask:    {', '.join(result.scopes_to_ask) or '-'}")
    else:
        click.echo("\noutput: " + json.dumps(result.output, indent=2, default=str))
    for error in result.error_details or []:
        if "node_id" not in error:
            click.echo(f"error: {error.get('message')}")
    click.echo(
        f"status: {result.overall_status}  run: {result.execution_id}  "
        f"duration: {_secs(result.duration_s)}  fuel: {result.fuel_used}"
    )
    if result.step_results_summary_cid:
        click.echo(f"run log: {result.step_results_summary_cid}")
    if result.overall_status == "awaiting_approval":
        click.echo(
            "the run waits, recorded (awaiting_approval): once the consent is approved, a "
            f"serving host (`ionflux up`) resumes it, or `ionflux runs resume "
            f"{result.execution_id} --drive` runs it here"
        )


@click.group()
def runs() -> None:
    """Run history: list, show and re-run recorded runs."""


@runs.command(name="list")
@click.option("--graph", "graph_name", help="Only runs of this graph.")
@click.option("--status", help="Only runs with this status (success, failure, interrupted, …).")
@click.option("--limit", default=20, show_default=True)
@pass_app
def list_runs(app: App, graph_name: str | None, status: str | None, limit: int) -> None:
    """Recent runs, newest first."""
    with _engine(app, runs=False) as engine:
        rows = engine.history.list_runs(graph=graph_name, status=status, limit=limit)
    if not rows:
        click.echo("no runs recorded")
        return
    _table(
        ("RUN", "GRAPH", "STATUS", "STARTED", "DURATION", "TRIGGER", "MODE"),
        [
            (
                r.run_id,
                f"{r.graph_name}@{r.graph_version}",
                r.status,
                _when(r.start_time),
                _secs(r.duration_s),
                r.trigger_type,
                r.mode,
            )
            for r in rows
        ],
    )


@runs.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run and its steps as JSON.")
@pass_app
def show(app: App, run_id: str, as_json: bool) -> None:
    """One run and each of its steps."""
    with _engine(app, runs=False) as engine:
        run = engine.history.find(run_id)
        if run is None:
            raise GraphNotFound(f"no run {run_id!r} (see: ionflux runs list)")
        steps = engine.history.steps(run.run_id)
    if as_json:
        click.echo(json.dumps(_run_dict(run, steps), indent=2, default=str))
        return
    click.echo(f"run       {run.run_id}")
    click.echo(f"graph     {run.graph_name}@{run.graph_version}  {run.graph_cid}")
    click.echo(f"status    {run.status}   mode {run.mode}   trigger {run.trigger_type}")
    click.echo(
        f"started   {_when(run.start_time)}   ended {_when(run.end_time)}"
        f"   duration {_secs(run.duration_s)}   fuel {run.fuel_used}"
    )
    click.echo(f"input     {run.input_preview}" + _cid(run.input_cid))
    click.echo(f"output    {run.output_preview}" + _cid(run.output_cid))
    if run.step_results_summary_cid:
        click.echo(f"run log   {run.step_results_summary_cid}")
    if run.parent_run_id:
        click.echo(f"parent    {run.parent_run_id} (node {run.parent_node_id})")
    click.echo("")
    _table(
        ("NODE", "STATUS", "START", "END", "DURATION", "FUEL", "INPUTS", "OUTPUTS / ERROR"),
        [
            (
                s.node_id,
                f"{s.status} (cached)" if s.cached else s.status,
                _clock(s.start_time),
                _clock(s.end_time),
                _secs(s.duration_s),
                str(s.fuel_used),
                _short(s.inputs_preview, 40) + _cid(s.inputs_cid),
                (s.error_message or _short(s.outputs_preview, 60)) + _cid(s.outputs_cid),
            )
            for s in steps
        ],
    )
    for error in run.error_details or []:
        if "node_id" not in error:
            click.echo(f"error: {error.get('message')}")


@runs.command()
@click.argument("run_id")
@pass_app
def rerun(app: App, run_id: str) -> None:
    """Run a recorded run again: the same graph version and input."""
    with _engine(app) as engine:
        result = asyncio.run(engine.rerun(run_id))
    _print_result(result, False)
    sys.exit(0 if result.ok else 1)


def _control(
    app: App,
    action: Control,
    run_id: str,
    drive: bool,
    from_step: str | None = None,
    input_text: str | None = None,
) -> None:
    has_input = input_text is not None
    value = _input(input_text, None) if has_input else None
    with _engine(app) as engine:
        record = engine.control(
            run_id, action, by="owner (cli)", from_step=from_step, input=value, has_input=has_input
        )
        detail = f" from step {from_step}" if from_step else ""
        detail += " with an edited input" if has_input else ""
        audit_control(
            app.host.ionwall,
            run_id=record.run_id,
            graph=record.graph_name,
            graph_cid=record.graph_cid,
            action=action.value,
            by="owner (cli)",
            detail=detail,
        )
        click.echo(f"run {record.run_id}: {record.status}")
        if drive and record.status == "accepted":
            result = asyncio.run(engine.resume(record.run_id))
            if result is None:
                click.echo("another host drives it")
                return
            _print_result(result, False)
            sys.exit(0 if result.ok else 1)


@runs.command()
@click.argument("run_id")
@pass_app
def pause(app: App, run_id: str) -> None:
    """Pause a run: no new step starts, steps in flight end and are recorded."""
    _control(app, Control.PAUSE, run_id, False)


@runs.command(name="resume")
@click.argument("run_id")
@click.option("--drive", is_flag=True, help="Drive it here to its end, not on a serving host.")
@pass_app
def resume_run(app: App, run_id: str, drive: bool) -> None:
    """Resume a paused, waiting or needs_attention run from its first step not done."""
    _control(app, Control.RESUME, run_id, drive)


@runs.command()
@click.argument("run_id")
@pass_app
def cancel(app: App, run_id: str) -> None:
    """Cancel a run: steps in flight are stopped, the run ends cancelled."""
    _control(app, Control.CANCEL, run_id, False)


@runs.command()
@click.argument("run_id")
@click.option("--from-step", help="Node id (or its 1-based place) to run again from.")
@click.option("--input", "input_text", help="JSON input for that step (recorded).")
@click.option("--drive", is_flag=True, help="Drive it here to its end, not on a serving host.")
@pass_app
def retry(
    app: App, run_id: str, from_step: str | None, input_text: str | None, drive: bool
) -> None:
    """Retry a failed run from its failed step (or --from-step), keeping earlier outputs."""
    _control(app, Control.RETRY, run_id, drive, from_step, input_text)


def _run_dict(run: RunRecord, steps: list[StepRecord]) -> dict[str, Any]:
    from dataclasses import asdict

    return {**asdict(run), "steps": [asdict(s) for s in steps]}


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    widths[-1] = 0
    click.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _clock(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}"


def _short(text: str | None, width: int) -> str:
    if text is None:
        return "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def _cid(cid: str | None) -> str:
    return f" (cid {cid})" if cid else ""
