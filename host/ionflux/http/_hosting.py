"""A whole running host in this event loop: NATS, IONWALL, engine, triggers, HTTP.

``ionflux up`` is ``start_host`` plus signal handling; tests and the
benchmark start the same thing in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ionwall import Ionwall

from ..bus import NatsBus
from ..config import Config
from ..graph import Engine
from ..host import Host, open_ionwall
from ..state import cluster_warnings
from ..triggers import (
    CountingAuthorizer,
    EngineRunner,
    Metrics,
    NatsServer,
    SharedScheduleState,
    TriggerService,
    credentials_for,
)
from ._app import create_app
from ._context import ApiContext
from ._server import HttpServer

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("ionflux.up")


@dataclass
class RunningHost:
    config: Config
    bus: NatsBus
    nats_url: str
    nats_server: NatsServer | None
    ionwall: Ionwall
    host: Host
    engine: Engine
    triggers: TriggerService
    app: FastAPI
    http: HttpServer | None
    _stack: contextlib.AsyncExitStack
    reactor: Any = None  # the ION Reactor (ionflux.reactor.Reactor)

    @property
    def url(self) -> str:
        if self.http is None:
            raise RuntimeError("this host serves no HTTP")
        return self.http.url

    async def drain(self, timeout: float = 30.0) -> int:
        return await self.triggers.drain(timeout)

    async def aclose(self, drain_timeout: float = 30.0) -> int:
        """Drains the runs in flight, then stops HTTP, NATS, the nats-server we started."""
        left = await self.drain(drain_timeout)
        if self.http is not None:
            await self.http.stop()
        await self._stack.aclose()
        return left


async def start_host(
    config: Config,
    *,
    require_token: bool = True,
    serve_http: bool = True,
    drain_timeout: float = 30.0,
    http_socket: socket.socket | None = None,
    schedules: bool = True,
) -> RunningHost:
    """Starts every part; on a failure midway the parts already started are stopped.

    ``http_socket``: serve on this listening socket (a worker of ``ionflux up
    --workers``) instead of binding ``config.http``; ``schedules``: run the
    scheduled triggers (only one process of a group of workers does)."""
    stack = contextlib.AsyncExitStack()
    triggers: TriggerService | None = None
    for warning in cluster_warnings(config):
        log.warning("%s", warning)
    try:
        if serve_http and http_socket is None:
            # The HTTP port first: a port in use fails here, before anything started.
            http_socket = HttpServer.listen(config.http.host, config.http.port)
            stack.callback(http_socket.close)
        server: NatsServer | None = None
        url = config.nats.url
        if url is None:
            server = NatsServer(config.data_dir / "nats")
            server.start()  # from this thread: the server dies with it (see NatsServer)
            stack.callback(server.stop)
            url = server.url
            watchdog = asyncio.get_running_loop().create_task(_watch_server(server))
            stack.callback(watchdog.cancel)
        # The server we started: its token; one given by nats.url: the configured
        # credentials (or, for a worker, the token of the server its group started).
        bus = await NatsBus.connect(
            url,
            name=f"ionflux-host:{config.data_dir.name}",
            credentials=server.credentials if server is not None else credentials_for(config),
        )
        stack.push_async_callback(bus.close)
        wall = open_ionwall(config)  # shared with the cluster when state.backend is postgres
        stack.callback(wall.close)
        host = Host(config, bus=bus, ionwall=wall)
        stack.callback(host.close)
        # Ports learnt only now (port 0, the nats-server we started): the http
        # import must not reach them on the host's own addresses either.
        if http_socket is not None:
            host.egress.add_own_port(http_socket.getsockname()[1])
        host.egress.add_own_port(urlsplit(url).port or 4222)
        metrics = Metrics()
        engine = Engine.for_host(host, authorizer=_authorizer(wall, metrics, host))
        stack.callback(engine.close)
        runner = EngineRunner(engine)
        triggers = TriggerService(
            runner,
            runner.deployed,
            bus=bus,
            concurrency=config.graph.concurrency,
            queue_group=config.nats.queue_group,
            verifier=wall,
            state_dir=config.data_dir,
            metrics=metrics,
            schedules=schedules,
            schedule_state=None
            if host.state is None
            else SharedScheduleState(host.state, f"{socket.gethostname()}:{os.getpid()}"),
        )
        await triggers.start()
        from ..reactor import Reactor

        reactor = await Reactor.serve(
            engine, config=config, wall=wall, triggers=triggers, bus=bus, health=schedules
        )
        stack.push_async_callback(reactor.aclose)
        ctx = ApiContext(
            host, engine, triggers, wall, require_token=require_token, http=config.http
        )
        ctx.reactor = reactor
        stack.callback(ctx.close)
        app = create_app(ctx)
        http: HttpServer | None = None
        if serve_http:
            http = HttpServer(
                app,
                config.http.host,
                config.http.port,
                limit_concurrency=max(64, config.graph.concurrency * 64),
                graceful_timeout_s=drain_timeout,
                sock=http_socket,
            )
            await http.start()
    except BaseException:
        if triggers is not None:  # its subscriptions, consumers and schedules
            with contextlib.suppress(Exception):
                await triggers.drain(0)
        await stack.aclose()
        raise
    running = RunningHost(config, bus, url, server, wall, host, engine, triggers, app, http, stack)
    running.reactor = reactor
    return running


async def _watch_server(server: NatsServer, every_s: float = 1.0) -> None:
    """Restarts the nats-server we started if it dies; JetStream keeps its streams."""
    while True:
        await asyncio.sleep(every_s)
        if server.exited:
            log.error("the nats-server we started died; starting it again on %s", server.url)
            try:
                server.restart()
            except Exception as exc:
                log.error("cannot restart nats-server: %s", exc)


def _authorizer(wall: Ionwall, metrics: Metrics, host: Host) -> Any:
    from ..graph import IonwallAuthorizer

    # Without a grant, IONWALL's no-grant gate: every import refused and audited.
    return CountingAuthorizer(IonwallAuthorizer(wall), metrics, host.gate or wall.gate(None))
