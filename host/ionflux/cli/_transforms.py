"""``ionflux publish``, ``transforms`` and ``invoke``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ._app import App, pass_app


@click.command()
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("module", required=False, type=click.Path(dir_okay=False, path_type=Path))
@pass_app
def publish(app: App, manifest: Path, module: Path | None) -> None:
    """Verify a module against its manifest's CID, store it and register it.

    MODULE defaults to the manifest's module.path.
    """
    published = app.host.publish(manifest, module)
    click.echo(f"published {published.name}@{published.version} {published.cid}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_app
def transforms(app: App, as_json: bool) -> None:
    """List published transforms."""
    rows = app.host.registry.list()
    if as_json:
        click.echo(json.dumps([t.summary() for t in rows], indent=2))
        return
    if not rows:
        click.echo("no transforms published yet (try: ionflux publish manifests/uppercase.yaml)")
        return
    click.echo(f"{'NAME':<16} {'VERSION':<9} {'ABI':<9} {'SIZE':>8}  {'CID':<60} SCOPES")
    for t in rows:
        click.echo(
            f"{t.name:<16} {t.version:<9} {t.abi:<9} {t.size:>8}  {t.cid:<60} "
            f"{', '.join(t.scopes) or '-'}"
        )


@click.command()
@click.argument("ref")
@click.option("--input", "input_text", help="JSON input; '-' reads standard input.")
@click.option("--input-file", type=click.File("r"), help="Read the JSON input from a file.")
@click.option("--stats", is_flag=True, help="Also print duration and fuel used on stderr.")
@pass_app
def invoke(
    app: App, ref: str, input_text: str | None, input_file: click.File | None, stats: bool
) -> None:
    """Run transform REF (name, name@version or CID) once, in a fresh sandbox."""
    if input_file is not None:
        text = input_file.read()  # type: ignore[attr-defined]
    elif input_text == "-":
        text = sys.stdin.read()
    else:
        text = input_text if input_text is not None else "{}"
    result = app.host.invoke(ref, text)
    for line in result.logs:
        click.echo(f"[{line.level}] {line.message}", err=True)
    click.echo(result.output)
    if stats:
        click.echo(
            f"{result.transform.name}@{result.transform.version}: "
            f"{result.duration_s * 1000:.2f} ms, fuel {result.fuel_used}",
            err=True,
        )
