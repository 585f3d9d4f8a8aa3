"""Grants: what the owner allowed, to whom, until when, as a signed token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ._scope import Scope, covering, parse_scopes


class GrantKind(StrEnum):
    CONSENT = "consent"  # the owner approved a consent request
    POLICY = "policy"  # auto-approved: a trusted publisher
    TOKEN = "token"  # a caller token (`ionflux token issue`)


@dataclass(frozen=True, slots=True)
class Grant:
    id: str  # also the token's jti
    subject: str
    transform: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime
    token: str  # a JWT, EdDSA-signed with IONWALL's key
    kind: GrantKind = GrantKind.CONSENT
    consent_id: str | None = None
    revoked_at: datetime | None = None

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if now >= self.expires_at:
            return "expired"
        return "active"

    def covering(self, scope: Scope | str) -> Scope | None:
        """The granted scope that covers ``scope``, if any."""
        return covering(parse_scopes(self.scopes), scope)

    def to_dict(self, *, include_token: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "subject": self.subject,
            "transform": self.transform,
            "scopes": list(self.scopes),
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "kind": self.kind.value,
            "consent_id": self.consent_id,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }
        if include_token:
            out["token"] = self.token
        return out
