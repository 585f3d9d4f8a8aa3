"""IONWALL's state backends pass the same tests: SQLite and files (one machine,
the default) and a real PostgreSQL (a cluster's shared state).

Consents, grants, the gate, revocation, tokens, the audit log (write-behind
barrier, verify) and tamper detection, each over both; what differs is only
how a test reaches into the storage to tamper with it (``Backend``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from ionwall import (
    CallContext,
    ConsentAlreadyAnswered,
    ConsentRequired,
    ConsentStatus,
    Grant,
    Ionwall,
    TokenInvalid,
    TokenRevoked,
    UnknownGrant,
    migrate_postgres,
)

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
SCOPES = ["read_pod_data:reports/*", "emit_log:*"]


@dataclass
class Backend:
    name: str
    open: Callable[[Path], Ionwall]
    # Rewrites entry ``index`` of this wall's chain with ``edit(obj)`` applied (hash kept).
    alter: Callable[[Ionwall, int, Callable[[dict[str, object]], None]], None]
    drop_last: Callable[[Ionwall], None]


def _file_alter(wall: Ionwall, index: int, edit: Callable[[dict[str, object]], None]) -> None:
    path = wall.audit.path
    lines = path.read_bytes().splitlines(keepends=True)
    obj = json.loads(lines[index])
    edit(obj)
    lines[index] = json.dumps(obj).encode() + b"\n"
    path.write_bytes(b"".join(lines))


def _file_drop_last(wall: Ionwall) -> None:
    path = wall.audit.path
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))


def _pg_alter(url: str) -> Callable[[Ionwall, int, Callable[[dict[str, object]], None]], None]:
    def alter(wall: Ionwall, index: int, edit: Callable[[dict[str, object]], None]) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT line FROM ionwall_audit WHERE chain=%s AND idx=%s", (wall.kid, index)
            ).fetchone()
            assert row is not None
            obj = json.loads(row[0])
            edit(obj)
            conn.execute(
                "UPDATE ionwall_audit SET line=%s WHERE chain=%s AND idx=%s",
                (json.dumps(obj), wall.kid, index),
            )

    return alter


def _pg_drop_last(url: str) -> Callable[[Ionwall], None]:
    def drop(wall: Ionwall) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "DELETE FROM ionwall_audit WHERE chain=%s AND idx = "
                "(SELECT max(idx) FROM ionwall_audit WHERE chain=%s)",
                (wall.kid, wall.kid),
            )

    return drop


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", lambda d: Ionwall(d), _file_alter, _file_drop_last)
    url: str = request.getfixturevalue("postgres_url")
    return Backend(
        "postgres", lambda d: Ionwall(d, state_url=url), _pg_alter(url), _pg_drop_last(url)
    )


@pytest.fixture
def wall(backend: Backend, tmp_path: Path) -> Iterator[Ionwall]:
    with backend.open(tmp_path / "ionwall") as w:
        yield w


def _granted(wall: Ionwall, scopes: list[str] = SCOPES, subject: str = CID) -> Grant:
    try:
        return wall.authorize(subject, "digest", "1.0.0", scopes)
    except ConsentRequired as exc:
        return wall.approve(exc.request.id)


def _ctx(grant: Grant) -> CallContext:
    return CallContext(CID, "digest", "run-1", "node-a", grant.id)


# -- consents and grants -------------------------------------------------------


def test_consent_is_asked_once_then_the_grant_is_reused(wall: Ionwall) -> None:
    with pytest.raises(ConsentRequired) as first:
        wall.authorize(CID, "digest", "1.0.0", SCOPES)
    with pytest.raises(ConsentRequired) as again:
        wall.authorize(CID, "digest", "1.0.0", SCOPES)
    assert again.value.request.id == first.value.request.id  # no duplicate prompt
    grant = wall.approve(first.value.request.id)
    assert wall.authorize(CID, "digest", "1.0.0", SCOPES).id == grant.id
    assert wall.consent(first.value.request.id).status is ConsentStatus.APPROVED
    assert [g.id for g in wall.grants()] == [grant.id]
    assert wall.grant(grant.id).scopes == tuple(SCOPES)


def test_an_answered_consent_cannot_be_answered_again(wall: Ionwall) -> None:
    with pytest.raises(ConsentRequired) as asked:
        wall.authorize(CID, "digest", "1.0.0", SCOPES)
    wall.deny(asked.value.request.id)
    with pytest.raises(ConsentAlreadyAnswered):
        wall.approve(asked.value.request.id)
    assert [c.status for c in wall.consents()] == [ConsentStatus.DENIED]


def test_concurrent_approvals_of_one_request_make_one_grant(wall: Ionwall) -> None:
    with pytest.raises(ConsentRequired) as asked:
        wall.authorize(CID, "digest", "1.0.0", SCOPES)
    outcomes: list[str] = []
    start = threading.Barrier(4)

    def approve() -> None:
        start.wait()
        try:
            wall.approve(asked.value.request.id)
            outcomes.append("approved")
        except ConsentAlreadyAnswered:
            outcomes.append("already")

    threads = [threading.Thread(target=approve) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["already", "already", "already", "approved"]
    assert len(wall.grants()) == 1


# -- the gate and revocation ---------------------------------------------------


def test_gate_allows_what_the_grant_covers_until_it_is_revoked(wall: Ionwall) -> None:
    grant = _granted(wall)
    gate = wall.gate(grant.id)
    assert gate.check(_ctx(grant), "read_pod_data:reports/01.json").allowed
    denied = gate.check(_ctx(grant), "read_pod_data:secrets/key")
    assert not denied.allowed and "not covered" in denied.reason
    wall.revoke(grant.id)
    after = gate.check(_ctx(grant), "read_pod_data:reports/01.json")
    assert not after.allowed and "revoked" in after.reason
    assert not wall.grant_live(grant.id)
    with pytest.raises(UnknownGrant):
        wall.revoke("g-000000000000")
    unknown = wall.check("g-000000000000", _ctx(grant), "emit_log:info")
    assert not unknown.allowed and "unknown grant" in unknown.reason


def test_tokens_verify_until_revoked_and_forgeries_do_not(wall: Ionwall, tmp_path: Path) -> None:
    grant = wall.issue_token(["execute_graph:digest"], timedelta(hours=1))
    claims = wall.verify_token(grant.token, "execute_graph:digest")
    assert claims.token_id == grant.id
    with Ionwall(tmp_path / "elsewhere") as stranger:  # another key, its own files
        forged = stranger.issue_token(["execute_graph:digest"]).token
    with pytest.raises(TokenInvalid):
        wall.verify_token(forged)
    wall.revoke(grant.id)
    with pytest.raises(TokenRevoked):
        wall.verify_token(grant.token)


# -- the audit log ---------------------------------------------------------------


def test_write_behind_entries_are_written_by_the_barrier_in_order(wall: Ionwall) -> None:
    grant = _granted(wall)
    gate = wall.gate(grant.id, write_behind=True)
    before = len(wall.audit_tail(1000))
    for n in range(5):
        assert gate.check(_ctx(grant), f"read_pod_data:reports/{n}.json").allowed
    gate.flush()
    entries = wall.audit_tail(1000)
    assert len(entries) == before + 5
    assert [e.scope for e in entries[-5:]] == [f"read_pod_data:reports/{n}.json" for n in range(5)]
    assert [e.index for e in entries[-5:]] == list(range(before, before + 5))
    report = wall.audit_verify()
    assert report.ok, str(report)
    assert report.entries == len(entries)


def test_a_used_call_is_written_at_once_after_what_was_queued(
    backend: Backend, wall: Ionwall
) -> None:
    grant = _granted(wall, [*SCOPES, "http_fetch:api.example.com"])
    gate = wall.gate(grant.id, write_behind=True)
    with backend.open(wall.data_dir) as reader:  # another process of the same host
        queued = gate.check(_ctx(grant), "read_pod_data:reports/1.json")
        assert queued.allowed
        assert reader.audit_tail(1)[0].scope != "read_pod_data:reports/1.json"  # only queued
        assert gate.check(_ctx(grant), "http_fetch:api.example.com").allowed
        written = reader.audit_tail(2)  # the used call went out recorded, after the queue
        assert [e.scope for e in written] == [
            "read_pod_data:reports/1.json",
            "http_fetch:api.example.com",
        ]
    gate.flush()


def test_checkpoints_sign_the_chain_and_verify_says_what_they_cover(wall: Ionwall) -> None:
    grant = _granted(wall)
    gate = wall.gate(grant.id)
    for _ in range(3):
        gate.check(_ctx(grant), "emit_log:info")
    wall.audit.checkpoint()
    report = wall.audit_verify()
    assert report.ok and report.signed == report.entries > 0, str(report)


def test_an_altered_entry_is_named_by_verify(backend: Backend, wall: Ionwall) -> None:
    grant = _granted(wall)
    for _ in range(3):
        wall.check(grant.id, _ctx(grant), "emit_log:info")
    assert wall.audit_verify().ok

    def allow(obj: dict[str, object]) -> None:
        obj["decision"] = "allow"
        obj["scope"] = "read_pod_data:everything"

    backend.alter(wall, 1, allow)
    report = wall.audit_verify()
    assert not report.ok and report.index == 1
    assert "entry 1 was altered" in (report.problem or "")


def test_a_cut_end_is_found_by_verify(backend: Backend, wall: Ionwall) -> None:
    grant = _granted(wall)
    for _ in range(3):
        wall.check(grant.id, _ctx(grant), "emit_log:info")
    count = wall.audit_verify().entries
    backend.drop_last(wall)
    report = wall.audit_verify()
    assert not report.ok and report.index == count - 1
    assert "truncated" in (report.problem or "")


# -- PostgreSQL only: the schema -------------------------------------------------


def test_migrations_apply_from_empty_once(postgres_url: str) -> None:
    assert migrate_postgres(postgres_url) == [1, 2]
    assert migrate_postgres(postgres_url) == []  # current: nothing to do
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT version, name FROM ionwall_schema_migrations ORDER BY version"
        ).fetchall()
    assert rows == [(1, "0001_ionwall.sql"), (2, "0002_feed_acks.sql")]


def test_migrations_apply_from_the_previous_version(postgres_url: str, tmp_path: Path) -> None:
    assert migrate_postgres(postgres_url, upto=1) == [1]  # a database of the version before
    with Ionwall(tmp_path / "before", state_url=postgres_url) as wall:  # opening migrates it
        grant = _granted(wall)
        wall.revoke(grant.id)
        assert not wall.check(grant.id, _ctx(grant), "emit_log:info").allowed
    assert migrate_postgres(postgres_url) == []
