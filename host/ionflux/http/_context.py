"""What the HTTP routes share: the host, the engine, the triggers, IONWALL, the limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import HttpSettings
from ..triggers import Unauthorized
from ._bodies import Bodies

if TYPE_CHECKING:
    from fastapi import Request

    from ionwall import Ionwall

    from ..graph import Engine
    from ..host import Host
    from ..triggers import TriggerService


@dataclass
class ApiContext:
    host: Host
    engine: Engine
    triggers: TriggerService
    ionwall: Ionwall | None = None
    #: False only for a test host on loopback: routes then take no token.
    require_token: bool = True
    #: Body limits, JSON depth, /metrics without a token (``http`` in the config).
    http: HttpSettings = field(default_factory=HttpSettings)
    bodies: Bodies = field(init=False)
    #: The ION Reactor of a serving host (``ionflux.reactor.Reactor``), if any.
    reactor: Any = None

    def __post_init__(self) -> None:
        self.bodies = Bodies(
            max_json_depth=self.http.max_json_depth, threads=self.http.parse_threads
        )

    def authorize(self, header: str | None, scope: str | None) -> Any:
        """Claims of the caller whose token covers ``scope`` (any valid token for
        None); raises the 401/403 refusal. None when no token is required."""
        if not self.require_token:
            return None
        from ..triggers import bearer_token

        token = bearer_token(header)
        if self.ionwall is None:
            raise Unauthorized("this host has no IONWALL to verify tokens with", "no_verifier")
        return self.ionwall.verify_token(token, required_scope=scope)

    def require(self, request: Request, scope: str) -> Any:
        """``authorize`` for a route: the same check on the request's own token."""
        return self.authorize(request.headers.get("authorization"), scope)

    def close(self) -> None:
        self.bodies.close()
