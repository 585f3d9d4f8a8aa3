"""What the HTTP routes share: the host, the engine, the triggers and IONWALL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..triggers import TriggerService, authorize

if TYPE_CHECKING:
    from ionwall import Ionwall

    from ..graph import Engine
    from ..host import Host


@dataclass
class ApiContext:
    host: Host
    engine: Engine
    triggers: TriggerService
    ionwall: Ionwall | None = None
    #: False only for a test host on loopback: management routes then take no token.
    require_token: bool = True

    def authorize(self, header: str | None, scope: str) -> Any:
        """Claims of the caller whose token covers ``scope`` (401/403 otherwise)."""
        if not self.require_token:
            return None
        from ..triggers import bearer_token

        token = bearer_token(header)
        if self.ionwall is None:
            return authorize(None, header, scope)
        return self.ionwall.verify_token(token, required_scope=scope)
