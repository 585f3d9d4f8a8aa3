"""Tokens: JWTs signed EdDSA (Ed25519) with IONWALL's key.

Claims: ``iss`` ("ionwall"), ``sub`` (a module CID, or who a caller token is
for), ``scopes`` (a list of scope strings), ``iat``, ``nbf``, ``exp`` and
``jti`` (the grant id: revoking the grant revokes the token). The header
carries ``kid``, the fingerprint of the signing key.

``verify_token`` is the one check every caller (the HTTP and NATS triggers,
the IONWALL routes) goes through. It refuses, each with its own error: a token
that does not parse, any ``alg`` but EdDSA (``none`` included), a signature
by another key, a missing claim, an expired or not-yet-valid token, a revoked
one, and, when ``required_scope`` is given, a token whose scopes do not cover
it (``PermissionDenied``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ._errors import (
    PermissionDenied,
    ScopeError,
    TokenExpired,
    TokenInvalid,
    TokenNotYetValid,
    TokenRevoked,
)
from ._keys import key_id
from ._scope import covering, parse_scope, parse_scopes

ISSUER = "ionwall"
ALGORITHM = "EdDSA"
_REQUIRED = ("iss", "sub", "scopes", "iat", "nbf", "exp", "jti")

#: Verified tokens an IONWALL remembers (then it forgets them all and starts over).
VERIFIED_KEPT = 4096

#: Given a token id, the reason it is revoked, or None when it is not.
RevocationCheck = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says."""

    subject: str
    scopes: tuple[str, ...]
    token_id: str
    issued_at: datetime
    not_before: datetime
    expires_at: datetime
    issuer: str = ISSUER

    def covers(self, scope: str) -> bool:
        return covering(parse_scopes(self.scopes), scope) is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "scopes": list(self.scopes),
            "token_id": self.token_id,
            "issued_at": self.issued_at.isoformat(),
            "not_before": self.not_before.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "issuer": self.issuer,
        }


def issue_token(
    key: Ed25519PrivateKey,
    subject: str,
    scopes: Sequence[str],
    expires_in: timedelta,
    *,
    token_id: str,
    now: float | None = None,
) -> str:
    """Signs a token for ``subject`` holding ``scopes`` (each must parse)."""
    parsed = parse_scopes(scopes)
    issued = int(time.time() if now is None else now)
    payload = {
        "iss": ISSUER,
        "sub": subject,
        "scopes": [str(s) for s in parsed],
        "iat": issued,
        "nbf": issued,
        "exp": issued + max(1, int(expires_in.total_seconds())),
        "jti": token_id,
    }
    return jwt.encode(payload, key, algorithm=ALGORITHM, headers={"kid": key_id(key.public_key())})


def verify_token(
    token: str,
    *,
    public_key: Ed25519PublicKey,
    required_scope: str | None = None,
    is_revoked: RevocationCheck | None = None,
    now: float | None = None,
    verified: MutableMapping[str, Claims] | None = None,
    key_for: Callable[[str], Ed25519PublicKey | None] | None = None,
) -> Claims:
    """The claims of ``token``, or the precise reason it must be refused.

    ``verified`` remembers tokens whose signature and claims already checked out
    (keyed by the whole token, so no other token can hit it); their times,
    revocation and scope are checked on every call. ``key_for(kid)``: on a
    cluster, the key another host published; a token whose ``kid`` is not
    ``public_key``'s is checked against it (none: ``TokenInvalid``)."""
    claims = verified.get(token) if verified is not None else None
    if claims is None:
        claims = _verified_claims(token, public_key, key_for)
        if verified is not None:
            if len(verified) >= VERIFIED_KEPT:
                verified.clear()
            verified[token] = claims
    current = time.time() if now is None else now
    return _check_claims(claims, current, is_revoked, required_scope)


def _verified_claims(
    token: str,
    public_key: Ed25519PublicKey,
    key_for: Callable[[str], Ed25519PublicKey | None] | None = None,
) -> Claims:
    """The claims of a token whose header, signature and claims check out."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenInvalid(f"not a token: {exc}") from exc
    kid = header.get("kid")
    if key_for is not None and isinstance(kid, str) and kid != key_id(public_key):
        found = key_for(kid)
        if found is None:
            raise TokenInvalid(
                f"signed with key {kid}, which no host of this cluster published "
                "(forged, or issued by another IONWALL)"
            )
        public_key = found
    alg = header.get("alg")
    if alg != ALGORITHM:
        if isinstance(alg, str) and alg.lower() == "none":
            raise TokenInvalid("unsigned token (alg none) refused: IONWALL tokens are EdDSA")
        raise TokenInvalid(f"token algorithm {alg!r} refused: IONWALL tokens are EdDSA (Ed25519)")
    try:
        payload = jwt.decode(
            token,
            public_key,
            algorithms=[ALGORITHM],
            # Time is checked below against our own clock, with precise errors.
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_iss": False,
                "verify_aud": False,
            },
        )
    except jwt.InvalidSignatureError as exc:
        raise TokenInvalid(
            "signature does not verify: the token was not issued by this IONWALL "
            "(forged, altered or signed with another key)"
        ) from exc
    except jwt.PyJWTError as exc:
        raise TokenInvalid(f"token refused: {exc}") from exc
    return _claims(payload)


def _check_claims(
    claims: Claims,
    current: float,
    is_revoked: RevocationCheck | None,
    required_scope: str | None,
) -> Claims:
    if current >= claims.expires_at.timestamp():
        raise TokenExpired(f"token {claims.token_id} expired at {claims.expires_at.isoformat()}")
    if current < claims.not_before.timestamp():
        raise TokenNotYetValid(
            f"token {claims.token_id} is not valid before {claims.not_before.isoformat()}"
        )
    if is_revoked is not None:
        reason = is_revoked(claims.token_id)
        if reason is not None:
            raise TokenRevoked(f"token {claims.token_id} is revoked: {reason}")
    if required_scope is not None:
        parse_scope(required_scope)  # a bad required scope is the caller's bug: ScopeError
        if not claims.covers(required_scope):
            raise PermissionDenied(
                required_scope,
                f"token {claims.token_id} grants only {', '.join(claims.scopes) or 'nothing'}",
                claims.subject,
            )
    return claims


def _claims(payload: dict[str, Any]) -> Claims:
    missing = [name for name in _REQUIRED if name not in payload]
    if missing:
        raise TokenInvalid(f"token lacks claims: {', '.join(missing)}")
    if payload["iss"] != ISSUER:
        raise TokenInvalid(f"token issuer {payload['iss']!r} is not {ISSUER!r}")
    scopes = payload["scopes"]
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise TokenInvalid("token claim 'scopes' is not a list of strings")
    try:
        parse_scopes(scopes)
    except ScopeError as exc:
        raise TokenInvalid(f"token holds a bad scope: {exc}") from exc
    times: dict[str, datetime] = {}
    for name in ("iat", "nbf", "exp"):
        value = payload[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TokenInvalid(f"token claim {name!r} is not a number")
        times[name] = datetime.fromtimestamp(value, UTC)
    if not isinstance(payload["sub"], str) or not isinstance(payload["jti"], str):
        raise TokenInvalid("token claims 'sub' and 'jti' must be strings")
    return Claims(
        subject=payload["sub"],
        scopes=tuple(scopes),
        token_id=payload["jti"],
        issued_at=times["iat"],
        not_before=times["nbf"],
        expires_at=times["exp"],
    )
