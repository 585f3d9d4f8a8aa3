"""IONWALL across hosts: two ``Ionwall`` instances ("hosts": separate data
directories, so separate signing keys) sharing one real PostgreSQL.

A grant approved on one is honoured on the other, a token from one verifies
on the other, a revocation on one reaches the other's gate through the feed
(waited for, not slept on), a host cut from the database fails closed once
past its bound and recovers when the feed catches up, and ``audit verify``
on either checks both chains and names tampering in either."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from ionwall import (
    CallContext,
    ConsentRequired,
    Grant,
    Ionwall,
    RevocationFeedLost,
    StoreError,
    TokenInvalid,
    TokenRevoked,
)
from ionwall._audit import _digest

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
SCOPES = ["read_pod_data:reports/*", "emit_log:*"]
WAIT_S = 20.0  # an upper bound for events that take milliseconds


@pytest.fixture
def hosts(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Ionwall, Ionwall]]:
    with (
        Ionwall(tmp_path / "a" / "ionwall", state_url=postgres_url) as a,
        Ionwall(tmp_path / "b" / "ionwall", state_url=postgres_url) as b,
    ):
        yield a, b


def _granted(wall: Ionwall, subject: str = CID) -> Grant:
    try:
        return wall.authorize(subject, "digest", "1.0.0", SCOPES)
    except ConsentRequired as exc:
        return wall.approve(exc.request.id)


def _ctx(grant: Grant) -> CallContext:
    return CallContext(grant.subject, "digest", "run-1", "node-a", grant.id)


def _caught_up(wall: Ionwall, other: Ionwall) -> None:
    """Waits until ``wall``'s feed has applied every revocation made so far."""
    feed, latest = wall.revocation_feed, other.revocation_feed
    assert feed is not None and latest is not None
    target = latest.latest()
    assert feed.wait(lambda f: f.connected and f.seen >= target, WAIT_S)


def test_a_grant_approved_on_one_host_is_honoured_on_the_other(
    hosts: tuple[Ionwall, Ionwall],
) -> None:
    a, b = hosts
    assert a.kid != b.kid  # two hosts, two keys
    with pytest.raises(ConsentRequired) as asked:
        b.authorize(CID, "digest", "1.0.0", SCOPES)
    grant = a.approve(asked.value.request.id)  # the owner answers on A
    assert b.authorize(CID, "digest", "1.0.0", SCOPES).id == grant.id  # no second prompt
    assert b.gate(grant.id).check(_ctx(grant), "read_pod_data:reports/1.json").allowed
    assert b.grant_live(grant.id)
    assert [g.id for g in b.grants()] == [grant.id]


def test_a_token_from_one_host_verifies_on_the_other_and_a_strangers_does_not(
    hosts: tuple[Ionwall, Ionwall], tmp_path: Path
) -> None:
    a, b = hosts
    token = a.issue_token(["execute_graph:digest"], timedelta(hours=1))
    assert b.verify_token(token.token, "execute_graph:digest").token_id == token.id
    with Ionwall(tmp_path / "stranger") as stranger:  # not of the cluster: its key unpublished
        forged = stranger.issue_token(["execute_graph:digest"]).token
    with pytest.raises(TokenInvalid, match="no host of this cluster published"):
        b.verify_token(forged)


def test_a_revocation_on_one_host_denies_the_next_check_on_the_other(
    hosts: tuple[Ionwall, Ionwall],
) -> None:
    a, b = hosts
    grant = _granted(a)
    token = a.issue_token(["execute_graph:digest"])
    gate = a.gate(grant.id, write_behind=True)  # a run in progress on A
    assert gate.check(_ctx(grant), "read_pod_data:reports/1.json").allowed  # cached from now
    assert a.verify_token(token.token).token_id == token.id
    b.revoke(grant.id)
    b.revoke(token.id)
    # No waiting here: a revoke returns once every other host's feed has read it.
    denied = gate.check(_ctx(grant), "read_pod_data:reports/1.json")
    assert not denied.allowed and f"grant {grant.id} was revoked" in denied.reason
    with pytest.raises(TokenRevoked):
        a.verify_token(token.token)
    gate.flush()


