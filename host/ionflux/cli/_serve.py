"""``ionflux up``: the host as a long-running service.

1. NATS: ``--nats-url`` (or ``nats.url``) is used as given; without one a real
   ``nats-server`` with JetStream is started on a free loopback port, its data
   in ``<data-dir>/nats`` (its URL is written to ``<data-dir>/nats/url``), and
   stopped when the host exits.
2. The host, the graph engine (history and graph versions in the data
   directory) and IONWALL (``<data-dir>/ionwall``) are opened; guests' ``bus``
   import publishes over the same NATS connection.
3. The triggers of every deployed graph are switched on: NATS subjects (queue
   group ``nats.queue_group``, so several hosts share the work), JetStream
   durable consumers, webhooks, schedules.
4. The HTTP API is served with uvicorn on ``--http-host``/``--http-port``. The
   port is bound before anything else starts: one in use ends ``ionflux up`` at
   once with a one-line error naming it (exit code 1), nothing left running.
5. SIGINT or SIGTERM: triggers stop taking events, in-flight runs finish
   (up to ``--drain-timeout`` seconds), then HTTP, NATS and the nats-server stop.
   A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import _logging, _tracing
from ..config import Config
from ._app import App, pass_app

log = logging.getLogger("ionflux.up")


class _Workers(click.ParamType):  # type: ignore[type-arg]
    """``--workers``: 1 to 64, or ``auto``: one process per core this process may use."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        if value == "auto":
            return max(1, min(64, len(os.sched_getaffinity(0))))
        try:
            count = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a count nor 'auto'", param, ctx)
        if not 1 <= count <= 64:
            self.fail(f"{count} is not in 1..64", param, ctx)
        return count


_WORKERS = _Workers()


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Data directory (overrides the global --data-dir).",
)
@click.option("--http-host", default=None, help="Address to serve HTTP on (default 127.0.0.1).")
@click.option(
    "--http-port",
    type=int,
    default=None,
    help="HTTP port (default from config: 8620; 0 picks a free one).",
)
@click.option(
    "--nats-url",
    default=None,
    help="NATS to join (e.g. nats://127.0.0.1:4222). Default: start our own.",
)
@click.option(
    "--concurrency",
    type=int,
    default=None,
    help="Runs in flight at most (default graph.concurrency).",
)
@click.option(
    "--drain-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to let in-flight runs finish on Ctrl-C/SIGTERM.",
)
@click.option(
    "--workers",
    type=_WORKERS,
    default=None,
    help="Host processes serving together; auto: one per core "
    "(default http.workers: 1). See below.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log lines as text or JSON (with run_id, graph, node, grant_id); default log.format.",
)
@click.option("--worker-fd", type=int, default=None, hidden=True)
@click.option(
    "--no-auth-management",
    is_flag=True,
    hidden=True,
    help="Management routes without tokens (tests on loopback only).",
)
@pass_app
def up(
    app: App,
    data_dir: Path | None,
    http_host: str | None,
    http_port: int | None,
    nats_url: str | None,
    concurrency: int | None,
    drain_timeout: float,
    workers: int | None,
    log_format: str | None,
    worker_fd: int | None,
    no_auth_management: bool,
) -> None:
    """Serve: NATS and webhook triggers, schedules and the HTTP API.

    \b
      ionflux up                                   # own nats-server, HTTP on :8620
      ionflux up --nats-url nats://127.0.0.1:4222  # a second host on the same NATS
      ionflux up --workers 2                       # two processes, one socket
      ionflux up --workers auto                    # one process per core

    One host process is bound by its share of the GIL (and threads do not
    scale guest calls: each sandbox maps and protects memory in the one
    address space); --workers N starts N-1 more on the same HTTP socket and
    NATS queue group, sharing the data directory (schedules run in the first
    only).
    """
    if data_dir is not None:
        app.data_dir = data_dir
        vars(app).pop("config", None)
    config = configure(
        app.config,
        http_host=http_host,
        http_port=http_port,
        nats_url=nats_url,
        concurrency=concurrency,
        workers=workers,
        log_format=log_format,
    )
    app.require_writable(config.data_dir)  # a read-only data directory: one line, not a traceback
    _logging.configure(config.log.format, config.log.level)
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    if _tracing.setup(config.tracing):
        atexit.register(_tracing.shutdown)  # flushes the spans not sent yet
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            code = runner.run(
                serve(
                    config,
                    drain_timeout=drain_timeout,
                    require_token=not no_auth_management,
                    announce=None if worker_fd is not None else _announce,
                    worker_fd=worker_fd,
                )
            )
        except asyncio.CancelledError:  # a second signal: stopped without draining
            # Guest calls in flight trap at their next tick instead of running
            # on to their deadlines on threads the process must wait for.
            from ..runtime import cancel_all

            cancel_all()
            log.warning("stopped at once; runs in flight were not finished")
            code = 1
    sys.exit(code)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (faster NATS and HTTP I/O), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def configure(
    config: Config,
    *,
    http_host: str | None = None,
    http_port: int | None = None,
    nats_url: str | None = None,
    concurrency: int | None = None,
    workers: int | None = None,
    log_format: str | None = None,
) -> Config:
    given = {"host": http_host, "port": http_port, "workers": workers}
    http = config.http.model_copy(update={k: v for k, v in given.items() if v is not None})
    nats = config.nats.model_copy(update={"url": nats_url} if nats_url else {})
    graph = config.graph.model_copy(update={"concurrency": concurrency} if concurrency else {})
    logs = config.log.model_copy(update={"format": log_format} if log_format else {})
    return config.model_copy(update={"http": http, "nats": nats, "graph": graph, "log": logs})


