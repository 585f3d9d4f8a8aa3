"""The FastAPI app of a running host: management, operations, IONWALL, webhooks."""

from __future__ import annotations

from fastapi import FastAPI

from ._context import ApiContext
from ._errors import install_error_handlers
from ._management import management_router
from ._ops import ops_router
from ._webhooks import WebhookRoutes

DESCRIPTION = """\
The IONFLUX host: untrusted WebAssembly transforms wired into graphs, gated by IONWALL.

Authenticate with `Authorization: Bearer <token>`; issue one with
`ionflux token issue --scope execute_graph:<graph> --expires 1h`.
Errors are JSON: `{"detail": {"kind": ..., "message": ..., "field": ...}}`.
"""


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="IONFLUX host", version="0.1.0", description=DESCRIPTION)
    app.state.ctx = ctx
    install_error_handlers(app)
    app.include_router(ops_router(ctx))
    app.include_router(management_router(ctx))
    if ctx.ionwall is not None:
        from ._ionwall_routes import ionwall_router

        app.include_router(ionwall_router(ctx.ionwall, require_token=ctx.require_token))
    WebhookRoutes(app, ctx)
    return app
