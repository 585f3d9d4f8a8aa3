"""A cluster: real ``ionflux up`` processes sharing no files (a data directory each),
one real PostgreSQL (state.backend: postgres), one nats-server with JetStream and
one Kubo node (store.backend: kubo), all on loopback.

What one host publishes, deploys, approves or starts, every host sees; a host
killed with SIGKILL mid-run has its runs finished by another, resumed from
their first step not done (steps done do not run again: counted from the
guests' own messages). Waiting is on records and messages, bounded only to stop
a hang; nothing asserts a duration.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from conftest import MANIFESTS, TESTING
from ionflux.graph import SharedRunHistory
from ionflux.http.testing import UpProcess, chain_graph
from ionflux.state import PgDatabase
from ionflux.store import cid_for_bytes
from ionflux.testing.kubo import KuboDaemon
from ionflux.triggers import NatsServer
from nats.aio.client import Client
from test_durable_runs import five_steps, until, until_async

OPEN = ("accepted", "running")


class Cluster:
    """The servers every host shares, and the hosts' data directories."""

    def __init__(self, root: Path, url: str, server: NatsServer, kubo: KuboDaemon) -> None:
        self.root = root
        self.url = url
        self.server = server
        self.kubo = kubo
        self.db = PgDatabase(url, size=2)
        self.hosts: list[UpProcess] = []

    def data_dir(self, name: str) -> Path:
        data = self.root / name
        data.mkdir(parents=True, exist_ok=True)
        (data / "ionflux.yaml").write_text(
            json.dumps(
                {
                    "limits": {"fuel": 10**12},
                    "nats": {"url": self.server.url, "token": self.server.credentials.token},
                    "state": {"backend": "postgres", "url": self.url},
                    "store": {"backend": "kubo", "kubo_api": self.kubo.api},
                    "graph": {"resume_interval_s": 0.3, "run_lease_s": 30},
                }
            )
        )
        return data

    def cli(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "ionflux.cli", "--data-dir", str(self.data_dir(name)), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"ionflux {' '.join(args)} on {name}: {done.stderr}"
        return done

    def up(self, name: str) -> UpProcess:
        host = UpProcess(self.data_dir(name), nats_url=self.server.url).start(timeout=60)
        self.hosts.append(host)
        return host

    def history(self) -> SharedRunHistory:
        return SharedRunHistory(self.db, recover=False)

    def status(self, run_id: str) -> str | None:
        record = self.history().get(run_id)
        return None if record is None else record.status

    def steps(self, run_id: str) -> dict[str, str]:
        return {s.node_id: s.status for s in self.history().steps(run_id)}

    def owner_pid(self, run_id: str) -> int:
        """The process that drives (or drove) the run: the host that recorded it last."""
        row = self.db.execute("SELECT owner_pid FROM runs WHERE run_id=?", (run_id,)).fetchone()
        assert row is not None, run_id
        return int(row[0])

    def close(self) -> None:
        for host in self.hosts:
            host.kill()
        self.db.close()


@pytest.fixture
def cluster(
    tmp_path: Path, postgres_url: str, nats_server: NatsServer, kubo: KuboDaemon, built: Path
) -> Iterator[Cluster]:
    made = Cluster(tmp_path, postgres_url, nats_server, kubo)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url, **nats_server.connect_options())
    yield nc
    await nc.close()


def publish(cluster: Cluster, tmp_path: Path, name: str, wasm: Path, limits: str = "{}") -> None:
    """``ionflux publish`` on host a, of a manifest written here for a built module."""
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(
        f"name: {name}\nversion: 0.1.0\nabi: component\nlimits: {limits}\n"
        f"module: {{cid: {cid_for_bytes(wasm.read_bytes())}, path: {wasm}}}\n"
    )
    cluster.cli("a", "publish", str(manifest))


def asking(name: str, subject: str, topic: str) -> str:
    """One node that publishes on ``subject`` (it needs a consent); a webhook and a
    core-NATS request trigger."""
    return "\n".join(
        [
            f"name: {name}",
            'version: "1.0.0"',
            "triggers:",
            f"  - {{type: webhook, config: {{path: /hooks/{name}, authentication_method: none}}}}",
            f"  - {{type: event_driven, config: {{topic: {topic}, authentication_method: none}}}}",
            "graph:",
            "  - id: send",
            "    transform: nats-publish",
            f'    inputs: {{subject: "{subject}", payload: "{{{{ trigger.input_data.n }}}}"}}',
            "",
        ]
    )