class _Proxy:
    """A TCP relay in front of PostgreSQL: ``cut()`` is a network partition
    (every relayed connection closed, new ones closed on arrival), ``mend()``
    ends it. Real sockets; only the partition is staged."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.socks: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            _hang_up(s)

    def cut(self) -> None:
        self.open = False
        with self.lock:
            for s in self.socks:
                _hang_up(s)
            self.socks.clear()

    def mend(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def _hang_up(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


class _Clock:
    """The monotonic clock host A measures its feed's silence with."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_host_cut_from_the_feed_fails_closed_past_its_bound_then_catches_up(
    tmp_path: Path, postgres_url: str
) -> None:
    parts = urlsplit(postgres_url)
    assert parts.hostname is not None and parts.port is not None
    proxy = _Proxy(parts.hostname, parts.port)
    via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    clock = _Clock()
    try:
        with (
            # a short bound: B's revoke waits for A until A is past it (by the database's
            # clock), while A itself measures its silence on the test's clock
            Ionwall(
                tmp_path / "a", state_url=via_proxy, revocation_feed_bound=1.0, monotonic=clock
            ) as a,
            Ionwall(tmp_path / "b", state_url=postgres_url) as b,
        ):
            feed = a.revocation_feed
            assert feed is not None
            kept, other = _granted(b), _granted(b, subject=CID[:-1] + "a")
            gate = a.gate(kept.id, write_behind=True)  # a run in progress on A
            assert gate.check(_ctx(kept), "read_pod_data:reports/1.json").allowed

            proxy.cut()
            assert feed.wait(lambda f: not f.connected, WAIT_S)
            b.revoke(kept.id)  # A cannot hear of it: returns once A is silent past its bound
            # Within the bound A still trusts what it knew (the documented window)...
            assert gate.check(_ctx(kept), "read_pod_data:reports/1.json").allowed
            clock.now += 1.0  # ...past it, it denies everything, saying why
            denied = gate.check(_ctx(kept), "read_pod_data:reports/1.json")
            assert not denied.allowed
            assert "revocation feed has been silent for 1.0 s" in denied.reason
            assert "state.revocation_feed_bound" in denied.reason
            assert not a.grant_live(kept.id)
            with pytest.raises(RevocationFeedLost) as lost:
                a.verify_token(kept.token)
            assert lost.value.kind == "revocation_feed_lost" and lost.value.bound == 1.0

            proxy.mend()  # the feed reconnects and re-reads what it missed
            _caught_up(a, b)
            after = gate.check(_ctx(kept), "read_pod_data:reports/1.json")
            assert not after.allowed and f"grant {kept.id} was revoked" in after.reason
            assert a.check(other.id, _ctx(other), "read_pod_data:reports/1.json").allowed
            gate.flush()  # the entries queued during the cut reach the database
            report = a.audit_verify()
            assert report.ok, str(report)
    finally:
        proxy.close()


def _chain_lines(url: str, kid: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return [
            (int(i), str(line))
            for i, line in conn.execute(
                "SELECT idx, line FROM ionwall_audit WHERE chain=%s ORDER BY idx", (kid,)
            )
        ]


def _set_line(url: str, kid: str, index: int, line: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE ionwall_audit SET line=%s WHERE chain=%s AND idx=%s", (line, kid, index)
        )


def test_audit_verify_on_either_host_checks_both_chains(
    hosts: tuple[Ionwall, Ionwall], postgres_url: str
) -> None:
    a, b = hosts
    grant = _granted(a)
    for wall in (a, b):
        wall.check(grant.id, _ctx(grant), "read_pod_data:reports/1.json")
        wall.check(grant.id, _ctx(grant), "http_fetch:evil.example.net")
    for wall in (a, b):
        report = wall.audit_verify()
        assert report.ok, str(report)
        assert {c.chain for c in report.chains} == {a.kid, b.kid}
        assert "2 chain(s), one per host" in str(report)
    assert {e.decision for e in a.audit_tail(100)} >= {"allow", "deny", "consent-approved"}
    assert len(a.audit_tail(100)) == report.entries  # entries of both hosts

    # Tampering in B's chain is found by A.
    index, line = _chain_lines(postgres_url, b.kid)[1]
    obj = json.loads(line)
    _set_line(postgres_url, b.kid, index, json.dumps({**obj, "decision": "allow"}))
    report = a.audit_verify()
    assert not report.ok and report.chain == b.kid and report.index == 1, str(report)
    assert f"damaged in chain {b.kid}" in str(report)
    _set_line(postgres_url, b.kid, index, line)
    assert a.audit_verify().ok


def test_a_rehashed_chain_fails_its_signed_checkpoint(
    hosts: tuple[Ionwall, Ionwall], postgres_url: str
) -> None:
    a, b = hosts
    grant = _granted(a)
    for _ in range(3):
        b.check(grant.id, _ctx(grant), "http_fetch:evil.example.net")
    b.audit.checkpoint()
    # Whoever can write the database (but has not B's key) rewrites entry 1 and
    # re-hashes every entry after it, and the head: the chain holds, the signature not.
    lines = _chain_lines(postgres_url, b.kid)
    prev = json.loads(lines[0][1])["hash"]
    for index, line in lines[1:]:
        obj = json.loads(line)
        obj.pop("hash")
        obj["prev"] = prev
        if index == 1:
            obj["decision"] = "allow"
        obj["hash"] = prev = _digest(obj)
        _set_line(postgres_url, b.kid, index, json.dumps(obj))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE ionwall_audit_heads SET last=%s WHERE chain=%s", (prev, b.kid))
    report = a.audit_verify()
    assert not report.ok and report.chain == b.kid
    assert "not the ones the checkpoint signed" in (report.problem or "")


def test_a_replaced_published_key_is_refused(
    hosts: tuple[Ionwall, Ionwall], postgres_url: str, tmp_path: Path
) -> None:
    a, b = hosts
    b.check(None, CallContext(CID, "digest"), "emit_log:info")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE ionwall_keys SET public_key=%s WHERE kid=%s", (a.public_key, b.kid))
    report = a.audit_verify()
    assert not report.ok and report.chain == b.kid
    assert "no key is published for chain" in (report.problem or "")
    with pytest.raises(StoreError, match="it was replaced"):
        Ionwall(tmp_path / "b" / "ionwall", state_url=postgres_url)


def test_a_host_cut_from_the_feed_answers_callers_503() -> None:
    from ionflux.triggers import http_status

    lost = RevocationFeedLost(5.0, 6.2, "the connection failed")
    assert http_status(lost) == 503  # another host may serve them: not 401, not 500
    assert lost.to_dict()["kind"] == "revocation_feed_lost"


def test_the_audit_verify_command_on_either_host_names_a_tampered_chain(
    tmp_path: Path, postgres_url: str
) -> None:
    from click.testing import CliRunner
    from ionflux.cli import main

    env = {"IONFLUX_STATE__BACKEND": "postgres", "IONFLUX_STATE__URL": postgres_url}
    with (
        Ionwall(tmp_path / "a" / "ionwall", state_url=postgres_url) as a,
        Ionwall(tmp_path / "b" / "ionwall", state_url=postgres_url) as b,
    ):
        grant = _granted(a)
        b.check(grant.id, _ctx(grant), "http_fetch:evil.example.net")
    for host in ("a", "b"):
        ok = CliRunner().invoke(
            main, ["--data-dir", str(tmp_path / host), "audit", "verify"], env=env
        )
        assert ok.exit_code == 0, ok.output
        assert "audit log intact: 2 chain(s), one per host" in ok.output
    index, line = _chain_lines(postgres_url, b.kid)[0]
    _set_line(postgres_url, b.kid, index, line.replace('"deny"', '"allow"'))
    bad = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "a"), "audit", "verify"], env=env)
    assert bad.exit_code == 1
    assert f"audit log damaged in chain {b.kid}" in bad.output
    assert "entry 0 was altered" in bad.output


