"""The web console ``ionflux up`` serves at ``/``: consent inbox, grants, audit,
live runs, step-through debugging, transforms and graphs, for the owner.

Server-rendered pages (Jinja2) with htmx and its SSE extension for the live
parts, all served by the host itself (``static/``, versions and licences in
``static/VENDORED.md``). ``mount(app, ctx)`` adds them to the host's app and
returns the ``Sessions`` the door asks for ``session()`` routes.

The security model, in one place:

- Nothing but the sign-in page and the static files answers without a
  session. A session comes from a one-time sign-in link (``ionflux up`` and
  ``ionflux console`` print one; it mints an IONWALL token with
  ``CONSOLE_SCOPES`` for the session's life, revoked at sign-out) or from a
  pasted IONWALL token.
- The session cookie is HttpOnly, SameSite=Strict, Secure over TLS; the token
  stays on the host. The door re-verifies the token on every request (a
  revoked token ends the session), refuses unsafe requests not from the
  console's own origin, and every form carries the session's CSRF token.
- The console adds no way around IONWALL: it reads and acts only through the
  HTTP API (``_api.Api``), in process, with the session's token, so it can do
  exactly what that token can do from any other client, audited the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._graph_api import Debugger, graph_api_router
from ._routes import console_router, root_router, static_router
from ._sessions import CONSOLE_SCOPES, Sessions, SigninCodes

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..http import ApiContext


def mount(app: FastAPI, ctx: ApiContext) -> Sessions:
    """Adds the console and its two API areas to ``app``; the door's ``SessionCheck``."""
    settings = ctx.host.config.console
    data_dir = ctx.host.config.data_dir

    def verify(authorization: str) -> object:
        if ctx.ionwall is None:
            raise PermissionError("no IONWALL on this host")
        return ctx.ionwall.verify_token(authorization.removeprefix("Bearer ").strip())

    sessions = Sessions(
        data_dir / "console",
        verify=verify,
        ttl_s=settings.session_ttl_s,
        max_sessions=settings.max_sessions,
    )
    debugger = Debugger(
        ctx, max_runs=settings.max_debug_runs, pause_timeout_s=settings.debug_pause_timeout_s
    )
    app.include_router(graph_api_router(ctx, debugger))
    app.include_router(console_router(ctx, sessions, settings))
    app.include_router(static_router())
    app.include_router(root_router())
    app.state.console_sessions = sessions
    return sessions


def signin_link(data_dir: object, url: str, ttl_s: float) -> str:
    """A new one-time sign-in link to the console served at ``url``."""
    from pathlib import Path

    code = SigninCodes(Path(str(data_dir)) / "console" / "signin").mint(ttl_s)
    return f"{url.rstrip('/')}/console/signin?code={code}"


__all__ = [
    "CONSOLE_SCOPES",
    "Debugger",
    "Sessions",
    "SigninCodes",
    "mount",
    "signin_link",
]
