"""Every error answer is JSON: ``{"detail": {"kind": …, "message": …, …}}``.

The shape is the one FastAPI and the IONWALL routes use. Statuses come from
the error's ``kind`` (``ionflux.triggers.http_status``): 401 no or bad token,
403 a token that does not cover the graph, 404 unknown graph/run/transform,
422 a body that is not JSON or breaks the input schema (``field`` names the
offending field), 503 the host is draining.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .._errors import IonfluxError
from ..triggers import error_body, http_status


def error_response(exc: BaseException) -> JSONResponse:
    status = http_status(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "1"}
    return JSONResponse({"detail": error_body(exc)}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def ionflux_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        return JSONResponse(
            {
                "detail": {
                    "kind": "invalid_input",
                    "message": str(first.get("msg", "invalid")),
                    "field": ".".join(loc) or "(body)",
                    "errors": exc.errors(),
                }
            },
            status_code=422,
        )

    app.add_exception_handler(IonfluxError, ionflux_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    try:
        from ionwall import IonwallError
    except ImportError:  # pragma: no cover
        return
    app.add_exception_handler(IonwallError, ionflux_error)
