"""Write-behind gates: result-only calls and denials are queued, the barrier
writes them, a failed write fails the run; everything else is written first."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import GuestPublisher
from hypothesis import given, settings
from hypothesis import strategies as st
from ionflux import ConsentRequired as HostConsentRequired
from ionflux.host import Host

from ionwall import AuditError, AuditLog, CallContext, ConsentRequired, Grant, Ionwall
from ionwall._audit import AuditTicket, _canonical, _now_text, _Template

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
SCOPES = ["read_pod_data:reports/*", "http_fetch:api.example.com", "emit_log:*"]
LOG_CALL = {"call": "log", "level": "info", "message": "hello"}


@pytest.fixture
def wall(tmp_path: Path) -> Iterator[Ionwall]:
    with Ionwall(tmp_path / "ionwall") as w:
        yield w


def _granted(wall: Ionwall) -> Grant:
    try:
        return wall.authorize(CID, "digest", "1.0.0", SCOPES)
    except ConsentRequired as exc:
        return wall.approve(exc.request.id)


def _ctx(grant: Grant) -> CallContext:
    return CallContext(CID, "digest", "run-1", "node-a", grant.id)


def _written(wall: Ionwall) -> list[bytes]:
    """The gate's entries on disk (the owner's consent decisions are left out)."""
    lines = wall.audit.path.read_bytes().splitlines()
    return [
        line for line in lines if line.startswith((b'{"decision":"allow"', b'{"decision":"deny"'))
    ]


def _fail_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", broken)


@settings(max_examples=200, deadline=None)
@given(st.text(), st.one_of(st.none(), st.text()), st.integers(min_value=0, max_value=2**40))
def test_property_template_encoding_is_canonical(text: str, maybe: str | None, index: int) -> None:
    fields: dict[str, Any] = {
        "decision": "deny", "grant_id": maybe, "node_id": maybe, "reason": text,
        "run_id": None, "scope": text, "subject": text, "transform": text,
    }  # fmt: skip
    t = _Template(fields)
    prev, time = "f" * 64, "2026-01-01T00:00:00.000001Z"
    encoded = f"{t.before_index}{index}{t.before_prev}{prev}{t.before_time}{time}{t.end}"
    assert encoded.encode() == _canonical({**fields, "index": index, "prev": prev, "time": time})


def test_entry_time_is_iso_utc_with_microseconds() -> None:
    # Bracketed by the clock read before and after, not "within N seconds of now".
    before = datetime.now(UTC).replace(microsecond=0)
    text = _now_text()
    after = datetime.now(UTC)
    assert text.endswith("Z") and len(text) == len("2026-01-01T00:00:00.000000Z")
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    assert before <= moment <= after


def test_queued_entries_are_written_by_the_barrier_in_order(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a")
    ticket = AuditTicket()
    for i in range(3):
        log._record(subject="s", transform="t", scope="emit_log:info", allowed=True,
                    reason=str(i), ticket=ticket)  # fmt: skip
    assert log.path.read_bytes() == b""
    log._wait(ticket)
    assert ticket.pending == 0
    assert [e.reason for e in log.tail(3)] == ["0", "1", "2"]
    assert log.verify().ok


def test_an_append_writes_what_was_queued_before_it(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a")
    ticket = AuditTicket()
    log._record(subject="s", transform="t", scope="emit_log:info", allowed=True,
                reason="queued", ticket=ticket)  # fmt: skip
    entry = log.append(subject="s", transform="t", scope="http_fetch:x", allowed=True, reason="now")
    assert entry.index == 1 and ticket.pending == 0
    assert [e.reason for e in log.tail(2)] == ["queued", "now"]
    log._wait(ticket)  # nothing left to write, nothing failed
    assert log.verify().ok and log.verify().entries == 2


def test_the_queue_is_bounded(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a")
    ticket = AuditTicket()
    for i in range(600):
        log._record(subject="s", transform="t", scope="emit_log:info", allowed=False,
                    reason=str(i), ticket=ticket)  # fmt: skip
    assert ticket.pending < 256
    assert len(log.path.read_bytes().splitlines()) > 300
    log._wait(ticket)
    assert log.verify().entries == 600


def test_a_failed_write_fails_the_barrier_and_the_chain_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path / "a")
    log.append(subject="s", transform="t", scope="emit_log:info", allowed=True, reason="before")
    ticket = AuditTicket()
    log._record(subject="s", transform="t", scope="emit_log:info", allowed=True,
                reason="lost", ticket=ticket)  # fmt: skip
    with monkeypatch.context() as m:
        _fail_writes(m)
        with pytest.raises(AuditError, match="No space left"):
            log._wait(ticket)
    log._wait(ticket)  # the ticket was cleared: it reports a failure once
    log.append(subject="s", transform="t", scope="emit_log:info", allowed=True, reason="after")
    assert [e.reason for e in log.tail(5)] == ["before", "after"]
    assert log.verify().ok


def test_close_and_flush_write_what_is_queued(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a")
    ticket = AuditTicket()
    log._record(subject="s", transform="t", scope="emit_log:info", allowed=True,
                reason="x", ticket=ticket)  # fmt: skip
    log.close()
    assert AuditLog(tmp_path / "a").verify().entries == 1
    with pytest.raises(AuditError, match="closed"):
        log._record(subject="s", transform="t", scope="emit_log:info", allowed=True,
                    reason="y", ticket=ticket)  # fmt: skip


def test_write_behind_gate_queues_result_only_calls_and_denials(wall: Ionwall) -> None:
    grant = _granted(wall)
    gate = wall.gate(grant.id, write_behind=True)
    ctx = _ctx(grant)
    assert gate.check(ctx, "emit_log:info").allowed
    assert gate.check(ctx, "read_pod_data:reports/01.json").allowed
    assert not gate.check(ctx, "http_fetch:evil.example.net").allowed
    assert _written(wall) == []
    gate.flush()
    assert [(e.scope, e.decision) for e in wall.audit_tail(3)] == [
        ("emit_log:info", "allow"),
        ("read_pod_data:reports/01.json", "allow"),
        ("http_fetch:evil.example.net", "deny"),
    ]
    assert wall.audit_verify().ok


def test_write_behind_gate_writes_other_allowed_calls_first(wall: Ionwall) -> None:
    grant = _granted(wall)
    gate = wall.gate(grant.id, write_behind=True)
    ctx = _ctx(grant)
    gate.check(ctx, "emit_log:info")
    assert gate.check(ctx, "http_fetch:api.example.com").allowed
    # on disk before the fetch may happen, after what was decided before it
    assert [b'"emit_log:info"' in line for line in _written(wall)] == [True, False]
    gate.flush()
    assert len(_written(wall)) == 2 and wall.audit_verify().ok


def test_write_behind_gate_that_cannot_record_a_used_call_denies_it(
    wall: Ionwall, monkeypatch: pytest.MonkeyPatch
) -> None:
    grant = _granted(wall)
    gate = wall.gate(grant.id, write_behind=True)
    gate.check(_ctx(grant), "emit_log:info")
    _fail_writes(monkeypatch)
    d = gate.check(_ctx(grant), "http_fetch:api.example.com")
    assert not d.allowed and "cannot be recorded" in d.reason
    with pytest.raises(AuditError):  # the queued log line went down with it
        gate.flush()


def test_plain_gate_flush_is_a_no_op_and_check_still_writes_first(wall: Ionwall) -> None:
    grant = _granted(wall)
    gate = wall.gate(grant.id)
    assert gate.check(_ctx(grant), "emit_log:info").allowed
    assert len(_written(wall)) == 1
    gate.flush()
    wall.flush()


def test_cached_decision_ends_with_a_revocation_in_the_same_run(wall: Ionwall) -> None:
    grant = _granted(wall)
    gate = wall.gate(grant.id, write_behind=True)
    for _ in range(3):
        assert gate.check(_ctx(grant), "emit_log:info").allowed
    with Ionwall(wall.data_dir) as other:
        other.revoke(grant.id)
    d = gate.check(_ctx(grant), "emit_log:info")
    assert not d.allowed and "was revoked" in d.reason
    gate.flush()
    assert [e.decision for e in wall.audit_tail(4)] == ["allow"] * 3 + ["deny"]


# -- through the host -----------------------------------------------------------


def _granted_host(host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(host, "all-imports", scopes=["emit_log:*"])
    with pytest.raises(HostConsentRequired) as info:
        host.invoke("all-imports", LOG_CALL)
    host.ionwall.approve(info.value.request.id)


def test_host_returns_a_result_only_after_its_entries_are_written(
    host: Host, publish_guest: GuestPublisher
) -> None:
    _granted_host(host, publish_guest)
    before = host.ionwall.audit_verify().entries
    assert host.invoke("all-imports", LOG_CALL).value == {"ok": None}
    lines = host.ionwall.audit.path.read_bytes().splitlines()  # read without flushing
    assert len(lines) == before + 1 and b'"emit_log:info"' in lines[-1]


def test_host_fails_the_run_when_its_entries_cannot_be_written(
    host: Host, publish_guest: GuestPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    _granted_host(host, publish_guest)
    real_write = os.write
    audit_fd = host.ionwall.audit._log_fd

    def broken(fd: int, data: bytes) -> int:
        if fd == audit_fd:
            raise OSError(errno.EIO, "Input/output error")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", broken)
    with pytest.raises(AuditError, match="Input/output error"):
        host.invoke("all-imports", LOG_CALL)
    monkeypatch.undo()
    assert host.invoke("all-imports", LOG_CALL).value == {"ok": None}
    assert host.ionwall.audit_verify().ok
