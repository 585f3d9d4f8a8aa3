"""Webhook triggers: ``POST <path>`` of every deployed graph's ``webhook`` trigger.

The routes follow the deployed graphs: when a deploy changes the set of
paths, the webhook routes are replaced and the OpenAPI page rebuilt. Order of
checks, so that nothing runs for a refused call: the token, at the door before
the body is read (401 missing, bad, expired or forged; 403 a scope not
covering ``execute_graph:<graph>``; a graph whose trigger says
``authentication_method: none`` is open to anyone), the body's size (413),
then the body (422 for a body that is not JSON, nested past
``http.max_json_depth``, or that breaks the graph's ``input_schema``, naming
the field), then the run. A large body is parsed and checked off the event
loop. ``Prefer: respond-async`` answers ``202`` with the run id and a status
URL once the run is recorded (``accepted``, its input stored): a host that dies
after the 202 leaves it for the next host to resume. ``Idempotency-Key: <key>``
makes the request's run key: the same key again (on any host sharing the run
history) answers the run it started instead of starting another (202 with
its id; without ``Prefer``, its recorded result once it ended).
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from .. import _tracing
from ..triggers import RunRequest, WebhookTrigger, authorize, reply
from ._bodies import INLINE_BYTES, parse_json
from ._context import ApiContext
from ._errors import error_response
from ._guard import needs, public

TAG = "webhooks"


class WebhookRoutes:
    def __init__(self, app: FastAPI, ctx: ApiContext) -> None:
        self.app = app
        self.ctx = ctx
        ctx.triggers.on_webhooks_changed.append(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        routes = self.app.router.routes
        routes[:] = [r for r in routes if not (isinstance(r, APIRoute) and TAG in r.tags)]
        for hook in self.ctx.triggers.webhooks.values():
            self.app.add_api_route(
                hook.path,
                self._endpoint(hook),
                methods=[hook.method],
                tags=[TAG],
                name=f"webhook:{hook.graph}",
                summary=f"Run graph {hook.graph}",
                description=(
                    f"Runs graph `{hook.graph}` with the JSON body as `trigger.input_data`. "
                    "Needs `Authorization: Bearer <token>` with scope "
                    f"`execute_graph:{hook.graph}`. `Prefer: respond-async` answers 202 "
                    "with the run id and a status URL."
                ),
                openapi_extra={
                    **(
                        public(graph=hook.graph)
                        if hook.auth == "none"
                        else needs(f"execute_graph:{hook.graph}", graph=hook.graph)
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": self._schema(hook.graph)}},
                    },
                },
                responses={
                    202: {"description": "accepted (Prefer: respond-async)"},
                    401: {"description": "no valid token"},
                    403: {"description": "token does not cover the graph"},
                    422: {"description": "body not JSON or not the input schema"},
                },
            )
        self.app.openapi_schema = None

    def _schema(self, graph: str) -> dict[str, Any]:
        """The graph's ``input_schema``, so the OpenAPI page shows what to send."""
        plan = getattr(self.ctx.triggers.runner, "plan", None)
        try:
            schema = plan(graph).graph.input_schema if plan is not None else None
        except Exception:  # a graph that no longer loads: the page still renders
            schema = None
        return dict(schema) if schema else {"type": "object"}

    def _endpoint(self, hook: WebhookTrigger) -> Any:
        ctx = self.ctx

        async def webhook(request: Request) -> JSONResponse:
            return await handle(ctx, hook, request)

        return webhook


async def handle(ctx: ApiContext, hook: WebhookTrigger, request: Request) -> JSONResponse:
    """Continues the caller's trace (its ``traceparent`` header), if any."""
    with _tracing.trigger_span(
        f"webhook {hook.path}", request.headers, **{"ionflux.graph": hook.graph}
    ):
        return await _handle(ctx, hook, request)


async def _handle(ctx: ApiContext, hook: WebhookTrigger, request: Request) -> JSONResponse:
    triggers = ctx.triggers
    metrics = triggers.metrics
    try:
        claims = None
        if hook.auth == "ionwall_jwt":
            claims = authorize(ctx.ionwall, request.headers.get("authorization"), hook.graph)
        body = await request.body()
        check = getattr(triggers.runner, "check_input", None)
        if len(body) <= INLINE_BYTES:
            value = _checked(check, hook.graph, body, ctx.bodies.max_json_depth)
        else:
            value = await ctx.bodies.call(
                _checked, check, hook.graph, body, ctx.bodies.max_json_depth
            )
    except Exception as exc:
        metrics.runs_rejected.labels(hook.graph, str(getattr(exc, "kind", "error"))).inc()
        return error_response(exc)
    run = RunRequest(
        graph=hook.graph,
        input=value,
        trigger="webhook",
        completion_subject=triggers.completion_subject(hook.graph),
        details={
            "path": hook.path,
            "caller": getattr(claims, "subject", None),
            "remote": request.client.host if request.client else None,
        },
        run_key=_run_key(hook.graph, request.headers.get("idempotency-key")),
    )
    if "respond-async" in request.headers.get("prefer", "").lower():
        try:
            run_id = triggers.dispatcher.submit(run)
        except Exception as exc:
            return error_response(exc)
        url = str(request.url_for("run_status", run_id=run_id))
        return JSONResponse(
            {"run_id": run_id, "status": "accepted", "status_url": url},
            status_code=202,
            headers={"Location": url, "Preference-Applied": "respond-async"},
        )
    try:
        result = await triggers.dispatcher.run(run)
    except Exception as exc:
        return error_response(exc)
    return JSONResponse(reply(result, "webhook"), status_code=200)


def _checked(check: Any, graph: str, body: bytes, max_depth: int) -> Any:
    """The body as JSON, checked against the graph's ``input_schema``."""
    value = parse_json(body, max_depth)
    if check is not None:
        check(graph, value)
    return value


def _run_key(graph: str, key: str | None) -> str | None:
    """The run key of an ``Idempotency-Key`` header, per graph (hashed: any length)."""
    if not key:
        return None
    return f"http:{graph}:{hashlib.sha256(key.encode('utf-8', 'replace')).hexdigest()[:40]}"
