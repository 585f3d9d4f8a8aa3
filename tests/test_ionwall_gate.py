"""The gate: every call consults the grant afresh, and every decision is audited."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ionwall import (
    AllowAllGate,
    AllowListGate,
    CallContext,
    ConsentRequired,
    Gate,
    Grant,
    Ionwall,
    IonwallError,
    Policy,
)

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
SCOPES = [
    "read_pod_data:reports/*",
    "publish_nats_topic:ionflux.digest.*",
    "http_fetch:api.example.com",
    "emit_log:*",
]
WIT = Path(__file__).resolve().parents[1] / "wit" / "transform.wit"
# One concrete scope per host import of the WIT world, as the runtime resolves them.
IMPORT_SCOPES = {
    "log": "emit_log:info",
    "config": "read_config:greeting",
    "pod": "read_pod_data:reports/01.json",
    "pod.put": "write_pod_data:reports/02.json",
    "bus": "publish_nats_topic:ionflux.digest.daily",
    "http": "http_fetch:api.example.com",
}


@pytest.fixture
def wall(tmp_path: Path) -> Iterator[Ionwall]:
    with Ionwall(tmp_path / "ionwall") as w:
        yield w


def _granted(wall: Ionwall, scopes: list[str] = SCOPES) -> Grant:
    try:
        return wall.authorize(CID, "digest", "1.0.0", scopes)
    except ConsentRequired as exc:
        return wall.approve(exc.request.id)


def _ctx(grant: Grant | None) -> CallContext:
    return CallContext(CID, "digest", "run-1", "node-a", grant.id if grant else None)


def test_every_wit_import_is_denied_without_a_grant(wall: Ionwall) -> None:
    interfaces = set(re.findall(r"^\s*import (\w+);", WIT.read_text(), re.MULTILINE))
    assert interfaces == {"log", "config", "pod", "bus", "http"}
    gate = wall.gate(None)
    for scope in IMPORT_SCOPES.values():
        decision = gate.check(_ctx(None), scope)
        assert not decision.allowed and decision.reason == "no grant"
    assert [e.reason for e in wall.audit_tail(10)] == ["no grant"] * len(IMPORT_SCOPES)


def test_allow_and_deny_follow_the_grant(wall: Ionwall) -> None:
    grant = _granted(wall)
    gate: Gate = wall.gate(grant.id)
    ctx = _ctx(grant)
    allowed = {
        "read_pod_data:reports/01.json",
        "publish_nats_topic:ionflux.digest.daily",
        "http_fetch:api.example.com",
        "emit_log:debug",
    }
    denied = {
        "read_pod_data:secrets/keys.json",
        "write_pod_data:reports/01.json",
        "http_fetch:api.example.com.evil.net",
        "http_fetch:api.example.com:8080",
        "http_fetch:127.0.0.1:6379",
        "publish_nats_topic:ionflux.payroll.run",
        "read_config:greeting",
    }
    for scope in allowed:
        d = gate.check(ctx, scope)
        assert d.allowed and d.scope == scope and grant.id in d.reason
    for scope in denied:
        d = gate.check(ctx, scope)
        assert not d.allowed and d.reason == f"not covered by grant {grant.id}"
    bad = gate.check(ctx, "read_pod_data:")
    assert not bad.allowed and bad.reason.startswith("unparseable scope")
    assert wall.gate("g-unknown").check(ctx, "emit_log:info").reason == "unknown grant g-unknown"


def test_revocation_stops_the_next_call_of_a_running_run(wall: Ionwall) -> None:
    grant = _granted(wall)
    gate = wall.gate(grant.id)
    assert gate.check(_ctx(grant), "emit_log:info").allowed
    wall.revoke(grant.id)
    d = gate.check(_ctx(grant), "emit_log:info")
    assert not d.allowed and "was revoked" in d.reason


def test_revocation_by_another_process_stops_the_next_call(wall: Ionwall, tmp_path: Path) -> None:
    grant = _granted(wall)
    gate = wall.gate(grant.id)
    assert gate.check(_ctx(grant), "emit_log:info").allowed
    script = (
        "import sys; from pathlib import Path; from ionwall import Ionwall\n"
        "with Ionwall(Path(sys.argv[1])) as w: w.revoke(sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(wall.data_dir), grant.id], check=True)
    d = gate.check(_ctx(grant), "emit_log:info")
    assert not d.allowed and "was revoked" in d.reason


def test_revocation_by_a_second_instance_in_this_process(wall: Ionwall) -> None:
    grant = _granted(wall)
    gate = wall.gate(grant.id)
    assert gate.check(_ctx(grant), "emit_log:info").allowed
    with Ionwall(wall.data_dir) as other:
        other.revoke(grant.id)
    assert not gate.check(_ctx(grant), "emit_log:info").allowed


def test_expiry_stops_the_next_call(tmp_path: Path) -> None:
    from datetime import timedelta

    now = [time.time()]
    with Ionwall(tmp_path / "iw", clock=lambda: now[0]) as wall:
        try:
            wall.authorize(CID, "digest", "1", SCOPES)
        except ConsentRequired as exc:
            grant = wall.approve(exc.request.id, expires=timedelta(minutes=1))
        gate = wall.gate(grant.id)
        assert gate.check(_ctx(grant), "emit_log:info").allowed
        now[0] += 61
        d = gate.check(_ctx(grant), "emit_log:info")
        assert not d.allowed and "expired at" in d.reason
        # An expired grant does not answer the request any more: ask again.
        with pytest.raises(ConsentRequired):
            wall.authorize(CID, "digest", "1", SCOPES)


def test_always_deny_applies_at_every_call_even_to_granted_scopes(tmp_path: Path) -> None:
    with Ionwall(tmp_path / "iw") as wall:
        grant = _granted(wall, ["http_fetch:**"])
    policy = Policy().with_always_deny("http_fetch:169.254.169.254")
    with Ionwall(tmp_path / "iw", policy) as wall:
        gate = wall.gate(grant.id)
        assert gate.check(_ctx(grant), "http_fetch:api.example.com").allowed
        d = gate.check(_ctx(grant), "http_fetch:169.254.169.254")
        assert not d.allowed and "always denies" in d.reason


def test_audit_records_each_decision_with_its_context(wall: Ionwall) -> None:
    grant = _granted(wall)
    gate = wall.gate(grant.id)
    gate.check(_ctx(grant), "read_pod_data:reports/01.json")
    gate.check(_ctx(grant), "http_fetch:evil.example.net")
    allow, deny = wall.audit_tail(2)
    assert (allow.decision, deny.decision) == ("allow", "deny")
    assert allow.subject == CID and allow.transform == "digest"
    assert (allow.run_id, allow.node_id, allow.grant_id) == ("run-1", "node-a", grant.id)
    assert deny.scope == "http_fetch:evil.example.net"
    assert deny.prev == allow.hash
    assert wall.audit_verify().ok


def test_concurrent_checks_approvals_and_revocations(wall: Ionwall) -> None:
    grants = [_granted(wall, ["emit_log:*", f"read_config:k{i}"]) for i in range(4)]
    errors: list[BaseException] = []
    decisions: list[bool] = []
    lock = threading.Lock()

    def check(grant: Grant) -> None:
        try:
            gate = wall.gate(grant.id)
            for _ in range(100):
                d = gate.check(_ctx(grant), "emit_log:info")
                with lock:
                    decisions.append(d.allowed)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def churn(i: int) -> None:
        try:
            for j in range(5):
                try:
                    wall.authorize(f"bafy{i}", "t", str(j), ["emit_log:info"])
                except ConsentRequired as exc:
                    wall.revoke(wall.approve(exc.request.id).id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=check, args=(g,)) for g in grants]
    threads += [threading.Thread(target=churn, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    wall.revoke(grants[0].id)
    for t in threads:
        t.join()
    assert errors == []
    assert len(decisions) == 400
    assert sum(decisions) >= 300  # grants[0] may be revoked part-way
    assert len(wall.grants()) == 4 + 15
    report = wall.audit_verify()
    assert report.ok, report
    # 400 gate decisions, and the owner's: 4 + 15 requests and approvals (4 x 2
    # scopes, 15 x 1), 15 + 1 revocations (the last of 2 scopes).
    kinds = Counter(e.decision for e in wall.audit_tail(report.entries))
    assert kinds["allow"] + kinds["deny"] == 400
    assert kinds["consent-requested"] == kinds["consent-approved"] == 4 * 2 + 15
    assert kinds["grant-revoked"] == 15 + 2
    assert report.entries == 400 + 23 + 23 + 17


def test_fake_gates() -> None:
    ctx = CallContext(CID, "digest")
    assert AllowAllGate().check(ctx, "anything at all").allowed
    gate = AllowListGate(["read_pod_data:reports/*"])
    assert gate.check(ctx, "read_pod_data:reports/1").allowed
    assert not gate.check(ctx, "read_pod_data:other").allowed
    assert not gate.check(ctx, "bogus").allowed


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(writable source, the same seen through a read-only bind mount); root only:
    as root, ``chmod a-w`` would stop nothing."""
    source, target = tmp_path / "source", tmp_path / "ro"
    source.mkdir()
    target.mkdir()
    bound = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True)
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount (needs root): {bound.stderr.decode().strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], capture_output=True)
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only: {ro.stderr.decode().strip()}")
        yield source, target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_a_read_only_data_directory_reads_and_denies_what_it_cannot_record(
    read_only_mount: tuple[Path, Path],
) -> None:
    source, target = read_only_mount
    with Ionwall(source / "iw") as wall:
        try:
            wall.authorize(CID, "digest", "1.0.0", ["emit_log:*"])
        except ConsentRequired as exc:
            grant = wall.approve(exc.request.id)
    with Ionwall(target / "iw") as wall:  # no traceback: every file opened read-only
        assert [g.id for g in wall.grants()] == [grant.id]
        report = wall.audit_verify()
        assert report.ok and report.signed == report.entries > 0, report
        decision = wall.gate(grant.id).check(CallContext(CID, "digest"), "emit_log:info")
        assert not decision.allowed and "cannot be recorded" in decision.reason
        assert "Read-only file system" in decision.reason
        with pytest.raises(IonwallError):
            wall.revoke(grant.id)
