"""Consent requests, approvals, denials, policies and publisher signatures."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ionwall import (
    AuditError,
    ConsentAlreadyAnswered,
    ConsentRequired,
    ConsentStatus,
    Grant,
    GrantKind,
    Ionwall,
    Policy,
    PolicyError,
    ScopeError,
    UnknownConsent,
    encode_public_key,
    load_policy,
    sign_cid,
    verify_cid_signature,
)

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
SCOPES = ["read_pod_data:reports/*", "publish_nats_topic:ionflux.digest.*"]


@pytest.fixture
def wall(tmp_path: Path) -> Iterator[Ionwall]:
    with Ionwall(tmp_path / "ionwall") as w:
        yield w


def _ask(wall: Ionwall, scopes: list[str] = SCOPES, **kw: str) -> ConsentRequired:
    with pytest.raises(ConsentRequired) as info:
        wall.authorize(CID, "digest", "1.0.0", scopes, **kw)
    return info.value


def test_no_grant_creates_a_request_and_says_how_to_answer(wall: Ionwall) -> None:
    exc = _ask(wall)
    request = exc.request
    assert request.status is ConsentStatus.PENDING
    assert request.scopes == tuple(SCOPES)
    assert f"ionflux consent approve {request.id}" in str(exc)
    assert [r.id for r in wall.consents("pending")] == [request.id]


def test_identical_request_is_reused_not_piled_up(wall: Ionwall) -> None:
    first = _ask(wall).request
    second = _ask(wall, list(reversed(SCOPES))).request
    assert first.id == second.id
    other_version = _ask(wall, [*SCOPES, "emit_log:info"]).request
    assert other_version.id != first.id
    assert len(wall.consents()) == 2


def test_approve_then_authorize_returns_the_grant(wall: Ionwall) -> None:
    request = _ask(wall).request
    grant = wall.approve(request.id, expires=timedelta(days=2))
    assert isinstance(grant, Grant)
    assert grant.scopes == tuple(SCOPES)
    assert grant.kind is GrantKind.CONSENT
    assert timedelta(days=2) - timedelta(seconds=2) < grant.expires_at - grant.created_at
    assert wall.authorize(CID, "digest", "1.0.0", SCOPES).id == grant.id
    claims = wall.verify_token(grant.token, "read_pod_data:reports/01.json")
    assert claims.subject == CID
    assert wall.consent(request.id).status is ConsentStatus.APPROVED
    assert wall.consent(request.id).grant_id == grant.id


def test_approve_only_a_subset_and_never_wider(wall: Ionwall) -> None:
    request = _ask(wall).request
    grant = wall.approve(request.id, only=["publish_nats_topic:ionflux.**"])
    # Approving `ionflux.**` for a request of `ionflux.digest.*` grants only the request.
    assert grant.scopes == ("publish_nats_topic:ionflux.digest.*",)
    # The subset answers the same request next time: no new prompt.
    assert wall.authorize(CID, "digest", "1.0.0", SCOPES).id == grant.id


def test_approve_only_a_scope_that_was_not_requested(wall: Ionwall) -> None:
    request = _ask(wall).request
    with pytest.raises(ScopeError, match="not part of consent request"):
        wall.approve(request.id, only=["http_fetch:evil.example.net"])
    with pytest.raises(ScopeError):
        wall.approve(request.id, only=["not a scope"])
    assert wall.consent(request.id).status is ConsentStatus.PENDING


def test_approve_or_deny_unknown_or_answered(wall: Ionwall) -> None:
    with pytest.raises(UnknownConsent, match="c-nope"):
        wall.approve("c-nope")
    with pytest.raises(UnknownConsent):
        wall.deny("c-nope")
    request = _ask(wall).request
    wall.deny(request.id)
    with pytest.raises(ConsentAlreadyAnswered, match="already denied"):
        wall.approve(request.id)
    with pytest.raises(ConsentAlreadyAnswered, match="already denied"):
        wall.deny(request.id)
    # Asking again after a denial makes a fresh request.
    assert _ask(wall).request.id != request.id


def test_unanswered_requests_expire(tmp_path: Path) -> None:
    now = [time.time()]
    with Ionwall(tmp_path / "iw", clock=lambda: now[0]) as wall:
        request = _ask(wall).request
        now[0] += 8 * 86400
        assert wall.consent(request.id).status is ConsentStatus.EXPIRED
        with pytest.raises(ConsentAlreadyAnswered, match="already expired"):
            wall.approve(request.id)
        assert _ask(wall).request.id != request.id


def test_unparseable_requested_scope(wall: Ionwall) -> None:
    with pytest.raises(ScopeError, match="unknown action"):
        wall.authorize(CID, "digest", "1.0.0", ["read_pod_data:x", "teleport:moon"])
    assert wall.consents() == []


def test_concurrent_approvals_of_one_request_grant_once(wall: Ionwall) -> None:
    request = _ask(wall).request
    results: list[object] = []

    def approve() -> None:
        try:
            results.append(wall.approve(request.id))
        except ConsentAlreadyAnswered as exc:
            results.append(exc)

    threads = [threading.Thread(target=approve) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    grants = [r for r in results if isinstance(r, Grant)]
    assert len(grants) == 1
    assert len(results) == 8
    assert [g.id for g in wall.grants()] == [grants[0].id]


def test_concurrent_authorize_makes_one_request(wall: Ionwall) -> None:
    ids: list[str] = []

    def ask() -> None:
        with pytest.raises(ConsentRequired) as info:
            wall.authorize(CID, "digest", "1.0.0", SCOPES)
        ids.append(info.value.request.id)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 8 and len(set(ids)) == 1


# -- prompts ---------------------------------------------------------------------------


def test_prompt_is_in_words_grouped_by_kind(wall: Ionwall) -> None:
    scopes = [
        "http_fetch:api.example.com",
        "read_pod_data:reports/*",
        "execute_master_plan:daily-digest",
        "publish_nats_topic:ionflux.digest.*",
        "emit_log:*",
    ]
    request = _ask(wall, scopes).request
    text = wall.prompt(request.id)
    assert "Transform 'digest' 1.0.0 asks for your permission." in text
    assert CID in text
    assert "unsigned" in text
    order = [text.index(h) for h in ("Storage", "Messaging", "Network", "Orchestration", "Logging")]
    assert order == sorted(order)
    assert "read data from your IONPOD at the path 'reports/*'" in text
    assert "send HTTP requests to the host api.example.com (default ports only)" in text
    assert "execute the Master Plan daily-digest" in text
    assert "write messages to the run log at any level" in text
    assert f"ionflux consent approve {request.id}" in text
    assert "30d" in text


def test_prompt_shows_whether_the_signature_verifies(wall: Ionwall) -> None:
    key = Ed25519PrivateKey.generate()
    publisher = encode_public_key(key.public_key())
    good = _ask(wall, publisher=publisher, signature=sign_cid(key, CID)).request
    assert good.signature_valid is True
    assert "signature over the CID verifies" in wall.prompt(good.id)
    bad = _ask(wall, publisher=publisher, signature=sign_cid(key, CID + "x")).request
    assert bad.signature_valid is False
    assert "DOES NOT verify" in wall.prompt(bad.id)


def test_publisher_signature_is_over_the_cid_text() -> None:
    key = Ed25519PrivateKey.generate()
    publisher = encode_public_key(key.public_key())
    signature = sign_cid(key, CID)
    assert verify_cid_signature(publisher, CID, signature)
    assert not verify_cid_signature(publisher, CID[:-1] + "a", signature)
    assert not verify_cid_signature(publisher, CID, "!!notbase64")
    assert not verify_cid_signature("ed25519:short", CID, signature)
    other = encode_public_key(Ed25519PrivateKey.generate().public_key())
    assert not verify_cid_signature(other, CID, signature)
    # Exactly Ed25519 over the UTF-8 CID string, as documented.
    import base64

    raw = base64.urlsafe_b64decode(signature + "==")
    key.public_key().verify(raw, CID.encode())


# -- policies ---------------------------------------------------------------------------


def test_policy_auto_approves_trusted_publishers(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    publisher = encode_public_key(key.public_key())
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        f"trusted_publishers:\n  - name: ACME\n    key: {publisher}\n"
        "always_deny: ['http_fetch:169.254.169.254']\n"
        "max_grant_lifetime: 10d\ndefault_grant_lifetime: 1d\n"
    )
    policy = load_policy(policy_file)
    with Ionwall(tmp_path / "iw", policy) as wall:
        scopes = [*SCOPES, "http_fetch:169.254.169.254"]
        grant = wall.authorize(CID, "digest", "1.0.0", scopes, publisher, sign_cid(key, CID))
        assert grant.kind is GrantKind.POLICY
        assert grant.scopes == tuple(SCOPES)  # the always-denied scope is left out
        assert wall.consent(grant.consent_id or "").answered_by == "policy: trusted publisher ACME"
        # A bad signature from the same key is not trusted: ask the owner.
        with pytest.raises(ConsentRequired):
            wall.authorize(CID, "digest", "1.0.1", SCOPES, publisher, sign_cid(key, "other"))


def test_policy_caps_what_a_trusted_publisher_gets_without_asking(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    policy = Policy().with_trusted_publisher(
        "ACME", encode_public_key(key.public_key()), ["read_pod_data:**"]
    )
    with Ionwall(tmp_path / "iw", policy) as wall:
        publisher = encode_public_key(key.public_key())
        with pytest.raises(ConsentRequired):
            wall.authorize(CID, "d", "1", SCOPES, publisher, sign_cid(key, CID))
        grant = wall.authorize(CID, "d", "1", SCOPES[:1], publisher, sign_cid(key, CID))
        assert grant.scopes == tuple(SCOPES[:1])


def test_policy_always_deny_and_max_lifetime(tmp_path: Path) -> None:
    policy = (
        Policy()
        .with_always_deny("publish_nats_topic:**")
        .with_lifetimes(maximum=timedelta(days=7), default=timedelta(days=1))
    )
    with Ionwall(tmp_path / "iw", policy) as wall:
        request = _ask(wall).request
        assert "always denies" in wall.prompt(request.id)
        with pytest.raises(PolicyError, match="exceeds the policy's maximum grant lifetime of 7d"):
            wall.approve(request.id, expires=timedelta(days=30))
        with pytest.raises(PolicyError, match="always denies every scope"):
            wall.approve(request.id, only=["publish_nats_topic:ionflux.digest.*"])
        grant = wall.approve(request.id)
        assert grant.scopes == ("read_pod_data:reports/*",)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("always_deny: ['nope:x']", "unknown action"),
        ("max_grant_lifetime: forever", "cannot read duration"),
        ("trusted_publishers: [{name: x}]", "needs a 'key'"),
        ("trusted_publishers: [{key: 'ed25519:abc'}]", "32 bytes"),
        ("surprise: 1", "unknown policy fields"),
        ("default_grant_lifetime: 400d", "longer than max_grant_lifetime"),
        ("[1, 2]", "a policy is a mapping"),
    ],
)
def test_bad_policy_files(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=problem) as info:
        load_policy(path)
    assert str(path) in str(info.value)


def test_the_owners_decisions_are_in_the_audit_chain(wall: Ionwall) -> None:
    # Requests, approvals, denials, revocations and caller tokens are recorded
    # with the gate's decisions, one entry per scope, and the chain verifies.
    with pytest.raises(ConsentRequired) as asked:
        wall.authorize(CID, "digest", "1.0.0", SCOPES)
    grant = wall.approve(asked.value.request.id, only=["read_pod_data:reports/*"])
    wall.revoke(grant.id)
    with pytest.raises(ConsentRequired) as again:
        wall.authorize(CID, "digest", "2.0.0", SCOPES[:1])
    wall.deny(again.value.request.id, by="alice")
    token = wall.issue_token(["execute_graph:digest"])
    entries = wall.audit_tail(20)
    assert [(e.decision, e.scope) for e in entries] == [
        ("consent-requested", SCOPES[0]),
        ("consent-requested", SCOPES[1]),
        ("consent-approved", "read_pod_data:reports/*"),
        ("grant-revoked", "read_pod_data:reports/*"),
        ("consent-requested", SCOPES[0]),
        ("consent-denied", SCOPES[0]),
        ("token-issued", "execute_graph:digest"),
    ]
    assert entries[2].grant_id == entries[3].grant_id == grant.id
    assert entries[2].subject == CID and entries[2].transform == "digest"
    assert asked.value.request.id in entries[2].reason and "owner" in entries[2].reason
    assert "alice" in entries[5].reason
    assert entries[6].grant_id == token.id
    assert wall.audit_verify().ok


def test_an_approval_that_cannot_be_recorded_is_not_taken(
    wall: Ionwall, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    with pytest.raises(ConsentRequired) as asked:
        wall.authorize(CID, "digest", "1.0.0", SCOPES)
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if fd == wall.audit._log_fd:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(AuditError, match="No space left"):
        wall.approve(asked.value.request.id)
    monkeypatch.undo()
    # Nothing was granted; the request is still pending and can be approved now.
    assert wall.grants() == []
    assert wall.consent(asked.value.request.id).status.value == "pending"
    grant = wall.approve(asked.value.request.id)
    assert wall.authorize(CID, "digest", "1.0.0", SCOPES).id == grant.id
    assert wall.audit_verify().ok
