"""The host's message bus over NATS: one nats-py connection shared by the
triggers and by the ``bus`` import of guests.

nats-py is asyncio; guests call ``publish`` synchronously from sandbox worker
threads. ``NatsBus.publish`` bridges the two: it hands the publish to the
connection's event loop and waits (bounded) for it there. Every nats-py error
is translated here into ``BusUnavailable``, so no foreign exception reaches a
caller. The connection reconnects forever (a restarted nats-server is picked
up again); publishes made while it is away wait in nats-py's pending buffer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client

from ._errors import BusUnavailable, SubjectReserved
from .runtime import reserved_subject

log = logging.getLogger("ionflux.bus")

#: The file under a nats-server's store directory that holds its token.
TOKEN_FILE = "token"


@dataclass(frozen=True, slots=True)
class NatsCredentials:
    """How a client proves itself to NATS: a token, a user and password, or a
    ``.creds`` file (a NATS user JWT with its nkey seed). Empty: no credentials."""

    token: str | None = None
    user: str | None = None
    password: str | None = None
    credentials_file: Path | None = None

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``."""
        out: dict[str, Any] = {}
        if self.token:
            out["token"] = self.token
        if self.user:
            out["user"] = self.user
            out["password"] = self.password or ""
        if self.credentials_file is not None:
            out["user_credentials"] = str(self.credentials_file)
        return out

    def __bool__(self) -> bool:
        return bool(self.options())

    def __repr__(self) -> str:  # never the secret itself, in a log or a traceback
        shown = ", ".join(f"{k}=…" for k in self.options())
        return f"NatsCredentials({shown})"

    @classmethod
    def stored(cls, store_dir: Path) -> NatsCredentials:
        """The token of the nats-server a host started with this store directory
        (``<data_dir>/nats``); empty when there is none or it cannot be read."""
        try:
            token = (store_dir / TOKEN_FILE).read_text().strip()
        except OSError:
            return cls()
        return cls(token=token or None)


class _Refused(Exception):
    """The server refused our credentials at the first connect."""


class NatsBus:
    """The ``ionflux.runtime.Bus`` of a running host, plus the raw client for triggers."""

    def __init__(self, nc: Client, loop: asyncio.AbstractEventLoop, *, timeout: float = 5.0):
        self.nc = nc
        self.loop = loop
        self.timeout = timeout
        # Subjects of this deployment no guest may publish to (a graph's custom
        # completion topic), beside the ones every host reserves.
        self._reserved: frozenset[str] = frozenset()

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str = "ionflux-host",
        timeout: float = 5.0,
        credentials: NatsCredentials | None = None,
    ) -> NatsBus:
        async def disconnected() -> None:
            if not nc.is_closed and not nc.is_draining:
                log.warning("NATS connection lost; reconnecting to %s", url)

        async def reconnected() -> None:
            log.warning("NATS connection back (%s)", url)

        async def error(exc: Exception) -> None:
            log.debug("NATS: %s", exc)
            # Wrong or missing credentials at the first connect: nats-py would try
            # again forever and the host would hang silently; no retry can help.
            # (Raised here, the error ends nc.connect.)
            if nc.is_connecting and "authorization" in str(exc).lower():
                raise _Refused(str(exc)) from exc

        nc = Client()
        try:
            await nc.connect(
                url,
                name=name,
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,  # type: ignore[arg-type]  # a float works
                ping_interval=5,
                max_outstanding_pings=3,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
                **(credentials.options() if credentials else {}),
            )
        except _Refused as exc:
            await nc.close()
            raise BusUnavailable(
                f"NATS at {url} refused this host's credentials ({exc}): set nats.token, "
                "nats.user/nats.password or nats.credentials_file for an external server"
            ) from None
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise BusUnavailable(f"cannot connect to NATS at {url}: {exc}") from exc
        return cls(nc, asyncio.get_running_loop(), timeout=timeout)

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def apublish(
        self, subject: str, payload: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        try:
            await self.nc.publish(subject, payload, headers=dict(headers) if headers else None)
        except nats.errors.Error as exc:
            raise BusUnavailable(f"publish to {subject!r} failed: {exc}") from exc

    def reserve(self, subjects: Iterable[str]) -> None:
        """Sets the subjects of this deployment guests may never publish to
        (the deployed graphs' completion topics); replaces the previous set."""
        self._reserved = frozenset(subjects)

    def reserved(self, subject: str) -> str | None:
        """Why a guest may not publish to ``subject``, or None."""
        reason = reserved_subject(subject)
        if reason is None and subject in self._reserved:
            reason = f"{subject} is a graph's completion topic, published by the host only"
        return reason

    def publish(self, subject: str, payload: bytes) -> None:
        """Publishes from any thread; the guest's ``bus`` import calls this.
        Raises ``SubjectReserved`` for a subject the host keeps to itself."""
        reason = self.reserved(subject)
        if reason is not None:  # the import refused it already: a second lock
            raise SubjectReserved(subject, reason)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            # On the loop itself we cannot block on it: queue the publish.
            self.loop.create_task(self._publish_logged(subject, payload))
            return
        future = asyncio.run_coroutine_threadsafe(self.apublish(subject, payload), self.loop)
        try:
            future.result(self.timeout)
        except TimeoutError as exc:
            future.cancel()
            raise BusUnavailable(f"publish to {subject!r} timed out after {self.timeout}s") from exc

    async def _publish_logged(self, subject: str, payload: bytes) -> None:
        try:
            await self.apublish(subject, payload)
        except BusUnavailable as exc:
            log.warning("%s", exc)

    async def flush(self, timeout: float | None = None) -> None:
        try:
            await self.nc.flush(timeout=int(timeout or self.timeout))
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"NATS flush failed: {exc}") from exc

    async def close(self) -> None:
        """Sends what is buffered, then closes. (The triggers were drained before:
        ``nc.drain()`` would wait on JetStream pull subscriptions for its full timeout.)"""
        if self.nc.is_closed:
            return
        try:
            await self.nc.flush(timeout=2)
        except (nats.errors.Error, TimeoutError, OSError):
            pass
        try:
            await self.nc.close()
        except (nats.errors.Error, OSError, RuntimeError) as exc:
            # The server went away first (its transport is closed): nothing is
            # left to send, and the host's shutdown goes on.
            log.warning("NATS connection closed uncleanly: %s", exc)
