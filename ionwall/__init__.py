"""IONWALL: scopes, consent, grants, tokens and the audit log.

The lower layer: nothing here imports ``ionflux``. Start with ``Ionwall``::

    wall = Ionwall(data_dir / "ionwall", load_policy(policy_file))
    try:
        grant = wall.authorize(cid, "digest", "1.0.0", ["read_pod_data:reports/*"])
    except ConsentRequired as exc:
        print(exc)  # tells the owner how to answer: `ionflux consent approve <id>`
    gate = wall.gate(grant.id)  # gate.check(ctx, "read_pod_data:reports/01.json")
"""

# Errors load eagerly (``ionflux`` subclasses them, and they are cheap); the rest
# loads on first use, so `import ionwall` (and `import ionflux.store`) pulls in
# neither PyJWT nor cryptography nor the gate.
from typing import TYPE_CHECKING, Any

from ._errors import (
    AuditError,
    ConsentAlreadyAnswered,
    ConsentError,
    ConsentRequired,
    DocumentError,
    DocumentTooLarge,
    IonwallError,
    KeyFileError,
    PermissionDenied,
    PolicyError,
    RevocationFeedLost,
    ScopeError,
    StoreError,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenNotYetValid,
    TokenRevoked,
    UnknownConsent,
    UnknownGrant,
)

if TYPE_CHECKING:
    from ._audit import AuditEntry, AuditLog, AuditReport
    from ._consent import (
        KIND_TITLES,
        ConsentRequest,
        ConsentStatus,
        describe_scope,
        render_prompt,
    )
    from ._documents import DocumentLimits, compose_yaml, load_yaml, read_text
    from ._duration import format_duration, parse_duration
    from ._gate import AllowAllGate, AllowListGate, CallContext, Decision, Gate
    from ._grants import Grant, GrantKind
    from ._ionwall import Ionwall
    from ._keys import decode_public_key, encode_public_key, sign_cid, verify_cid_signature
    from ._mask import MASK, Masker
    from ._pg import migrate_postgres
    from ._pgstore import RevocationFeed
    from ._policy import Policy, TrustedPublisher, load_policy, policy_from_dict
    from ._scope import ACTIONS, Scope, covers, narrow, parse_scope, parse_scopes
    from ._shared import connect_read_only, read_only
    from ._token import Claims, verify_token

_LAZY = {
    "ACTIONS": "_scope",
    "AllowAllGate": "_gate",
    "AllowListGate": "_gate",
    "AuditEntry": "_audit",
    "AuditLog": "_audit",
    "AuditReport": "_audit",
    "CallContext": "_gate",
    "Claims": "_token",
    "ConsentRequest": "_consent",
    "ConsentStatus": "_consent",
    "Decision": "_gate",
    "DocumentLimits": "_documents",
    "Gate": "_gate",
    "Grant": "_grants",
    "GrantKind": "_grants",
    "Ionwall": "_ionwall",
    "KIND_TITLES": "_consent",
    "MASK": "_mask",
    "Masker": "_mask",
    "Policy": "_policy",
    "RevocationFeed": "_pgstore",
    "Scope": "_scope",
    "TrustedPublisher": "_policy",
    "compose_yaml": "_documents",
    "covers": "_scope",
    "decode_public_key": "_keys",
    "describe_scope": "_consent",
    "encode_public_key": "_keys",
    "format_duration": "_duration",
    "load_policy": "_policy",
    "load_yaml": "_documents",
    "migrate_postgres": "_pg",
    "narrow": "_scope",
    "parse_duration": "_duration",
    "parse_scope": "_scope",
    "connect_read_only": "_shared",
    "parse_scopes": "_scope",
    "policy_from_dict": "_policy",
    "read_only": "_shared",
    "read_text": "_documents",
    "render_prompt": "_consent",
    "sign_cid": "_keys",
    "verify_cid_signature": "_keys",
    "verify_token": "_token",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "ACTIONS",
    "KIND_TITLES",
    "MASK",
    "AllowAllGate",
    "AllowListGate",
    "AuditEntry",
    "AuditError",
    "AuditLog",
    "AuditReport",
    "CallContext",
    "Claims",
    "ConsentAlreadyAnswered",
    "ConsentError",
    "ConsentRequest",
    "ConsentRequired",
    "ConsentStatus",
    "Decision",
    "DocumentError",
    "DocumentLimits",
    "DocumentTooLarge",
    "Gate",
    "Grant",
    "GrantKind",
    "Ionwall",
    "IonwallError",
    "KeyFileError",
    "Masker",
    "PermissionDenied",
    "Policy",
    "PolicyError",
    "RevocationFeed",
    "RevocationFeedLost",
    "Scope",
    "ScopeError",
    "StoreError",
    "TokenError",
    "TokenExpired",
    "TokenInvalid",
    "TokenNotYetValid",
    "TokenRevoked",
    "TrustedPublisher",
    "UnknownConsent",
    "UnknownGrant",
    "compose_yaml",
    "connect_read_only",
    "covers",
    "decode_public_key",
    "describe_scope",
    "encode_public_key",
    "format_duration",
    "load_policy",
    "load_yaml",
    "migrate_postgres",
    "narrow",
    "parse_duration",
    "parse_scope",
    "parse_scopes",
    "policy_from_dict",
    "read_only",
    "read_text",
    "render_prompt",
    "sign_cid",
    "verify_cid_signature",
    "verify_token",
]
