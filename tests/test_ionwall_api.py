"""The public front of ``ionwall``: pinned, and free of ``ionflux``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ionwall
from ionwall import AuditLog, CallContext, ConsentRequired, Ionwall, IonwallError


def test_public_names_are_pinned() -> None:
    assert ionwall.__all__ == sorted(ionwall.__all__, key=lambda n: (not n.isupper(), n))
    assert set(ionwall.__all__) == {
        "ACTIONS", "KIND_TITLES", "MASK", "AllowAllGate", "AllowListGate", "AuditEntry",
        "AuditError",
        "AuditLog", "AuditReport", "CallContext", "Claims", "ConsentAlreadyAnswered",
        "ConsentError", "ConsentRequest", "ConsentRequired", "ConsentStatus", "Decision",
        "DocumentError", "DocumentLimits", "DocumentTooLarge", "compose_yaml", "load_yaml",
        "read_text", "connect_read_only", "read_only", "Gate", "Grant", "GrantKind", "Ionwall",
        "IonwallError", "KeyFileError",
        "Masker",
        "PermissionDenied", "Policy", "PolicyError", "RevocationFeed", "RevocationFeedLost",
        "Scope", "ScopeError", "StoreError",
        "TokenError", "TokenExpired", "TokenInvalid", "TokenNotYetValid", "TokenRevoked",
        "TrustedPublisher", "UnknownConsent", "UnknownGrant", "covers", "decode_public_key",
        "describe_scope", "encode_public_key", "format_duration", "load_policy",
        "migrate_postgres", "narrow",
        "parse_duration", "parse_scope", "parse_scopes", "policy_from_dict", "render_prompt",
        "sign_cid", "verify_cid_signature", "verify_token",
    }  # fmt: skip
    for name in ionwall.__all__:
        obj = getattr(ionwall, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, IonwallError), name


def test_ionwall_does_not_import_ionflux() -> None:
    code = "import sys, ionwall; assert not [m for m in sys.modules if m.startswith('ionflux')]"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_permission_denied_is_shared_with_ionflux() -> None:
    from ionflux import PermissionDenied as HostDenied

    err = ionwall.PermissionDenied("emit_log:info", "no grant", "bafy")
    assert err.to_dict() == {
        "kind": "permission_denied",
        "message": "denied emit_log:info: no grant",
        "scope": "emit_log:info",
        "reason": "no grant",
    }
    # The host's class keeps the same constructor, so it can subclass ours.
    assert HostDenied("emit_log:info", "no grant", "bafy").args == err.args


def test_a_decision_that_cannot_be_recorded_is_a_denial(tmp_path: Path) -> None:
    with Ionwall(tmp_path / "iw") as wall:
        try:
            wall.authorize("bafy", "t", "1", ["emit_log:*"])
        except ConsentRequired as exc:
            grant = wall.approve(exc.request.id)
        gate = wall.gate(grant.id)
        ctx = CallContext("bafy", "t")
        assert gate.check(ctx, "emit_log:info").allowed
        with wall.audit.path.open("ab") as f:
            f.write(b"{broken}\n")  # a whole damaged line (a torn one is cut and repaired)
        with Ionwall(tmp_path / "iw") as other:
            d = other.gate(grant.id).check(ctx, "emit_log:info")
        assert not d.allowed and "cannot be recorded" in d.reason
        assert isinstance(wall.audit, AuditLog)
