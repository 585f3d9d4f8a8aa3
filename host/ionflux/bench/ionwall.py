"""Issue 3's IONWALL figures: one gate check (allow and deny, audit on) and one
token verification, beside the allow-all gate, all in one process."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from ionwall import AllowAllGate, CallContext, ConsentRequired, Gate, Ionwall

from ._timing import Row, per_call

SUBJECT = "bafkreibenchbenchbenchbenchbenchbenchbenchbenchbenchbench"
SCOPES = ["read_pod_data:reports/*", "publish_nats_topic:ionflux.digest.*", "emit_log:*"]


def run(*, repo: Path, workdir: Path) -> list[Row]:
    with Ionwall(workdir / "ionwall") as wall:
        try:
            grant = wall.authorize(SUBJECT, "bench", "0.1.0", SCOPES)
        except ConsentRequired as exc:
            grant = wall.approve(exc.request.id)
        gate = wall.gate(grant.id)
        ctx = CallContext(SUBJECT, "bench", run_id="run-1", node_id="n1", grant_id=grant.id)
        allow_all = AllowAllGate()
        token = wall.issue_token(["execute_graph:digest"], timedelta(hours=1)).token

        allowed = per_call(lambda: gate.check(ctx, "read_pod_data:reports/01.json"), n=2000)
        denied = per_call(lambda: gate.check(ctx, "http_fetch:evil.example.net"), n=2000)
        no_gate = per_call(lambda: allow_all.check(ctx, "read_pod_data:reports/01.json"), n=2000)

        # A run with ten result-only calls: each written at once, or queued by a
        # write-behind gate (what the host uses) and written by its barrier.
        behind = wall.gate(grant.id, write_behind=True)

        def ten(g: Gate) -> None:
            for _ in range(10):
                g.check(ctx, "emit_log:info")
            if g is behind:
                behind.flush()

        ten_sync = per_call(lambda: ten(gate), n=200)
        ten_behind = per_call(lambda: ten(behind), n=200)
        verify = per_call(lambda: wall.verify_token(token, "execute_graph:digest"), n=500)
        verified = wall.audit_verify()
    return [
        Row("gate check, allowed (audit on)", allowed * 1e6, "µs"),
        Row("gate check, denied (audit on)", denied * 1e6, "µs"),
        Row("allow-all gate check (no audit)", no_gate * 1e6, "µs"),
        Row("10 log calls in one run, each entry written at once", ten_sync * 1e6, "µs"),
        Row("10 log calls in one run, write-behind gate + barrier", ten_behind * 1e6, "µs"),
        Row("token verification (EdDSA, scope check)", verify * 1e6, "µs"),
        Row("audit entries written and verified", float(verified.entries), "entries"),
    ]
