"""``ionflux pod``: put, get, pin and move content in IONPOD from the shell."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import click

from .. import IonfluxError
from ..config import Config, load_config
from ..store import Pod, open_pod
from ._app import App, error_line


class _PodGroup(click.Group):
    # The main group does this too; doing it here keeps `pod` right when used alone.
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IonfluxError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except (OSError, sqlite3.Error) as exc:
            line = error_line(exc, ctx.find_object(App))
            if line is None:
                raise
            click.echo(f"error: {line}", err=True)
            sys.exit(1)


def _config(ctx: click.Context) -> Config:
    app = ctx.find_root().obj
    config = getattr(app, "config", None)  # the main group's App honours --config/--data-dir
    return config if isinstance(config, Config) else load_config()


@contextlib.contextmanager
def _pod(ctx: click.Context) -> Iterator[Pod]:
    with open_pod(_config(ctx)) as pod:
        yield pod


@click.group(cls=_PodGroup)
def pod() -> None:
    """Content-addressed storage (IONPOD): files, pins and CAR archives.

    \b
      ionflux pod put report.json        # prints its CID (the one `ipfs add` gives)
      ionflux pod get <cid> -o copy.json
      ionflux pod export <cid> -o report.car
    """


@pod.command()
@click.argument("file", type=click.File("rb"))
@click.option("--pin", is_flag=True, help="Pin the content after storing it.")
@click.pass_context
def put(ctx: click.Context, file: BinaryIO, pin: bool) -> None:
    """Store FILE (or - for stdin) and print its CID."""
    with _pod(ctx) as p:
        cid = p.put_stream(file)
        if pin:
            p.pin(cid)
    click.echo(cid)


@pod.command()
@click.argument("cid")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout."
)
@click.option("--max-size", type=int, help="Refuse content larger than this many bytes.")
@click.pass_context
def get(ctx: click.Context, cid: str, output: Path | None, max_size: int | None) -> None:
    """Write the file CID to stdout or -o FILE (every block verified on the way)."""
    with _pod(ctx) as p:
        chunks = p.iter_bytes(cid, max_size)
        if output is None:
            out = sys.stdout.buffer
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            return
        # Write beside the target and rename, so a failed get leaves no partial file.
        fd, tmp = tempfile.mkstemp(dir=output.resolve().parent, prefix=f".{output.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
            os.replace(tmp, output)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


@pod.command()
@click.option("--paths", "show_paths", is_flag=True, help="List bound paths instead of pins.")
@click.argument("prefix", default="")
@click.pass_context
def ls(ctx: click.Context, show_paths: bool, prefix: str) -> None:
    """List pinned CIDs, or with --paths the bound paths (under PREFIX)."""
    with _pod(ctx) as p:
        if show_paths:
            for path, cid in p.list(prefix).items():
                click.echo(f"{path}\t{cid}")
        else:
            for cid in p.pins():
                click.echo(cid)


@pod.command(name="pin")
@click.argument("cid")
@click.pass_context
def pin_(ctx: click.Context, cid: str) -> None:
    """Pin CID so it is kept."""
    with _pod(ctx) as p:
        p.pin(cid)
    click.echo(f"pinned {cid}")


@pod.command()
@click.argument("cid")
@click.pass_context
def unpin(ctx: click.Context, cid: str) -> None:
    """Unpin CID."""
    with _pod(ctx) as p:
        p.unpin(cid)
    click.echo(f"unpinned {cid}")


@pod.command(name="export")
@click.argument("cid")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def export_(ctx: click.Context, cid: str, output: Path) -> None:
    """Write the DAG under CID as a CARv1 archive."""
    with _pod(ctx) as p:
        fd, tmp = tempfile.mkstemp(dir=output.resolve().parent, prefix=f".{output.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                p.export_car(cid, f)
            os.replace(tmp, output)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    click.echo(f"exported {cid} to {output}")


@pod.command(name="import")
@click.argument("car", type=click.File("rb"))
@click.option("--pin", is_flag=True, help="Pin the archive's roots.")
@click.pass_context
def import_(ctx: click.Context, car: BinaryIO, pin: bool) -> None:
    """Import a CARv1 archive (every block verified first) and print its roots."""
    with _pod(ctx) as p:
        for root in p.import_car(car, pin=pin):
            click.echo(root)
