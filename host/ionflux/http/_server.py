"""uvicorn inside the host's event loop, on a socket we bind (port 0: a free one).

The host handles SIGINT/SIGTERM itself (to drain runs first), so uvicorn's
own signal capture is switched off.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from .._errors import ConfigError


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    def __init__(
        self,
        app: FastAPI,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limit_concurrency: int | None = None,
        graceful_timeout_s: float = 30.0,
        sock: socket.socket | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.limit_concurrency = limit_concurrency
        self.graceful_timeout_s = graceful_timeout_s
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        # A listening socket bound elsewhere (a worker's, shared with its parent).
        self.socket = sock

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> HttpServer:
        sock = self.socket or self._listen()
        self.socket = sock
        sock.setblocking(False)
        address = sock.getsockname()
        self.host, self.port = address[0], address[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            limit_concurrency=self.limit_concurrency,
            timeout_graceful_shutdown=int(self.graceful_timeout_s),
            backlog=2048,
        )
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise ConfigError("the HTTP server stopped at start")
            await asyncio.sleep(0.01)
        return self

    def _listen(self) -> socket.socket:
        return self.listen(self.host, self.port)

    @staticmethod
    def listen(host: str, port: int) -> socket.socket:
        """A listening socket on ``host:port``; ``ConfigError`` naming the port if taken."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(2048)
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                "(choose another with --http-port or http.port)"
            ) from exc
        return sock

    async def stop(self) -> None:
        """Stops accepting; requests in flight are answered first (graceful timeout)."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = None
        self._task = None
