"""Operations: ``/healthz``, ``/metrics`` (Prometheus text) and ``/triggers``.

``/healthz`` answers everyone (load balancers, ``ionflux up``'s own checks):
200 ``{"status": "ok"}``, or 503 with ``"draining"`` (a graceful stop) or
``"degraded"`` and ``components``, what is wrong and why (the host's
``Health``: the data disk full, NATS unreachable). 503 rather than 200 so a
load balancer or orchestrator sends traffic elsewhere while the host cannot
record what it accepts; the host keeps serving what still works, and turns
ok again by itself once the failing part succeeds. ``/metrics`` carries the
same as ``ionflux_healthy`` and ``ionflux_degraded{component}``.
``/metrics`` needs ``read_host:metrics`` unless ``http.metrics_public`` is set
(for a Prometheus scraper on the same machine: the figures name graphs and
nodes, so leave it off on an address others reach). ``/triggers`` needs
``read_host:triggers``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from ..triggers import METRICS_CONTENT_TYPE as CONTENT_TYPE
from ._context import ApiContext
from ._guard import needs, public


def ops_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["operations"])
    triggers = ctx.triggers
    health = ctx.host.health

    def degraded() -> dict[str, str]:
        """The host's degraded components, and NATS if its connection is down."""
        components = health.status()["components"]
        bus = triggers.bus
        if bus is not None and bus.connected is False:
            components.setdefault("nats", "not connected to nats-server")
        return components

    @router.get(
        "/healthz",
        summary="Liveness and readiness: 503 while draining or degraded (disk, NATS)",
        openapi_extra=public(),
    )
    def healthz() -> JSONResponse:
        bus = triggers.bus
        nats = None if bus is None else bus.connected
        draining = triggers.dispatcher.closing
        components = degraded()
        ok = not draining and not components
        body = {
            "status": "ok" if ok else ("draining" if draining else "degraded"),
            "components": components,
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
        triggers.metrics.observe_health(degraded())
        return Response(triggers.metrics.render(), media_type=CONTENT_TYPE)

    @router.get(
        "/triggers",
        summary="Triggers switched on, schedules and problems",
        openapi_extra=needs("read_host:triggers"),
    )
    def list_triggers() -> dict[str, Any]:
        return triggers.status()

    return router
