"""Every error answer is JSON: ``{"detail": {"kind": …, "message": …, …}}``.

The shape is the one FastAPI and the IONWALL routes use. Statuses come from
the error's ``kind`` (``ionflux.triggers.http_status``): 401 no or bad token,
403 a token that does not cover the graph, 404 unknown graph/run/transform,
413 a body past its limit, 422 a body that is not JSON, nested too deep or
breaking the input schema (``field`` names the offending field), 503 the host
is draining. An error we did not foresee is 500 ``internal``: logged here,
and its Python type and text stay out of the answer.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .._errors import IonfluxError
from ..triggers import error_body, http_status

log = logging.getLogger("ionflux.http")

#: Kinds of the HTTP front door the triggers' table does not know.
_STATUS = {
    "body_too_large": 413,
    "json_too_deep": 422,
    # the ION Reactor's (ionflux.reactor)
    "plan_invalid": 422,
    "plan_not_found": 404,
    "agent_not_found": 404,
    "agent_definition_invalid": 422,
    "invalid_agent_transition": 409,
    "alert_rule_invalid": 422,
    "reactor_limit": 413,
}


def error_response(exc: BaseException) -> JSONResponse:
    kind = str(getattr(exc, "kind", ""))
    status = _STATUS.get(kind) or http_status(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "1"}
    body = error_body(exc)
    if status >= 500 and body.get("kind") == "internal":
        log.error("request failed", exc_info=exc)
        body = {"kind": "internal", "message": "internal error (the host's log has it)"}
    return JSONResponse({"detail": body}, status_code=status, headers=headers)


def validation_detail(errors: list[dict[str, Any]] | Any) -> dict[str, Any]:
    """The 422 body for a request that breaks its schema: the first problem, and all."""
    shown = [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in (errors or [])
    ]
    loc = [p for p in shown[0]["loc"] if p != "body"] if shown else []
    return {
        "kind": "invalid_input",
        "message": str(shown[0]["msg"]) if shown else "invalid",
        "field": ".".join(loc) or "(body)",
        "errors": shown,
    }


def install_error_handlers(app: FastAPI) -> None:
    async def ionflux_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"detail": validation_detail(exc.errors())}, status_code=422)

    async def unforeseen(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    app.add_exception_handler(IonfluxError, ionflux_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unforeseen)
    try:
        from ionwall import IonwallError
    except ImportError:  # pragma: no cover
        return
    app.add_exception_handler(IonwallError, ionflux_error)
