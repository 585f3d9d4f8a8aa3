"""Errors of the triggers (a branch of ``IonfluxError``, drawn in ``ionflux._errors``;
``TriggerError`` and ``BusUnavailable`` live there, below the bus that raises it).

    IonfluxError
    └── TriggerError                 a trigger that cannot be set up or served
        ├── BusUnavailable           NATS cannot be reached, or did not answer in time
        ├── TriggerConfigError       a graph's trigger block is invalid (names graph and field)
        ├── Unauthorized             a caller without a valid IONWALL token (HTTP 401)
        ├── RunRefused               a trigger event refused before its run (carries the
        │                            error completion event that was published)
        ├── ShuttingDown             the host is draining; no new runs (HTTP 503)
        └── Overloaded               too many runs already wait for a slot (HTTP 503)

``PermissionDenied`` (a valid token that does not cover the graph, HTTP 403)
is IONWALL's, raised unchanged.
"""

from __future__ import annotations

from typing import Any

from .._errors import BusUnavailable, IonfluxError, TriggerError

__all__ = [
    "BusUnavailable",
    "Overloaded",
    "RunRefused",
    "ShuttingDown",
    "TriggerConfigError",
    "TriggerError",
    "Unauthorized",
    "error_body",
    "http_status",
]


class TriggerConfigError(TriggerError):
    kind = "trigger_config"

    def __init__(self, graph: str, field: str, message: str):
        self.graph = graph
        self.field = field
        super().__init__(f"graph {graph!r}: {field}: {message}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "graph": self.graph, "field": self.field}


class Unauthorized(TriggerError):
    """No token, or one IONWALL refuses (malformed, forged, expired, revoked)."""

    kind = "unauthorized"

    def __init__(self, message: str, reason: str = "token_missing"):
        self.reason = reason
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "reason": self.reason}


class ShuttingDown(TriggerError):
    """The host is draining: no new runs start (HTTP 503; NATS: left for another host)."""

    kind = "shutting_down"


class RunRefused(TriggerError):
    """``cause`` stopped the run before it started (bad input, token, unknown graph).

    ``event`` is the error completion event already published for it; its
    ``execution_id`` is the one the caller is told.
    """

    def __init__(self, cause: BaseException, event: dict[str, Any]):
        self.cause = cause
        self.event = event
        self.kind = str(getattr(cause, "kind", "error"))
        self.status = http_status(cause)
        super().__init__(str(cause))

    def to_dict(self) -> dict[str, Any]:
        return {**error_body(self.cause), "execution_id": self.event.get("execution_id")}


class Overloaded(TriggerError):
    kind = "overloaded"


def http_status(exc: BaseException) -> int:
    """The HTTP status a trigger or API answers for ``exc`` (by its ``kind``)."""
    if isinstance(exc, RunRefused):
        return exc.status
    kind = getattr(exc, "kind", None)
    return _STATUS.get(str(kind), 500 if not isinstance(exc, IonfluxError) else 400)


def error_body(exc: BaseException) -> dict[str, Any]:
    """A serialisable payload for ``exc``; every error of ours and IONWALL's has ``to_dict``."""
    to_dict = getattr(exc, "to_dict", None)
    if callable(to_dict):
        body = to_dict()
        if isinstance(body, dict):
            if getattr(exc, "which", None) == "input" and "field" not in body:
                body["field"] = getattr(exc, "path", None)
            return body
    return {"kind": "internal", "message": f"{type(exc).__name__}: {exc}"}


_STATUS = {
    "unauthorized": 401,
    "token": 401,
    "token_invalid": 401,
    "token_expired": 401,
    "token_not_yet_valid": 401,
    "token_revoked": 401,
    "permission_denied": 403,
    "consent_required": 403,
    "invalid_input": 422,
    "schema_violation": 422,
    "graph_validation": 422,
    "manifest": 422,
    "trigger_config": 422,
    "invalid_scope": 422,
    "graph_not_found": 404,
    "unknown_transform": 404,
    "unknown_consent": 404,
    "unknown_grant": 404,
    "not_found": 404,
    "consent_already_answered": 409,
    "invalid_run_transition": 409,
    "cid_mismatch": 422,
    "module": 422,
    "not_wasm": 422,
    "import_outside_world": 422,
    "shutting_down": 503,
    "overloaded": 503,
    "bus_unavailable": 503,
    "run_not_recorded": 503,
    "audit_not_written": 503,
    "revocation_feed_lost": 503,  # a cluster host cut from IONWALL's feed: try another host
    "state_unavailable": 503,  # the shared state database (state.backend: postgres) is away
    "state_schema": 503,  # the database's schema is not this host's: migrate or upgrade
    "state_conflict": 409,
}
