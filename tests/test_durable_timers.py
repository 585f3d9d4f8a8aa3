"""Durable timers: a node with ``delay`` (or ``until``) leaves its run recorded
``waiting`` with a wake time, holding no thread; the host that looks when it is
due drives it on, across a restart. Real ``ionflux up`` processes, a real
nats-server; what ran is counted from the guests' own messages. Waiting is on
records and messages, with bounds that only stop a hang (the delay is 1 s)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from ionflux.graph import RunHistory
from ionflux.http.testing import UpProcess
from ionflux.triggers import NatsServer
from nats.aio.client import Client
from test_durable_runs import client, prepare, publish_node, until  # noqa: F401


def timed(name: str, prefix: str, wait: str) -> str:
    lines = [
        f"name: {name}",
        'version: "1.0.0"',
        "triggers:",
        f"  - {{type: webhook, config: {{path: /hooks/{name}, authentication_method: none}}}}",
        "graph:",
        *publish_node("before", prefix, None),
        *publish_node("after", prefix, "before"),
        f"    {wait}",
    ]
    return "\n".join(lines) + "\n"


def record(data_dir: Path, run_id: str) -> Any:
    runs = RunHistory(data_dir / "runs.sqlite3", recover=False)
    try:
        return runs.get(run_id), {s.node_id: s for s in runs.steps(run_id)}
    finally:
        runs.close()


async def test_a_delayed_node_waits_recorded_and_runs_after_a_restart(
    tmp_path: Path,
    nats_server: NatsServer,
    client: Client,  # noqa: F811
    built: Path,
) -> None:
    data = tmp_path / "host"
    prefix = f"tm{uuid.uuid4().hex[:8]}"
    prepare(data, nats_server, timed("later", prefix, "delay: 1s"))
    seen: Counter[str] = Counter()

    async def got(msg: Any) -> None:
        seen[msg.subject.rsplit(".", 1)[-1]] += 1

    await client.subscribe(f"{prefix}.>", cb=got)
    up = UpProcess(data, nats_url=nats_server.url).start()
    try:
        async with httpx.AsyncClient(base_url=up.url, timeout=30) as http:
            r = await http.post("/hooks/later", json={}, headers={"Prefer": "respond-async"})
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        waiting, steps = await until(
            lambda: (x := record(data, run_id)) and x[0] and x[0].status == "waiting" and x,
            "the run to wait",
        )
        assert waiting.lease_owner is None and waiting.wake_at is not None
        assert steps["after"].status == "waiting" and steps["after"].end_time == waiting.wake_at
        assert steps["before"].status == "success"
    finally:
        up.kill()  # SIGKILL while it waits: the timer is in the record, not in a thread
    up = UpProcess(data, nats_url=nats_server.url).start()
    try:
        _, steps = await until(
            lambda: (x := record(data, run_id)) and x[0].status == "success" and x,
            "the woken run to end",
        )
        assert steps["after"].status == "success"
        assert steps["after"].start_time >= waiting.wake_at  # it started once due
        await until(lambda: seen["after"] == 1, "after's message")
        await client.flush()
        assert seen == Counter({"before": 1, "after": 1})  # nothing ran twice
    finally:
        up.terminate()


async def test_until_a_past_time_runs_at_once_and_a_bad_time_fails_the_node(
    tmp_path: Path,
    nats_server: NatsServer,
    built: Path,
) -> None:
    data = tmp_path / "host"
    prefix = f"tm{uuid.uuid4().hex[:8]}"
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    prepare(
        data,
        nats_server,
        timed("past", prefix, f'until: "{past}"'),
        timed("bad", prefix, 'until: "{{trigger.input_data.when}}"'),
    )
    with UpProcess(data, nats_url=nats_server.url) as up:
        async with httpx.AsyncClient(base_url=up.url, timeout=30) as http:
            r = await http.post("/hooks/past", json={})
            assert r.json()["overall_status"] == "success", r.text
            r = await http.post("/hooks/bad", json={"when": "tomorrow-ish"})
            body = r.json()
            assert body["overall_status"] == "failure", r.text
            assert "'until' is not a time" in str(body["error_details"])
