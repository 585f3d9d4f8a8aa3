"""Callers prove who they are with an IONWALL token: ``Authorization: Bearer <jwt>``.

IONWALL's ``verify_token`` is the only check; running graph ``g`` needs the
scope ``execute_graph:g``. A missing or malformed header is ``Unauthorized``;
IONWALL's own errors (``TokenInvalid``, ``TokenExpired``, ``TokenRevoked``,
``PermissionDenied``) pass through unchanged: their ``kind`` picks 401 or 403.
"""

from __future__ import annotations

from typing import Any, Protocol

from ._errors import Unauthorized


class TokenVerifier(Protocol):
    """``ionwall.Ionwall`` is one."""

    def verify_token(self, token: str, required_scope: str | None = None) -> Any: ...


def graph_scope(graph: str) -> str:
    return f"execute_graph:{graph}"


def bearer_token(header: str | None) -> str:
    if not header:
        raise Unauthorized(
            "missing Authorization header: send 'Authorization: Bearer <token>' with a token "
            "from `ionflux token issue --scope execute_graph:<graph>`",
            "token_missing",
        )
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be 'Bearer <token>'", "token_malformed")
    return token.strip()


def authorize(verifier: TokenVerifier | None, header: str | None, graph: str) -> Any:
    """The verified claims of the caller allowed to run ``graph``."""
    token = bearer_token(header)
    if verifier is None:
        raise Unauthorized("this host has no IONWALL to verify tokens with", "no_verifier")
    return verifier.verify_token(token, required_scope=graph_scope(graph))
