"""The FastAPI app of a running host: management, operations, IONWALL, webhooks.

Every route declares who may call it (``_guard``); the door checks that and
the body's size before any route runs. ``/openapi.json`` and ``/docs`` answer
everyone, but the OpenAPI document lists the deployed graphs' webhooks (their
paths and input schemas) only for a token covering ``read_host:graphs``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse

from ._context import ApiContext
from ._errors import install_error_handlers
from ._guard import Door, SessionCheck, public
from ._management import management_router
from ._ops import ops_router
from ._reactor_routes import reactor_router
from ._webhooks import TAG as WEBHOOKS
from ._webhooks import WebhookRoutes

DESCRIPTION = """\
The IONFLUX host: untrusted WebAssembly transforms wired into graphs, gated by IONWALL.

Authenticate with `Authorization: Bearer <token>`; issue one with
`ionflux token issue --scope execute_graph:<graph> --expires 1h`. Every route
but `/healthz` needs one; `x-ionflux-access` on each operation names the scope.
Errors are JSON: `{"detail": {"kind": ..., "message": ..., "field": ...}}`.
"""


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="IONFLUX host",
        version="0.1.0",
        description=DESCRIPTION,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    install_error_handlers(app)
    app.include_router(ops_router(ctx))
    app.include_router(management_router(ctx))
    app.include_router(reactor_router(ctx))
    if ctx.ionwall is not None:
        from ._ionwall_routes import ionwall_router

        app.include_router(
            ionwall_router(ctx.ionwall, require_token=ctx.require_token, bodies=ctx.bodies)
        )
    _documentation(app, ctx)
    WebhookRoutes(app, ctx)
    sessions = _console(app, ctx)
    app.add_middleware(Door, ctx=ctx, router=app.router, sessions=sessions)
    return app


def _console(app: FastAPI, ctx: ApiContext) -> SessionCheck | None:
    """The web console at ``/`` (``ionflux.console``) on a host with IONWALL; its
    sessions are what the door asks for a ``session()`` route."""
    if ctx.ionwall is None:
        return None
    from ..console import mount

    return mount(app, ctx)


def openapi(app: FastAPI) -> dict[str, Any]:
    """The whole OpenAPI document, webhooks included (cached until they change)."""
    if app.openapi_schema is None:
        spec = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = spec.setdefault("components", {})
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (IONWALL)"}
        }
        app.openapi_schema = spec
    return app.openapi_schema


def _documentation(app: FastAPI, ctx: ApiContext) -> None:
    async def openapi_json(request: Request) -> JSONResponse:
        # Building it walks every route and model: tens of milliseconds, off the loop.
        spec = app.openapi_schema
        if spec is None:
            spec = await ctx.bodies.call(openapi, app)
        try:
            ctx.require(request, "read_host:graphs")
        except Exception:  # anyone: the API without the deployed graphs' webhooks
            spec = {
                **spec,
                "paths": {
                    path: ops
                    for path, ops in spec["paths"].items()
                    if not any(WEBHOOKS in op.get("tags", ()) for op in ops.values())
                },
            }
        return JSONResponse(spec)

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - API")

    app.add_api_route(
        "/openapi.json", openapi_json, include_in_schema=False, openapi_extra=public()
    )
    app.add_api_route("/docs", docs, include_in_schema=False, openapi_extra=public())
