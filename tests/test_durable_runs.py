"""Durable runs against real processes: ``ionflux up`` killed with SIGKILL mid-run,
restarted on the same data directory, a real nats-server.

What a run did is counted from the guests' own side effects: every counted node
is ``nats-publish``, which publishes one message per call on a subject this test
listens to. Waiting is on records (the run history) and on messages, with
generous bounds that only stop a hang; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nats
import pytest
from conftest import MANIFESTS, TESTING, make_config
from ionflux.graph import Engine, RunHistory
from ionflux.host import Host
from ionflux.http.testing import UpProcess, chain_graph, consent_to, publish_wasm
from ionflux.triggers import NatsServer
from nats.aio.client import Client

from ionwall import Ionwall, Masker, load_policy

T = TypeVar("T")
BOUND_S = 90.0  # stops a hang; never a measure


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url, **nats_server.connect_options())
    yield nc
    await nc.close()


async def until(what: Callable[[], T | None], describe: str, bound: float = BOUND_S) -> T:
    """``what()`` once it is truthy; polls the record, fails after ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while True:
        found = what()
        if found:
            return found
        assert time.monotonic() < deadline, f"still waiting for {describe}"
        await asyncio.sleep(0.05)


async def until_async(what: Callable[[], Awaitable[bool]], describe: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while not await what():
        assert time.monotonic() < deadline, f"still waiting for {describe}"
        await asyncio.sleep(0.05)


def prepare(data_dir: Path, server: NatsServer, *graphs: str) -> None:
    """A data directory with the transforms published, ``graphs`` deployed and their
    consent approved; resumes looked for every 0.5 s."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "ionflux.yaml").write_text(
        f"limits: {{fuel: 1000000000000}}\nnats: {{token: {server.credentials.token}}}\n"
        "graph: {resume_interval_s: 0.5, run_lease_s: 30}\n"
    )
    config = make_config(data_dir)
    config = config.model_copy(
        update={
            "nats": config.nats.model_copy(
                update={"url": server.url, "token": server.credentials.token}
            )
        }
    )
    host = Host(config)
    settings = config.ionwall
    wall = Ionwall(
        data_dir / "ionwall",
        load_policy(settings.policy_file),
        masker=Masker(settings.secret_values, settings.sensitive_fields),
    )
    try:
        host.publish(MANIFESTS / "nats-publish.yaml")
        publish_wasm(host, "echo", TESTING / "echo.wasm")
        # spin runs until its deadline: a node the test can kill the host inside of
        publish_wasm(host, "spin", TESTING / "spin.wasm", limits={"timeout_ms": 4000})
        publish_wasm(host, "nap", TESTING / "spin.wasm", limits={"timeout_ms": 150})
        engine = Engine.for_host(host)
        try:
            for text in graphs:
                plan = engine.validate(text)
                engine.repository.deploy(text, plan.name, plan.graph.version, "test")
                scopes = engine.load(plan.name)
                requested = sorted(scopes.manifest_scopes)
                consent_to(wall, engine, plan.name, requested)
        finally:
            engine.close()
    finally:
        wall.close()
        host.close()


def history(data_dir: Path) -> RunHistory:
    """The host's run history, read from outside (recovering nothing)."""
    return RunHistory(data_dir / "runs.sqlite3", recover=False)


def steps_of(data_dir: Path, run_id: str) -> dict[str, str]:
    runs = history(data_dir)
    try:
        return {s.node_id: s.status for s in runs.steps(run_id)}
    finally:
        runs.close()


def status_of(data_dir: Path, run_id: str) -> str | None:
    runs = history(data_dir)
    try:
        record = runs.get(run_id)
        return None if record is None else record.status
    finally:
        runs.close()


OPEN = ("accepted", "running")


def publish_node(node: str, prefix: str, after: str | None) -> list[str]:
    lines = [
        f"  - id: {node}",
        "    transform: nats-publish",
        f'    inputs: {{subject: "{prefix}.{node}", payload: {{run: "{{{{system.run_id}}}}"}}}}',
    ]
    if after:
        lines.append(f"    dependencies: [{after}]")
    return lines


def five_steps(prefix: str) -> str:
    """s1 -> s2 -> s3 publish; s4 spins (the kill lands there); s5 publishes."""
    lines = [
        "name: five",
        'version: "1.0.0"',
        "triggers:",
        "  - {type: webhook, config: {path: /hooks/five, authentication_method: none}}",
        "graph:",
        *publish_node("s1", prefix, None),
        *publish_node("s2", prefix, "s1"),
        *publish_node("s3", prefix, "s2"),
        "  - id: s4",
        "    transform: spin",
        "    inputs: {}",
        "    timeout: 30s",
        "    on_error: continue",
        "    dependencies: [s3]",
        *publish_node("s5", prefix, "s4"),
    ]
    return "\n".join(lines) + "\n"


def once_only(prefix: str) -> str:
    """a publishes; b (idempotent: false) spins: the kill lands in b."""
    lines = [
        "name: once",
        'version: "1.0.0"',
        "triggers:",
        "  - {type: webhook, config: {path: /hooks/once, authentication_method: none}}",
        "graph:",
        *publish_node("a", prefix, None),
        "  - id: b",
        "    transform: spin",
        "    inputs: {}",
        "    idempotent: false",
        "    on_error: continue",
        "    dependencies: [a]",
    ]
    return "\n".join(lines) + "\n"


async def accepted(url: str, path: str, body: Any, key: str | None = None) -> str:
    headers = {"Prefer": "respond-async"}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        r = await http.post(path, json=body, headers=headers)
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


async def test_a_run_killed_mid_run_resumes_and_steps_done_do_not_run_again(
    tmp_path: Path, nats_server: NatsServer, client: Client, built: Path
) -> None:
    prefix = f"dur{uuid.uuid4().hex[:8]}"
    data = tmp_path / "host"
    prepare(data, nats_server, five_steps(prefix), once_only(prefix + ".once"))
    published: Counter[str] = Counter()

    async def count(msg: Any) -> None:
        published[msg.subject.removeprefix(prefix + ".")] += 1

    await client.subscribe(f"{prefix}.>", cb=count)
    await client.flush()
    up = UpProcess(data, nats_url=nats_server.url).start()
    try:
        five = await accepted(up.url, "/hooks/five", {})
        once = await accepted(up.url, "/hooks/once", {})
        # Steps 1-3 recorded done (s4 spins on); b recorded in flight.
        await until(
            lambda: all(steps_of(data, five).get(n) == "success" for n in ("s1", "s2", "s3")),
            "steps 1-3 recorded done",
        )
        await until(lambda: steps_of(data, once).get("b") == "running", "b recorded running")
        up.kill()
        await until(lambda: published["s3"] == 1 and published["once.a"] == 1, "guests' messages")
        assert published["s5"] == 0, "the kill came too late: s5 ran before it"
        assert status_of(data, five) == "running" and status_of(data, once) == "running"

        up.start()  # the same data directory: the host resumes what the dead one left
        await until(lambda: status_of(data, five) not in OPEN, "the resumed run to end")
        await until(lambda: status_of(data, once) not in OPEN, "the other run to end")
        await until(lambda: published["s5"] == 1, "s5's message")
        await client.flush()
        # s5 published after s1-s3 would have on the same connection: had they run
        # again, their messages would have come first.
        assert [published[n] for n in ("s1", "s2", "s3", "s5")] == [1, 1, 1, 1]
        assert published["once.a"] == 1
        assert status_of(data, five) == "partial_success_with_errors"  # s4 spins into its deadline
        runs = history(data)
        try:
            record = runs.get(once)
            assert record is not None and record.status == "needs_attention"
            assert record.error_details and record.error_details[0]["kind"] == "needs_attention"
            assert record.error_details[0]["nodes"] == ["b"]
        finally:
            runs.close()
    finally:
        up.kill()


def chain_hook(name: str, path: str) -> str:
    trigger = f"{{type: webhook, config: {{path: {path}, authentication_method: none}}}}"
    return chain_graph(name, nodes=3, triggers=[trigger], slow="nap")


@pytest.mark.parametrize("stop", ["kill", "sigterm"])
async def test_every_202_has_a_record_after_a_host_dies_and_ends(
    tmp_path: Path, nats_server: NatsServer, built: Path, stop: str
) -> None:
    data = tmp_path / "host"
    prepare(data, nats_server, chain_hook("acc", "/hooks/acc"))
    up = UpProcess(
        data, nats_url=nats_server.url, concurrency=2, extra=["--drain-timeout", "0.2"]
    ).start()
    try:
        ids = [await accepted(up.url, "/hooks/acc", {"text": f"t{i}"}) for i in range(24)]
        # the same Idempotency-Key twice: one run
        keyed = await accepted(up.url, "/hooks/acc", {"text": "k"}, key="order-7")
        assert await accepted(up.url, "/hooks/acc", {"text": "k"}, key="order-7") == keyed
        ids.append(keyed)
        if stop == "kill":
            up.kill()
        else:
            up.terminate(30)
        # Every 202 was recorded before it was sent; runs were left not ended.
        assert all(status_of(data, run_id) is not None for run_id in ids)
        assert any(status_of(data, run_id) in OPEN for run_id in ids)
        up.start()
        for run_id in ids:  # nap runs into its deadline, on_error: continue
            await until(
                lambda r=run_id: status_of(data, r) == "partial_success_with_errors",
                f"run {run_id} to end",
            )
        runs = history(data)
        try:
            assert len(runs.list_runs(graph="acc", limit=1000)) == len(ids)
        finally:
            runs.close()
    finally:
        up.kill()


def durable_graph(subject: str) -> str:
    trigger = (
        f"{{type: event_driven, config: {{topic: {subject}, delivery: jetstream, "
        "ack_wait: 2s, authentication_method: none}}"
    )
    return chain_graph("jobs", nodes=1, triggers=[trigger])


def results_per_message(data_dir: Path) -> tuple[Counter[str], int]:
    """Ended runs per message id, and how many runs have not ended."""
    db = sqlite3.connect(f"file:{data_dir / 'runs.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT json_extract(trigger_details_json, '$.msg_id'), status FROM runs"
            " WHERE graph_name='jobs'"
        ).fetchall()
    finally:
        db.close()
    ended = Counter(msg for msg, status in rows if status not in OPEN)
    return ended, sum(1 for _, status in rows if status in OPEN)


async def durable_load(
    tmp_path: Path, server: NatsServer, client: Client, n: int, kills: int
) -> None:
    subject = f"jobs.{uuid.uuid4().hex[:10]}"
    data = tmp_path / "host"
    prepare(data, server, durable_graph(subject))
    js = client.jetstream()
    up = UpProcess(data, nats_url=server.url).start()
    try:
        for i in range(n):
            await js.publish(
                subject, json.dumps({"text": str(i)}).encode(), headers={"Nats-Msg-Id": f"m{i}"}
            )
        for k in range(1, kills + 1):
            share = n * k // (kills + 1)
            await until(lambda s=share: len(results_per_message(data)[0]) >= s, f"{share} runs")
            up.kill()
            up.start()
        await until(lambda: len(results_per_message(data)[0]) == n, "every message's run")
        # Settled: nothing pending or unacked, so no message can run (again) after this.
        stream = await js.find_stream_name_by_subject(subject)

        async def settled() -> bool:
            info = await js.consumer_info(stream, "ionflux-jobs")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await until_async(settled, "the consumer to settle")
        ended, still_open = results_per_message(data)
        assert set(ended) == {f"m{i}" for i in range(n)}  # 0 lost
        assert max(ended.values()) == 1, [m for m, c in ended.items() if c > 1]  # 0 run twice
        assert still_open == 0
    finally:
        up.kill()


async def test_durable_load_with_kills_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path, nats_server: NatsServer, client: Client, built: Path
) -> None:
    await durable_load(tmp_path, nats_server, client, 1000, 3)


@pytest.mark.soak
async def test_durable_load_of_3000_messages_with_6_kills(
    tmp_path: Path, nats_server: NatsServer, client: Client, built: Path
) -> None:
    await durable_load(tmp_path, nats_server, client, 3000, 6)
