"""The HTTP API of the host (FastAPI routers, one module per area).

``create_app(ApiContext(host, engine, triggers, ionwall))`` builds the app
``ionflux up`` serves: ``_management`` (transforms, graphs, runs), ``_ops``
(healthz, metrics, triggers), ``_webhooks`` (the graphs' webhook triggers),
``_ionwall_routes`` (consents, grants, audit). In front of them all,
``_guard``'s door checks each route's declared access (the token) and the
body's size before a route reads a byte; ``_bodies`` parses what gets through
(JSON depth, large bodies and YAML on a small thread pool).
"""

from ._app import create_app
from ._context import ApiContext
from ._guard import SessionCheck, needs, needs_any, public, session
from ._hosting import RunningHost, start_host
from ._server import HttpServer

__all__ = [
    "ApiContext",
    "HttpServer",
    "RunningHost",
    "SessionCheck",
    "create_app",
    "needs",
    "needs_any",
    "public",
    "session",
    "start_host",
]
