"""Console sessions: one-time sign-in codes, session cookies, CSRF tokens.

A session is a row of ``<data-dir>/console/sessions.sqlite3`` (shared by the
workers of one host): the SHA-256 of its cookie, the IONWALL token it acts
with, its CSRF token and its expiry. The browser holds only the cookie
(HttpOnly, SameSite=Strict, Secure over TLS); the token never reaches it. The
door admits a console page when the cookie names a live session *and*
IONWALL still verifies its token (a revoked token ends the session at once),
and, for anything but GET/HEAD, when the request comes from the console's own
origin (``Sec-Fetch-Site``/``Origin``); the page then checks the form's CSRF
token against the session's.

One-time sign-in codes are files ``<data-dir>/console/signin/<sha256>``
holding their expiry: ``ionflux up`` and ``ionflux console`` write one and
print its link; the first sign-in with it removes the file (``unlink`` is
atomic, so two workers cannot both take it).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from .._errors import CrossSiteRequest, SessionLimitReached
from ..triggers import Unauthorized

COOKIE = "ionflux_console"
SIGNIN_COOKIE = "ionflux_signin"
#: The IONWALL scopes a session signed in by a one-time link acts with.
CONSOLE_SCOPES = (
    "manage_ionwall:*",
    "execute_graph:*",
    "control_run:*",
    "read_host:*",
    "manage_agent_lifecycle:*",
    "execute_master_plan:*",
)
_SAFE = frozenset({"GET", "HEAD"})
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    key TEXT PRIMARY KEY,      -- sha256 of the cookie
    token TEXT NOT NULL,       -- the IONWALL token the session acts with
    token_id TEXT,             -- its grant id when the session minted it (revoked at sign-out)
    csrf TEXT NOT NULL,
    subject TEXT,
    created REAL NOT NULL,
    expires REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Session:
    key: str
    token: str
    token_id: str | None
    csrf: str
    subject: str | None
    expires: float

    @property
    def authorization(self) -> str:
        return f"Bearer {self.token}"

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given, self.csrf)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class SigninCodes:
    """One-time sign-in codes, as files in ``directory`` (shared by a host's workers)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def mint(self, ttl_s: float) -> str:
        """A new code, valid once for ``ttl_s`` seconds."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        code = secrets.token_urlsafe(24)
        path = self.directory / _digest(code)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"{time.time() + ttl_s}\n")
        self._sweep()
        return code

    def take(self, code: str) -> bool:
        """True once for a live code; it is gone afterwards."""
        if not code or len(code) > 128:
            return False
        path = self.directory / _digest(code)
        try:
            expires = float(path.read_text().strip() or 0)
            path.unlink()
        except (OSError, ValueError):
            return False  # unknown, or another worker took it first
        return expires > time.time()

    def _sweep(self) -> None:
        now = time.time()
        for path in self.directory.iterdir():
            try:
                if float(path.read_text().strip() or 0) <= now:
                    path.unlink()
            except (OSError, ValueError):
                continue


class Sessions:
    """The console's sessions (the door's ``SessionCheck``)."""

    def __init__(
        self,
        directory: Path,
        *,
        verify: Any,
        ttl_s: float,
        max_sessions: int,
    ) -> None:
        """``verify(authorization)``: IONWALL's check of a session's token (raises)."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.verify = verify
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.codes = SigninCodes(directory / "signin")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            directory / "sessions.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- sessions ------------------------------------------------------------------

    def create(self, token: str, *, token_id: str | None, subject: str | None) -> str:
        """A new session acting with ``token``; returns the cookie's value."""
        cookie = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE expires <= ?", (now,))
            (count,) = self._db.execute("SELECT count(*) FROM sessions").fetchone()
            if count >= self.max_sessions:
                raise SessionLimitReached(self.max_sessions)
            self._db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    _digest(cookie),
                    token,
                    token_id,
                    secrets.token_urlsafe(32),
                    subject,
                    now,
                    now + self.ttl_s,
                ),
            )
        return cookie

    def get(self, cookie: str | None) -> Session | None:
        if not cookie or len(cookie) > 128:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT key, token, token_id, csrf, subject, expires FROM sessions "
                "WHERE key = ? AND expires > ?",
                (_digest(cookie), time.time()),
            ).fetchone()
        return None if row is None else Session(*row)

    def end(self, session: Session) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE key = ?", (session.key,))

    # -- the door's SessionCheck -----------------------------------------------------

    def admit(self, scope: Any, headers: dict[bytes, bytes]) -> Session:
        session = self.get(_cookie(headers, COOKIE))
        if session is None:
            raise Unauthorized("sign in to the console first", "no_session")
        try:
            self.verify(session.authorization)
        except Exception as exc:  # revoked or expired: the session is over
            self.end(session)
            raise Unauthorized(
                f"the console session's token no longer holds: {exc}", "revoked"
            ) from None
        if str(scope.get("method")) not in _SAFE:
            same_origin(headers)
        return session

    def refusal(self, exc: BaseException, scope: Any) -> Response:
        if isinstance(exc, CrossSiteRequest):
            return PlainTextResponse(str(exc), status_code=403)
        method = str(scope.get("method"))
        accept = _headers_of(scope).get(b"accept", b"").decode("latin-1")
        if method in _SAFE and "text/html" in accept:
            return RedirectResponse("/console/signin", status_code=303)
        return JSONResponse(
            {"detail": {"kind": "unauthorized", "message": str(exc)}},
            status_code=401,
        )


def same_origin(headers: dict[bytes, bytes]) -> None:
    """Raises ``CrossSiteRequest`` unless the request comes from the console's own
    origin: ``Sec-Fetch-Site`` (every current browser sends it) must say
    ``same-origin``; without it, ``Origin`` (or ``Referer``) must name this host."""
    site = headers.get(b"sec-fetch-site")
    if site is not None:
        if site != b"same-origin":
            raise CrossSiteRequest(f"Sec-Fetch-Site: {site.decode('latin-1')}")
        return
    host = headers.get(b"host", b"").decode("latin-1")
    origin = headers.get(b"origin") or headers.get(b"referer")
    if origin is None:
        raise CrossSiteRequest("neither Sec-Fetch-Site nor Origin was sent")
    text = origin.decode("latin-1")
    authority = text.split("://", 1)[-1].split("/", 1)[0]
    if authority != host:
        raise CrossSiteRequest(f"Origin {text}")


def _cookie(headers: dict[bytes, bytes], name: str) -> str | None:
    raw = headers.get(b"cookie")
    if raw is None:
        return None
    for part in raw.decode("latin-1").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _headers_of(scope: Any) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", ())}


__all__ = ["CONSOLE_SCOPES", "COOKIE", "Session", "Sessions", "SigninCodes", "same_origin"]
