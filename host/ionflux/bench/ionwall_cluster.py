"""IONWALL across hosts (issue 13): how fast a revocation on one host stops the
gate of another, and what a gate check costs on a cluster host.

A real PostgreSQL (``ionflux.testing.postgres``) and two processes, each an
``Ionwall`` with its own data directory (so its own key) on the same
database. Each round: this process (host A) makes a grant, the other (host
B) starts a run under it (one allowed check), A revokes it, and B checks in
a loop until it is denied. Propagation is the time from just before A's
``revoke`` to B's first denial, on the machine's one monotonic clock; the
revoke itself returns once B's feed has confirmed it.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path

from ionwall import CallContext, Ionwall

from ..testing.postgres import PostgresServer
from ._timing import Row, per_call

SUBJECT = "bafkreibenchbenchbenchbenchbenchbenchbenchbenchbenchbench"
SCOPE = "read_pod_data:reports/01.json"
ROUNDS = 200
_GIVE_UP_S = 5.0  # past this a round is a failure, not a figure


def run(*, repo: Path, workdir: Path) -> list[Row]:
    workdir.mkdir(parents=True, exist_ok=True)
    with PostgresServer() as server:
        url = server.create_database("bench_ionwall")
        with Ionwall(workdir / "a", state_url=url) as a:
            ctx = multiprocessing.get_context("spawn")
            ours, theirs = ctx.Pipe()
            other = ctx.Process(target=_host_b, args=(workdir / "b", url, theirs), daemon=True)
            other.start()
            try:
                assert ours.recv() == "ready"
                rounds = [_round(a, ours) for _ in range(ROUNDS)]
                ours.send(None)
                other.join(30)
            finally:
                if other.is_alive():
                    other.kill()
            behind, ten = _gate_costs(a)
    delays = sorted(d for d, _ in rounds)
    revokes = sorted(r for _, r in rounds)
    return [
        Row("revocation propagation to another host's gate, p50", _ms(delays, 50), "ms"),
        Row("revocation propagation to another host's gate, p99", _ms(delays, 99), "ms"),
        Row("revoke, until every other host confirmed it, p50", _ms(revokes, 50), "ms"),
        Row("revoke, until every other host confirmed it, p99", _ms(revokes, 99), "ms"),
        Row("gate check on a cluster host, allowed, write-behind", behind * 1e6, "µs"),
        Row("10 log calls in one run on a cluster host, write-behind + barrier", ten * 1e6, "µs"),
    ]


def _ms(seconds: list[float], percentile: int) -> float:
    return statistics.quantiles(seconds, n=100)[percentile - 1] * 1e3


def _round(a: Ionwall, pipe: Connection) -> tuple[float, float]:
    """(revoke to B's first denial, the revoke call), in seconds."""
    grant = a.issue_token([SCOPE])
    pipe.send(grant.id)
    assert pipe.recv() == "running"  # B's run has checked once: allowed and cached
    start = time.monotonic()
    a.revoke(grant.id)
    revoked = time.monotonic() - start
    denied_at = pipe.recv()
    if denied_at is None:
        raise RuntimeError(f"host B still allowed a revoked grant after {_GIVE_UP_S} s")
    return float(denied_at) - start, revoked


def _host_b(data_dir: Path, url: str, pipe: Connection) -> None:
    with Ionwall(data_dir, state_url=url) as b:
        pipe.send("ready")
        while (grant_id := pipe.recv()) is not None:
            gate = b.gate(grant_id, write_behind=True)
            ctx = CallContext(SUBJECT, "bench", "run-1", "n1", grant_id)
            if not gate.check(ctx, SCOPE).allowed:
                raise RuntimeError(f"host B does not honour grant {grant_id}")
            pipe.send("running")
            give_up = time.monotonic() + _GIVE_UP_S
            denied_at: float | None = None
            while time.monotonic() < give_up:
                if not gate.check(ctx, SCOPE).allowed:
                    denied_at = time.monotonic()
                    break
                time.sleep(0)  # a host's run does other work between imports
            gate.flush()
            pipe.send(denied_at)


def _gate_costs(a: Ionwall) -> tuple[float, float]:
    grant = a.issue_token(["read_pod_data:reports/*", "emit_log:*"])
    ctx = CallContext(SUBJECT, "bench", "run-1", "n1", grant.id)
    gate = a.gate(grant.id, write_behind=True)
    behind = per_call(lambda: gate.check(ctx, SCOPE), n=2000)
    gate.flush()

    def ten() -> None:
        for _ in range(10):
            gate.check(ctx, "emit_log:info")
        gate.flush()

    return behind, per_call(ten, n=100)