def test_processes_of_one_host_append_one_chain(tmp_path: Path, postgres_url: str) -> None:
    # Two workers of one host (one data directory, one key) write one chain at once.
    with (
        Ionwall(tmp_path / "ionwall", state_url=postgres_url) as one,
        Ionwall(tmp_path / "ionwall", state_url=postgres_url) as two,
    ):
        assert one.kid == two.kid
        grant = _granted(one)
        start = threading.Barrier(2)

        def deny_many(wall: Ionwall) -> None:
            gate = wall.gate(grant.id, write_behind=True)
            start.wait()
            for n in range(300):
                gate.check(_ctx(grant), f"http_fetch:host{n}.example.net")
                if n % 7 == 0:
                    gate.flush()
            gate.flush()

        workers = [threading.Thread(target=deny_many, args=(w,)) for w in (one, two)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        report = two.audit_verify()
        assert report.ok, str(report)
        assert len(report.chains) == 1 and report.entries >= 600


def test_a_forged_notice_neither_revokes_nor_hides_a_revocation(
    hosts: tuple[Ionwall, Ionwall], postgres_url: str
) -> None:
    a, b = hosts
    feed = a.revocation_feed
    assert feed is not None
    grant = _granted(a)
    gate = a.gate(grant.id, write_behind=True)
    assert gate.check(_ctx(grant), "read_pod_data:reports/1.json").allowed
    stamp = feed.stamp
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # any login may NOTIFY
        conn.execute("SELECT pg_notify('ionwall_revocations', %s)", (str(feed.seen + 1),))
    assert feed.wait(lambda f: f.stamp != stamp, WAIT_S)
    assert gate.check(_ctx(grant), "read_pod_data:reports/1.json").allowed  # revokes nothing
    assert feed.seen == 0  # what was seen comes from rows, not from a notice's payload
    b.revoke(grant.id)  # the real one, with the seq the forged notice claimed
    _caught_up(a, b)
    assert not gate.check(_ctx(grant), "read_pod_data:reports/1.json").allowed
    gate.flush()


def test_a_revocation_whose_notice_was_lost_is_read_by_the_heartbeat(
    hosts: tuple[Ionwall, Ionwall], postgres_url: str
) -> None:
    a, _ = hosts
    feed = a.revocation_feed
    assert feed is not None
    grant = _granted(a)
    gate = a.gate(grant.id, write_behind=True)
    assert gate.check(_ctx(grant), "read_pod_data:reports/1.json").allowed
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # revoked, no NOTIFY sent
        conn.execute("UPDATE ionwall_grants SET revoked_at=1 WHERE id=%s", (grant.id,))
        row = conn.execute(
            "INSERT INTO ionwall_revocations (grant_id, revoked_at) VALUES (%s, 1) RETURNING seq",
            (grant.id,),
        ).fetchone()
    assert row is not None
    assert feed.wait(lambda f: f.seen >= row[0], WAIT_S)  # the next heartbeat re-reads
    denied = gate.check(_ctx(grant), "read_pod_data:reports/1.json")
    assert not denied.allowed and "revoked" in denied.reason
    gate.flush()
