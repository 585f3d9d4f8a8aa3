"""The ``ionflux`` command line.

Each command group lives in a module of its own; this module only assembles
them and turns every ``IonfluxError`` (and ``IonwallError``), and every
``OSError`` or SQLite error (a full disk, a read-only data directory), into one
line on stderr and exit code 1.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

import click

from ionwall import IonwallError

from .. import IonfluxError
from ._app import App, error_line, pass_app
from ._demo import demo
from ._pod import pod
from ._transforms import invoke, publish, transforms


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (IonfluxError, IonwallError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except (OSError, sqlite3.Error) as exc:
            # A full disk, a read-only data directory, a permission: one line, as above.
            line = error_line(exc, ctx.find_object(App))
            if line is None:
                raise
            click.echo(f"error: {line}", err=True)
            sys.exit(1)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="IONFLUX_CONFIG",
    help="Configuration file (YAML). Default: <data-dir>/ionflux.yaml if it exists.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="IONFLUX_DATA_DIR",
    help="Where the store, registry, grants and run history live. Default: ~/.ionflux",
)
@click.version_option(package_name="ionflux-host")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, data_dir: Path | None) -> None:
    """IONFLUX host: run untrusted WebAssembly transforms, gated by IONWALL.

    \b
    Start here:
      ionflux publish manifests/uppercase.yaml
      ionflux transforms
      ionflux invoke uppercase --input '{"text": "hello"}'
    """
    app = ctx.obj = App(config_path=config_path, data_dir=data_dir)
    ctx.call_on_close(app.close)


for command in (publish, transforms, invoke, demo, pod):
    main.add_command(command)

__all__ = ["App", "main", "pass_app"]

from ._ionwall import commands as _ionwall_commands  # noqa: E402

for command in _ionwall_commands:
    main.add_command(command)

from ._graph import graph as _graph_group  # noqa: E402
from ._graph import runs as _runs_group  # noqa: E402

main.add_command(_graph_group)
main.add_command(_runs_group)

from ._serve import up as _up  # noqa: E402

main.add_command(_up)

from ._db import db as _db_group  # noqa: E402

main.add_command(_db_group)

from ._console import console as _console  # noqa: E402

main.add_command(_console)

from ._agent import agent as _agent_group  # noqa: E402
from ._plan import plan as _plan_group  # noqa: E402

main.add_command(_plan_group)
main.add_command(_agent_group)

from ._dev import dev as _dev_group  # noqa: E402

main.add_command(_dev_group)

from ._new import commands as _guest_commands  # noqa: E402

for command in _guest_commands:
    main.add_command(command)
