"""Tokens and keys: every way a token must be refused, each with its own error."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ionwall import (
    Ionwall,
    KeyFileError,
    PermissionDenied,
    ScopeError,
    TokenExpired,
    TokenInvalid,
    TokenNotYetValid,
    TokenRevoked,
    verify_token,
)
from ionwall._keys import KEY_FILE, encode_public_key, load_or_create_key
from ionwall._token import issue_token


@pytest.fixture
def wall(tmp_path: Path) -> Iterator[Ionwall]:
    with Ionwall(tmp_path / "ionwall") as w:
        yield w


def _b64(data: dict[str, object]) -> str:
    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_issued_token_verifies_with_claims(wall: Ionwall) -> None:
    grant = wall.issue_token(["execute_graph:digest"], timedelta(hours=1), subject="ci")
    claims = wall.verify_token(grant.token, "execute_graph:digest")
    assert claims.subject == "ci"
    assert claims.scopes == ("execute_graph:digest",)
    assert claims.token_id == grant.id
    assert jwt.get_unverified_header(grant.token)["alg"] == "EdDSA"


def test_forged_token_signed_with_another_key(wall: Ionwall) -> None:
    other = Ed25519PrivateKey.generate()
    forged = issue_token(other, "ci", ["execute_graph:*"], timedelta(hours=1), token_id="g-x")
    with pytest.raises(TokenInvalid, match="not issued by this IONWALL"):
        wall.verify_token(forged)


def test_token_with_alg_none(wall: Ionwall) -> None:
    real = wall.issue_token(["execute_graph:digest"], timedelta(hours=1)).token
    payload = real.split(".")[1]
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}."
    with pytest.raises(TokenInvalid, match="alg none"):
        wall.verify_token(unsigned)


def test_token_with_hmac_alg_keyed_by_the_public_key(wall: Ionwall) -> None:
    # The classic confusion attack: HS256 with the public key as the secret.
    payload = jwt.decode(
        wall.issue_token(["execute_graph:digest"], timedelta(hours=1)).token,
        options={"verify_signature": False},
    )
    forged = jwt.encode(payload, wall.public_key, algorithm="HS256")
    with pytest.raises(TokenInvalid, match="'HS256' refused"):
        wall.verify_token(forged)


def test_expired_token(tmp_path: Path) -> None:
    now = [time.time()]
    with Ionwall(tmp_path / "ionwall", clock=lambda: now[0]) as wall:
        token = wall.issue_token(["execute_graph:digest"], timedelta(minutes=5)).token
        now[0] += 301
        with pytest.raises(TokenExpired, match="expired at"):
            wall.verify_token(token)


def test_not_yet_valid_token(tmp_path: Path) -> None:
    now = [time.time()]
    with Ionwall(tmp_path / "ionwall", clock=lambda: now[0]) as wall:
        token = wall.issue_token(["execute_graph:digest"], timedelta(minutes=5)).token
        now[0] -= 60
        with pytest.raises(TokenNotYetValid, match="not valid before"):
            wall.verify_token(token)


def test_revoked_token(wall: Ionwall) -> None:
    grant = wall.issue_token(["execute_graph:digest"], timedelta(hours=1))
    wall.revoke(grant.id)
    with pytest.raises(TokenRevoked, match=f"{grant.id} was revoked"):
        wall.verify_token(grant.token)


def test_a_token_verified_once_is_still_checked_on_every_call(tmp_path: Path) -> None:
    # The signature is verified once per token; expiry, revocation and scope
    # are not remembered: each call checks them again.
    now = [time.time()]
    with Ionwall(tmp_path / "ionwall", clock=lambda: now[0]) as wall:
        grant = wall.issue_token(["execute_graph:digest"], timedelta(minutes=5))
        assert wall.verify_token(grant.token, "execute_graph:digest").token_id == grant.id
        assert grant.token in wall._verified_tokens
        with pytest.raises(PermissionDenied):
            wall.verify_token(grant.token, "execute_graph:other")
        now[0] += 301
        with pytest.raises(TokenExpired):
            wall.verify_token(grant.token)
        now[0] -= 301
        assert wall.verify_token(grant.token).token_id == grant.id
        wall.revoke(grant.id)
        with pytest.raises(TokenRevoked):
            wall.verify_token(grant.token)
        # A token one character away from a remembered one is verified afresh.
        head, payload, signature = grant.token.split(".")
        flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
        with pytest.raises(TokenInvalid):
            wall.verify_token(f"{head}.{payload}.{flipped}")


def test_token_whose_scopes_do_not_cover_the_call(wall: Ionwall) -> None:
    token = wall.issue_token(["execute_graph:digest"], timedelta(hours=1), subject="ci").token
    with pytest.raises(PermissionDenied) as info:
        wall.verify_token(token, "execute_graph:payroll")
    assert info.value.scope == "execute_graph:payroll"
    assert info.value.subject == "ci"
    assert "grants only execute_graph:digest" in info.value.reason


def test_malformed_tokens(wall: Ionwall) -> None:
    for bad in ["", "abc", "a.b.c", "x" * 50]:
        with pytest.raises(TokenInvalid):
            wall.verify_token(bad)
    with pytest.raises(ScopeError):
        wall.verify_token(wall.issue_token(["emit_log:info"]).token, "nonsense")


def test_token_missing_claims_is_invalid(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    token = jwt.encode({"sub": "x"}, key, algorithm="EdDSA")
    with pytest.raises(TokenInvalid, match="lacks claims"):
        verify_token(token, public_key=key.public_key())


def test_issuing_a_token_with_a_bad_scope_fails(wall: Ionwall) -> None:
    with pytest.raises(ScopeError):
        wall.issue_token(["fly:away"])


def test_key_is_created_0600_and_reused(tmp_path: Path) -> None:
    first = load_or_create_key(tmp_path / "d")
    path = tmp_path / "d" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_or_create_key(tmp_path / "d")
    assert first.public_key() == second.public_key()
    assert [p.name for p in (tmp_path / "d").iterdir()] == [KEY_FILE]  # no temp file left


def test_key_is_never_world_readable_even_with_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_key(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create_key(tmp_path)
    (tmp_path / KEY_FILE).chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key(tmp_path)


def test_concurrent_first_start_yields_one_key(tmp_path: Path) -> None:
    keys: list[Ed25519PrivateKey] = []
    threads = [
        threading.Thread(target=lambda: keys.append(load_or_create_key(tmp_path))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8
    assert len({encode_public_key(k.public_key()) for k in keys}) == 1