async def test_publish_on_a_approve_on_b_invoke_through_a_http_and_b_nats(
    cluster: Cluster, client: Client, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    subject, topic = f"cl{tag}.sent", f"cl{tag}.ask"
    cluster.cli("a", "publish", str(MANIFESTS / "nats-publish.yaml"))
    graph = tmp_path / "asks.yaml"
    graph.write_text(asking("asks", subject, topic))
    cluster.cli("a", "graph", "deploy", str(graph))
    assert "nats-publish" in cluster.cli("b", "transforms").stdout  # B sees A's publish
    sent = await client.subscribe(subject)
    a, b = cluster.up("a"), cluster.up("b")

    async with httpx.AsyncClient(base_url=a.url, timeout=30) as http:
        r = await http.post("/hooks/asks", json={"n": 1}, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    await until(lambda: cluster.status(run_id) == "awaiting_approval", "the run to ask consent")
    consent_id = cluster.history().get(run_id).consent_id  # type: ignore[union-attr]
    assert consent_id
    assert consent_id in cluster.cli("b", "consent", "list").stdout  # B sees A's request
    cluster.cli("b", "consent", "approve", consent_id)
    await until(lambda: cluster.status(run_id) == "success", "the approved run to end")
    assert (await sent.next_msg(timeout=30)).data == b"1"
    # The run's log and its step's outputs went to the shared store (Kubo): B reads
    # what A wrote.
    record = cluster.history().get(run_id)
    assert record is not None and record.step_results_summary_cid
    log = json.loads(cluster.cli("b", "pod", "get", record.step_results_summary_cid).stdout)
    assert log["kind"] == "ionflux.run_log/1" and log["run"]["execution_id"] == run_id
    assert [s["node_id"] for s in log["run"]["steps"]] == ["send"]
    assert log["run"]["steps"][0]["outputs"] == {"published": True, "subject": subject}

    # Core-NATS requests, served by whichever host of the queue group takes each:
    # both do (B with A's module, A's graph and the grant approved on B).
    replies = [
        json.loads((await client.request(topic, json.dumps({"n": n}).encode(), timeout=60)).data)
        for n in range(2, 22)
    ]
    assert [r["overall_status"] for r in replies] == ["success"] * 20, replies[0]
    owners = Counter(cluster.owner_pid(r["execution_id"]) for r in replies)
    assert a.proc is not None and b.proc is not None
    assert set(owners) == {a.proc.pid, b.proc.pid}, owners
    got = sorted([int((await sent.next_msg(timeout=30)).data) for _ in range(20)])
    assert got == list(range(2, 22))  # each ran once

    # Either host lists every run.
    for name in ("a", "b"):
        listed = cluster.cli(name, "runs", "list", "--graph", "asks", "--limit", "100").stdout
        assert run_id in listed and all(r["execution_id"] in listed for r in replies)

    # Revoked on B: A's very next run of the graph is not let through (it asks again).
    grants = cluster.cli("b", "grants", "list").stdout
    grant_id = next(w for w in grants.split() if w.startswith("g-"))
    cluster.cli("b", "grants", "revoke", grant_id)
    async with httpx.AsyncClient(base_url=a.url, timeout=30) as http:
        r = await http.post("/hooks/asks", json={"n": 99})
    assert r.status_code == 200, r.text
    assert r.json()["overall_status"] == "awaiting_approval"
    assert [e["kind"] for e in r.json()["error_details"]] == ["consent_required"]
    await client.flush()
    assert sent.pending_msgs == 0  # nothing was published under the revoked grant

    # One audit log: each host's chain, checked together from either host.
    for name in ("a", "b"):
        verified = cluster.cli(name, "audit", "verify").stdout
        assert "audit log intact: 2 chain(s), one per host" in verified, verified


async def test_a_host_killed_mid_run_has_its_runs_resumed_by_another(
    cluster: Cluster, client: Client, tmp_path: Path
) -> None:
    prefix = f"kill{uuid.uuid4().hex[:8]}"
    cluster.cli("a", "publish", str(MANIFESTS / "nats-publish.yaml"))
    publish(cluster, tmp_path, "spin", TESTING / "spin.wasm", "{timeout_ms: 2500}")
    graph = tmp_path / "five.yaml"
    graph.write_text(five_steps(prefix))
    cluster.cli("a", "graph", "deploy", str(graph))
    published: Counter[str] = Counter()

    async def count(msg: Any) -> None:
        published[msg.subject.removeprefix(prefix + ".")] += 1

    await client.subscribe(f"{prefix}.>", cb=count)
    await client.flush()
    a = cluster.up("a")
    async with httpx.AsyncClient(base_url=a.url, timeout=30) as http:
        r = await http.post("/hooks/five", json={}, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    await until(lambda: cluster.status(run_id) == "awaiting_approval", "the consent request")
    consent_id = cluster.history().get(run_id).consent_id  # type: ignore[union-attr]
    cluster.cli("a", "consent", "approve", str(consent_id))
    await until(
        lambda: all(cluster.steps(run_id).get(n) == "success" for n in ("s1", "s2", "s3")),
        "steps 1-3 recorded done",
    )
    a.kill()  # SIGKILL inside s4: nothing drains, nothing is handed over
    assert cluster.status(run_id) == "running" and published["s5"] == 0
    b = cluster.up("b")  # shares no file with A
    await until(lambda: cluster.status(run_id) not in OPEN, "B to finish A's run")
    await until(lambda: published["s5"] == 1, "s5's message")
    await client.flush()
    assert [published[n] for n in ("s1", "s2", "s3", "s5")] == [1, 1, 1, 1]  # resumed
    assert cluster.status(run_id) == "partial_success_with_errors"  # s4 spun to its deadline
    assert b.proc is not None and cluster.owner_pid(run_id) == b.proc.pid


async def test_durable_load_survives_a_host_killed_with_another_serving(
    cluster: Cluster, client: Client, tmp_path: Path
) -> None:
    n = 120
    subject = f"jobs.{uuid.uuid4().hex[:10]}"
    trigger = (
        f"{{type: event_driven, config: {{topic: {subject}, delivery: jetstream, "
        "ack_wait: 2s, authentication_method: none}}"
    )
    publish(cluster, tmp_path, "echo", TESTING / "echo.wasm")
    graph = tmp_path / "jobs.yaml"
    graph.write_text(chain_graph("jobs", nodes=1, triggers=[trigger]))
    cluster.cli("a", "graph", "deploy", str(graph))
    a, b = cluster.up("a"), cluster.up("b")
    js = client.jetstream()

    def results() -> tuple[Counter[str], int]:
        rows = cluster.db.execute(
            "SELECT trigger_details_json, status FROM runs WHERE graph_name='jobs'"
        ).fetchall()
        ended = Counter(json.loads(d)["msg_id"] for d, s in rows if s not in OPEN)
        return ended, sum(1 for _, s in rows if s in OPEN)

    for i in range(n):
        await js.publish(
            subject, json.dumps({"text": str(i)}).encode(), headers={"Nats-Msg-Id": f"m{i}"}
        )
    await until(lambda: len(results()[0]) >= n // 3, "a third of the runs")
    a.kill()
    await until(lambda: len(results()[0]) == n, "every message's run (on B)")
    stream = await js.find_stream_name_by_subject(subject)

    async def settled() -> bool:
        info = await js.consumer_info(stream, "ionflux-jobs")
        return info.num_pending == 0 and info.num_ack_pending == 0

    await until_async(settled, "the consumer to settle")
    ended, still_open = results()
    assert set(ended) == {f"m{i}" for i in range(n)}  # 0 lost
    assert max(ended.values()) == 1, [m for m, c in ended.items() if c > 1]  # 0 run twice
    assert still_open == 0
    assert b.proc is not None and b.proc.poll() is None


async def test_a_schedule_fires_once_across_hosts(cluster: Cluster, tmp_path: Path) -> None:
    publish(cluster, tmp_path, "echo", TESTING / "echo.wasm")
    name = f"s{uuid.uuid4().hex[:8]}"
    tick = '{type: schedule, config: {cron: "* * * * * *", input: {text: tick}}}'
    graph = tmp_path / "tick.yaml"
    graph.write_text(chain_graph(name, nodes=1, triggers=[tick]))
    cluster.cli("a", "graph", "deploy", str(graph))
    a, b = cluster.up("a"), cluster.up("b")

    def fires() -> list[str]:
        ran = cluster.history().list_runs(graph=name, limit=1000)
        return [str(r.trigger_details["scheduled_for"]) for r in ran]  # type: ignore[index]

    await until(lambda: len(set(fires())) >= 4, "four fires")
    a.terminate()
    b.terminate()  # both drain: every fire each started is recorded
    ran = cluster.history().list_runs(graph=name, limit=1000)
    seen = fires()
    assert len(seen) == len(set(seen)), Counter(seen).most_common(3)  # each fire ran once
    assert {cluster.owner_pid(r.run_id) for r in ran} <= {a.proc.pid, b.proc.pid}  # type: ignore[union-attr]
    assert all(r.status == "success" for r in ran)
    claimed = cluster.db.execute("SELECT count(*) FROM schedule_fires").fetchone()
    assert claimed is not None and claimed[0] >= len(seen)  # claimed in the shared state
