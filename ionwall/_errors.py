"""Every error IONWALL raises to a caller.

    IonwallError
    ├── ScopeError                  a scope string that does not parse, or an unknown action
    ├── TokenError                  a token that must not be accepted
    │   ├── TokenInvalid            malformed, forged (wrong key), ``alg`` other than EdDSA
    │   ├── TokenExpired            past its ``exp``
    │   ├── TokenNotYetValid        before its ``nbf``
    │   └── TokenRevoked            its grant was revoked
    ├── PermissionDenied            a scope not covered (also ``ionflux.PermissionDenied``)
    ├── ConsentRequired             no grant yet: the owner must answer a consent request
    ├── ConsentError                a consent request cannot be answered
    │   ├── UnknownConsent          no request with that id
    │   └── ConsentAlreadyAnswered  approved, denied or expired already
    ├── UnknownGrant                no grant with that id
    ├── PolicyError                 a policy file that does not load, or a request it forbids
    ├── DocumentError               a YAML document that does not parse (names it and the line)
    │   └── DocumentTooLarge        past a budget: bytes, nesting, nodes, alias expansion
    ├── KeyFileError                the signing key cannot be read, or others can read it
    ├── StoreError                  the consent and grant database cannot be used
    ├── RevocationFeedLost          a cluster host lost the revocation feed too long: it denies
    └── AuditError                  the audit log cannot be written or read

Every error serialises with ``to_dict()`` (the HTTP API sends it as the body).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._consent import ConsentRequest


class IonwallError(Exception):
    """The root of every error IONWALL raises."""

    kind = "ionwall"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": str(self)}


class ScopeError(IonwallError, ValueError):
    kind = "invalid_scope"

    def __init__(self, scope: str, problem: str):
        self.scope = scope
        self.problem = problem
        super().__init__(f"invalid scope {scope!r}: {problem}")


class TokenError(IonwallError):
    kind = "token"


class TokenInvalid(TokenError):
    kind = "token_invalid"


class TokenExpired(TokenError):
    kind = "token_expired"


class TokenNotYetValid(TokenError):
    kind = "token_not_yet_valid"


class TokenRevoked(TokenError):
    kind = "token_revoked"


class PermissionDenied(IonwallError):
    """IONWALL refused ``scope`` for ``subject``; ``reason`` says why."""

    kind = "permission_denied"

    def __init__(self, scope: str, reason: str, subject: str | None = None):
        self.scope = scope
        self.reason = reason
        self.subject = subject
        super().__init__(f"denied {scope}: {reason}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "scope": self.scope, "reason": self.reason}


class ConsentRequired(IonwallError):
    """Nothing may run until the owner answers ``request``; the message says how."""

    kind = "consent_required"

    def __init__(self, request: ConsentRequest):
        self.request = request
        scopes = ", ".join(request.scopes)
        super().__init__(
            f"{request.transform} {request.version} ({request.subject}) needs your consent "
            f"for: {scopes}. See it with `ionflux consent show {request.id}`, then answer "
            f"with `ionflux consent approve {request.id}` or `ionflux consent deny {request.id}`."
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "consent_id": self.request.id}


class ConsentError(IonwallError):
    kind = "consent"


class UnknownConsent(ConsentError):
    kind = "unknown_consent"

    def __init__(self, consent_id: str):
        self.consent_id = consent_id
        super().__init__(f"no consent request {consent_id!r} (see `ionflux consent list`)")


class ConsentAlreadyAnswered(ConsentError):
    kind = "consent_already_answered"

    def __init__(self, consent_id: str, status: str):
        self.consent_id = consent_id
        self.status = status
        super().__init__(f"consent request {consent_id} is already {status}")


class UnknownGrant(IonwallError):
    kind = "unknown_grant"

    def __init__(self, grant_id: str):
        self.grant_id = grant_id
        super().__init__(f"no grant {grant_id!r} (see `ionflux grants list`)")


class PolicyError(IonwallError):
    kind = "policy"


class DocumentError(IonwallError):
    """``document`` (a path, or a label such as ``<http>``) cannot be read as YAML."""

    kind = "document"

    def __init__(self, document: str, message: str, line: int | None = None):
        self.document = document
        self.line = line
        self.problem = message
        where = f"{document}:{line}" if line else document
        super().__init__(f"{where}: {message}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "document": self.document, "line": self.line}


class DocumentTooLarge(DocumentError):
    """``document`` is past the budget ``limit`` (``max_bytes``, ``max_depth``,
    ``max_nodes``, ``max_alias_expansion``) of ``value``; ``found`` says by how much."""

    kind = "document_too_large"

    def __init__(
        self,
        document: str,
        limit: str,
        value: int,
        found: str,
        hint: str = "",
        line: int | None = None,
    ):
        self.limit = limit
        self.value = value
        self.found = found
        message = f"refused: {found}, past the limit {limit} = {value}"
        super().__init__(document, f"{message}; {hint}" if hint else message, line)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "limit": self.limit, "value": self.value}


class KeyFileError(IonwallError):
    kind = "key_file"


class StoreError(IonwallError):
    kind = "store"


class AuditError(IonwallError):
    kind = "audit"


class RevocationFeedLost(IonwallError):
    """A host sharing state through PostgreSQL has not heard from the revocation
    feed for ``silent_s`` seconds, past its ``bound``: it cannot know what was
    revoked elsewhere, so it denies every scoped call (and refuses tokens)
    until the feed has caught up. ``problem``: what the feed last ran into."""

    kind = "revocation_feed_lost"

    def __init__(self, bound: float, silent_s: float, problem: str):
        self.bound = bound
        self.silent_s = silent_s
        self.problem = problem
        super().__init__(
            f"the revocation feed has been silent for {silent_s:.1f} s, past the bound of "
            f"{bound:g} s (state.revocation_feed_bound): denied until it catches up"
            + (f" ({problem})" if problem else "")
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "bound": self.bound, "problem": self.problem}
