"""Operations: ``/healthz``, ``/metrics`` (Prometheus text) and ``/triggers``.

``/healthz`` answers everyone (load balancers, ``ionflux up``'s own checks).
``/metrics`` needs ``read_host:metrics`` unless ``http.metrics_public`` is set
(for a Prometheus scraper on the same machine: the figures name graphs and
nodes, so leave it off on an address others reach). ``/triggers`` needs
``read_host:triggers``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from ..triggers._metrics import CONTENT_TYPE
from ._context import ApiContext
from ._guard import needs, public


def ops_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["operations"])
    triggers = ctx.triggers

    @router.get(
        "/healthz",
        summary="Liveness and readiness: 503 while draining or off NATS",
        openapi_extra=public(),
    )
    def healthz() -> JSONResponse:
        bus = triggers.bus
        nats = None if bus is None else bus.connected
        draining = triggers.dispatcher.closing
        ok = not draining and nats is not False
        body = {
            "status": "ok" if ok else ("draining" if draining else "degraded"),
            "nats_connected": nats,
            "in_flight": triggers.dispatcher.slots.in_flight,
            "queue_depth": triggers.dispatcher.queue_depth(),
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
        openapi_extra=public() if ctx.http.metrics_public else needs("read_host:metrics"),
    )
    def metrics() -> Response:
        return Response(triggers.metrics.render(), media_type=CONTENT_TYPE)

    @router.get(
        "/triggers",
        summary="Triggers switched on, schedules and problems",
        openapi_extra=needs("read_host:triggers"),
    )
    def list_triggers() -> dict[str, Any]:
        return triggers.status()

    return router