def _announce(info: dict[str, Any]) -> None:
    click.echo(f"ionflux up: HTTP {info['http']}  (API docs {info['http']}/docs)")
    own = "  (started here)" if info["own_nats"] else ""
    click.echo(f"ionflux up: NATS {info['nats']}{own}")
    if info.get("workers", 1) > 1:
        click.echo(f"ionflux up: {info['workers']} worker processes on one socket")
    click.echo(f"ionflux up: {info['triggers']}; Ctrl-C drains and stops", err=False)
    if info.get("console"):
        click.echo(f"ionflux up: console {info['console']}  (one-time sign-in link)")
    sys.stdout.flush()


def _console_link(config: Config, url: str) -> str | None:
    """A one-time sign-in link to the console (``ionflux console`` makes more)."""
    from ..console import signin_link

    try:
        return signin_link(config.data_dir, url, config.console.signin_link_ttl_s)
    except OSError as exc:
        log.warning("no console sign-in link: %s", exc)
        return None


async def serve(
    config: Config,
    *,
    drain_timeout: float = 30.0,
    require_token: bool = True,
    announce: Callable[[dict[str, Any]], None] | None = None,
    stop: asyncio.Event | None = None,
    worker_fd: int | None = None,
) -> int:
    """Runs the host until ``stop`` is set or a SIGINT/SIGTERM; returns the exit code.

    ``worker_fd``: this process is a worker of another (``--workers``): it serves
    on that inherited listening socket and runs no schedules."""
    from ..http import start_host
    from ._workers import Workers, ready_file

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals: list[int] = []

    def on_signal(sig: int) -> None:
        # A worker gets the terminal's Ctrl-C with its whole process group and then
        # the first process's SIGTERM: for a worker only the same signal twice
        # means "stop at once".
        if worker_fd is not None and signals and sig not in signals:
            return
        signals.append(sig)
        if len(signals) == 1:
            log.warning("stopping: draining runs in flight (signal again to stop at once)")
            stop.set()
        else:
            log.warning("stopping at once")
            for task in asyncio.all_tasks(loop):
                if task is not asyncio.current_task():
                    task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)

    worker_socket = None if worker_fd is None else socket.socket(fileno=worker_fd)
    running = await start_host(
        config,
        require_token=require_token,
        drain_timeout=drain_timeout,
        http_socket=worker_socket,
        schedules=worker_fd is None,
    )
    workers: Workers | None = None
    # Everything made at start (modules, models, the app) lives as long as the
    # process: out of the collector's way, so a full collection walks only what
    # runs make, and a run does not wait for one that walks the whole heap.
    gc.freeze()
    try:
        if worker_fd is not None:
            ready = ready_file(config.data_dir / "workers", os.getpid())
            ready.write_text(running.url + "\n")
        elif config.http.workers > 1:
            assert running.http is not None and running.http.socket is not None
            workers = Workers(
                config,
                running.http.socket,
                running.nats_url,
                drain_timeout=drain_timeout,
                require_token=require_token,
                stopping=stop,
            )
            await workers.start()
        if worker_fd is None:
            # Where this host serves, for scripts and tests; once every worker serves.
            (config.data_dir / "http.url").write_text(running.url + "\n")
        status = running.triggers.status()
        if announce is not None:
            announce(
                {
                    "http": running.url,
                    "nats": running.nats_url,
                    "own_nats": running.nats_server is not None,
                    "triggers": f"{len(status['nats'])} NATS, {len(status['webhooks'])} webhook, "
                    f"{len(status['schedules'])} schedule trigger(s)",
                    "workers": config.http.workers,
                    "console": _console_link(config, running.url),
                }
            )
        await stop.wait()
    finally:
        if workers is not None:
            workers.signal_stop()
        left = await running.aclose(drain_timeout)
        if workers is not None:
            await workers.wait()
    if left:
        log.warning("%d run(s) did not finish within %.0fs", left, drain_timeout)
    return 0
