"""``ionflux db``: the state database of a cluster (``state.backend: postgres``).

``ionflux db migrate`` applies the schema migrations this host ships (the host's
own, then IONWALL's), as ``ionflux up`` does when it starts; ``ionflux db status``
says what version the database is at. With the SQLite backend there is nothing
to migrate (each file keeps its own schema) and both say so.
"""

from __future__ import annotations

import json

import click

from ._app import App, pass_app


def _url(app: App, url: str | None) -> str | None:
    if url:
        return url
    state = app.config.state
    return state.url if state.backend == "postgres" else None


@click.group()
def db() -> None:
    """The shared state database (state.backend: postgres)."""


@db.command()
@click.option("--url", help="postgresql://… (default: state.url of the configuration)")
@click.option("--to", "target", type=int, help="Stop at this schema version (the host's own).")
@pass_app
def migrate(app: App, url: str | None, target: int | None) -> None:
    """Apply the schema migrations the database lacks (the host's, then IONWALL's)."""
    from ionwall import migrate_postgres

    from ..state import latest_version
    from ..state import migrate as migrate_state

    where = _url(app, url)
    if where is None:
        click.echo("state.backend is sqlite: nothing to migrate (each file keeps its schema)")
        return
    done = migrate_state(where, target=target)
    for migration in done:
        click.echo(f"applied {migration.version:04d}_{migration.name}.sql")
    walled = [] if target is not None else migrate_postgres(where)
    for version in walled:
        click.echo(f"applied ionwall {version:04d}")
    if not done and not walled:
        click.echo(f"up to date (schema version {target or latest_version()})")


@db.command()
@click.option("--url", help="postgresql://… (default: state.url of the configuration)")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def status(app: App, url: str | None, as_json: bool) -> None:
    """The schema version of the database and what this host would apply."""
    from ..state import applied, latest_version

    where = _url(app, url)
    if where is None:
        click.echo("state.backend is sqlite: no shared database")
        return
    versions = [v for v, _, _ in applied(where)]
    current = max(versions, default=0)
    pending = [v for v in range(current + 1, latest_version() + 1)]
    if as_json:
        click.echo(json.dumps({"version": current, "latest": latest_version(), "pending": pending}))
        return
    click.echo(f"schema version {current} (this host ships {latest_version()})")
    if pending:
        click.echo(f"pending: {', '.join(f'{v:04d}' for v in pending)} (ionflux db migrate)")
