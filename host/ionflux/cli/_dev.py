"""``ionflux dev cluster``: a whole cluster on this machine, for a developer.

One PostgreSQL (Debian's, ``initdb`` + ``pg_ctl`` in a temp directory as the
unprivileged ``postgres`` user, on a loopback port), one nats-server with
JetStream, one Kubo node, and N ``ionflux up`` hosts, each on a data directory
of its own (they share no file: only the three servers). Prints every URL,
then waits; Ctrl-C (or SIGTERM) stops the hosts (draining), then the servers.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import click

from ._app import App, pass_app


@click.group()
def dev() -> None:
    """Developer tools: a local cluster."""


@dev.command()
@click.option("--hosts", "count", default=3, show_default=True, type=click.IntRange(1, 16))
@click.option(
    "--dir",
    "root",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the servers and hosts keep their files (default: a new temp directory, "
    "removed at the end).",
)
@click.option(
    "--store",
    type=click.Choice(["kubo", "local"]),
    default="kubo",
    show_default=True,
    help="Blocks in one Kubo node (every host reads what any wrote), or each host's own "
    "directory (single machine: a host cannot run another's modules).",
)
@click.option("--ready-file", type=click.Path(path_type=Path, dir_okay=False), hidden=True)
@pass_app
def cluster(app: App, count: int, root: Path | None, store: str, ready_file: Path | None) -> None:
    """Start PostgreSQL, NATS (JetStream), Kubo and N hosts; print their URLs; Ctrl-C stops all."""
    from ..http.testing import UpProcess
    from ..testing.kubo import KuboDaemon, find_kubo
    from ..testing.postgres import PostgresServer
    from ..triggers import NatsServer

    own_root = root is None
    base = Path(tempfile.mkdtemp(prefix="ionflux-cluster-")) if root is None else root
    base.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    started: list[Any] = []
    try:
        click.echo(f"cluster files in {base}")
        postgres = PostgresServer()  # its own temp dir: the postgres user must own it
        started.append(postgres)
        postgres.start()
        url = postgres.create_database("ionflux")
        nats = NatsServer(base / "nats").start()
        started.append(nats)
        kubo_api = None
        if store == "kubo":
            binary = find_kubo()
            if binary is None:
                raise click.ClickException(
                    "no Kubo binary: run `just kubo` (scripts/install_kubo.sh), or --store local"
                )
            kubo = KuboDaemon(binary)
            started.append(kubo)
            kubo.start()
            kubo_api = kubo.api
        hosts = []
        for n in range(count):
            data = base / f"host{n + 1}"
            data.mkdir(parents=True, exist_ok=True)
            settings: dict[str, Any] = {
                "nats": {"url": nats.url, "token": nats.credentials.token},
                "state": {"backend": "postgres", "url": url},
            }
            if kubo_api is not None:
                settings["store"] = {"backend": "kubo", "kubo_api": kubo_api}
            (data / "ionflux.yaml").write_text(json.dumps(settings, indent=2) + "\n")
            host = UpProcess(data, nats_url=nats.url)
            started.append(host)
            hosts.append(host.start(timeout=60))
        lines = [
            f"postgresql  {url}",
            f"nats        {nats.url}  (token in {base / 'nats'})",
            f"kubo        {kubo_api or '(none: --store local, single machine)'}",
            *(f"host{n + 1}       {h.url}  --data-dir {h.data_dir}" for n, h in enumerate(hosts)),
            "",
            f"e.g.  ionflux --data-dir {hosts[0].data_dir} publish manifests/uppercase.yaml",
            f"      ionflux --data-dir {hosts[-1].data_dir} transforms",
            "Ctrl-C stops the hosts, then the servers.",
        ]
        click.echo("\n".join(lines))
        if ready_file is not None:
            ready_file.write_text(
                json.dumps(
                    {
                        "postgres": url,
                        "nats": nats.url,
                        "kubo": kubo_api,
                        "hosts": [
                            {
                                "url": h.url,
                                "data_dir": str(h.data_dir),
                                "pid": h.proc.pid if h.proc else None,
                            }
                            for h in hosts
                        ],
                    }
                )
            )
        while not stop.wait(0.5):
            for n, host in enumerate(hosts):
                if host.proc is not None and host.proc.poll() is not None:
                    click.echo(f"host{n + 1} exited ({host.proc.returncode}); see {host.log}")
                    stop.set()
    finally:
        click.echo("stopping…")
        for part in reversed(started):
            _stop(part)
        if own_root:
            shutil.rmtree(base, ignore_errors=True)


def _stop(part: Any) -> None:
    try:
        if hasattr(part, "terminate"):  # a host: drains
            part.terminate(30)
        elif hasattr(part, "cleanup"):  # Kubo
            part.cleanup()
        else:
            part.stop()
    except Exception as exc:
        click.echo(f"stopping {type(part).__name__}: {exc}", err=True)
