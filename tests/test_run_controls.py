"""Operator controls of runs (pause, resume, cancel, retry) from HTTP and the CLI,
against a real serving host (uvicorn, a real nats-server) and the real ``ionflux``
CLI in a child process on the same data directory.

What ran is counted from the guests' own side effects: ``nats-publish`` nodes
publish one message per call on subjects the test listens to. Waiting is on
records and messages with bounds that only stop a hang."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_config, on_nats
from ionflux.graph import RunHistory
from ionflux.http._hosting import RunningHost, start_host
from ionflux.triggers import NatsServer
from nats.aio.client import Client
from test_durable_runs import client, prepare, publish_node, until  # noqa: F401


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("ionflux")), "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def graph(name: str, prefix: str, middle: list[str]) -> str:
    lines = [
        f"name: {name}",
        'version: "1.0.0"',
        "triggers:",
        "  - {type: manual}",
        "graph:",
        *publish_node("s1", prefix, None),
        *middle,
        *publish_node("s3", prefix, "s2"),
    ]
    return "\n".join(lines) + "\n"


def reserved(prefix: str) -> list[str]:
    """s2 publishes on a subject the host reserves: it fails until retried with an edit."""
    return [
        "  - id: s2",
        "    transform: nats-publish",
        '    inputs: {subject: "_INBOX.nope", payload: {n: 2}}',
        "    dependencies: [s1]",
    ]


def spinning() -> list[str]:
    """s2 spins until its deadline (4 s), its failure ignored."""
    return [
        "  - id: s2",
        "    transform: spin",
        "    inputs: {}",
        "    on_error: continue",
        "    dependencies: [s1]",
    ]


@pytest.fixture
async def serving(
    tmp_path: Path, nats_server: NatsServer, built: Path
) -> AsyncIterator[tuple[RunningHost, httpx.AsyncClient, str]]:
    prefix = f"rc{uuid.uuid4().hex[:8]}"
    data = tmp_path / "host"
    prepare(
        data,
        nats_server,
        graph("fixme", prefix, reserved(prefix)),
        graph("slow", prefix, spinning()),
    )
    config = make_config(data)
    config = on_nats(config, nats_server, graph={"resume_interval_s": 0.3, "run_lease_s": 3})
    running = await start_host(config, require_token=False)
    async with httpx.AsyncClient(base_url=running.url, timeout=60) as http:
        yield running, http, prefix
    await running.aclose()


async def listen(client: Client, prefix: str) -> tuple[Counter[str], Any]:  # noqa: F811
    seen: Counter[str] = Counter()

    async def got(msg: Any) -> None:
        seen[msg.subject.rsplit(".", 1)[-1]] += 1

    sub = await client.subscribe(f"{prefix}.>", cb=got)
    return seen, sub


async def test_retry_from_a_step_with_an_edited_input_keeps_earlier_outputs(
    serving: tuple[RunningHost, httpx.AsyncClient, str],
    client: Client,  # noqa: F811
) -> None:
    running, http, prefix = serving
    seen, _ = await listen(client, prefix)
    first = (await http.post("/graphs/fixme/runs", json={"input": {}})).json()
    assert first["overall_status"] == "failure"
    run_id = first["execution_id"]
    assert first["error_details"][0]["node_id"] == "s2"  # the guest saw the refusal
    # a successful step cannot be "retried" into a second run: 409, typed
    done = await http.post(f"/runs/{run_id}/pause")
    assert done.status_code == 409 and done.json()["detail"]["kind"] == "invalid_run_transition"
    edited = {"subject": f"{prefix}.s2", "payload": {"n": 2}}
    r = await http.post(f"/runs/{run_id}/retry", json={"from_step": "s2", "input": edited})
    assert r.status_code == 200, r.text
    record = await until(
        lambda: (x := running.engine.history.get(run_id)) and x.status == "success" and x,
        "the retried run to end",
    )
    assert record.overrides == {"s2": edited}
    await until(lambda: seen["s3"] == 1, "s3's message")
    await client.flush()
    # s1 ran once (not again on retry); s2 ran with the edit; s3 once
    assert seen == Counter({"s1": 1, "s2": 1, "s3": 1})
    ok = await http.post(f"/runs/{run_id}/retry")
    assert ok.status_code == 409 and ok.json()["detail"]["status"] == "success"
    tail = cli(running.host.config.data_dir, "audit", "tail", "-n", "50")
    assert tail.returncode == 0, tail.stderr
    assert f"retry of run {run_id}" in tail.stdout


async def test_pause_over_http_then_resume_from_the_cli(
    serving: tuple[RunningHost, httpx.AsyncClient, str],
    client: Client,  # noqa: F811
) -> None:
    running, http, prefix = serving
    seen, _ = await listen(client, prefix)
    r = await http.post(
        "/graphs/slow/runs", json={"input": {}}, headers={"Prefer": "respond-async"}
    )
    run_id = r.json()["run_id"]
    history = running.engine.history
    # s1 published (the guest's own effect) and the run is still driven: s2 spins next
    await until(lambda: seen["s1"] == 1 and run_id in running.engine._live, "s1 done, s2 next")
    paused = await http.post(f"/runs/{run_id}/pause")
    assert paused.status_code == 200, paused.text
    # s2 (in flight, or not started yet) ends and is recorded; s3 does not start
    await until(lambda: history.get(run_id).status == "paused", "the run to pause")  # type: ignore[union-attr]
    steps = {s.node_id: s.status for s in history.steps(run_id)}
    assert "s3" not in steps and steps["s1"] == "success"
    assert history.get(run_id).lease_owner is None  # type: ignore[union-attr]
    again = cli(running.host.config.data_dir, "runs", "pause", run_id)
    assert again.returncode != 0 and "is paused: pause is allowed only" in again.stderr
    resumed = cli(running.host.config.data_dir, "runs", "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    # the serving host's scan drives it from its first step not done
    await until(
        lambda: history.get(run_id).status in ("success", "partial_success_with_errors"), "end"
    )  # type: ignore[union-attr]
    await until(lambda: seen["s3"] == 1, "s3's message")
    await client.flush()
    assert seen == Counter({"s1": 1, "s3": 1})
    tail = cli(running.host.config.data_dir, "audit", "tail", "-n", "50").stdout
    assert f"pause of run {run_id}" in tail and f"resume of run {run_id}" in tail


async def test_cancel_stops_a_spinning_guest_and_the_run_ends_cancelled(
    serving: tuple[RunningHost, httpx.AsyncClient, str],
    client: Client,  # noqa: F811
) -> None:
    running, http, prefix = serving
    seen, _ = await listen(client, prefix)
    r = await http.post(
        "/graphs/slow/runs", json={"input": {}}, headers={"Prefer": "respond-async"}
    )
    run_id = r.json()["run_id"]
    history = running.engine.history
    # s1 published (the guest's own effect) and the run is still driven: s2 spins next
    await until(lambda: seen["s1"] == 1 and run_id in running.engine._live, "s1 done, s2 next")
    cancelled = await http.post(f"/runs/{run_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    record = await until(
        lambda: (x := history.get(run_id)) and x.status == "cancelled" and x, "cancelled"
    )
    assert any(e["kind"] == "cancelled" for e in record.error_details or [])
    steps = {s.node_id: s.status for s in history.steps(run_id)}
    assert steps["s2"] == "cancelled" and steps.get("s3") in (None, "cancelled")
    status = (await http.get(f"/runs/{run_id}")).json()
    assert status["status"] == "cancelled"
    await client.flush()
    assert seen["s3"] == 0
    tail = cli(running.host.config.data_dir, "audit", "tail", "-n", "50").stdout
    assert f"cancel of run {run_id}" in tail


async def test_a_cli_cancel_reaches_the_host_driving_the_run(
    tmp_path: Path,
    nats_server: NatsServer,
    client: Client,  # noqa: F811
    built: Path,
) -> None:
    """The CLI records the cancel; the ``ionflux up`` driving the run reads it when it
    renews its leases (every run_lease_s / 3) and stops the run."""
    from ionflux.http.testing import UpProcess

    prefix = f"rc{uuid.uuid4().hex[:8]}"
    data = tmp_path / "host"
    text = graph("far", prefix, spinning()).replace(
        "  - {type: manual}\n",
        "  - {type: manual}\n  - {type: webhook, config: {path: /hooks/far, "
        "authentication_method: none}}\n",
    )
    prepare(data, nats_server, text)
    settings = data / "ionflux.yaml"
    settings.write_text(settings.read_text().replace("run_lease_s: 30", "run_lease_s: 1.5"))
    seen, _ = await listen(client, prefix)
    with UpProcess(data, nats_url=nats_server.url) as up:
        async with httpx.AsyncClient(base_url=up.url, timeout=30) as http:
            r = await http.post("/hooks/far", json={}, headers={"Prefer": "respond-async"})
        run_id = r.json()["run_id"]
        await until(lambda: seen["s1"] == 1, "s1's message")
        cancelled = cli(data, "runs", "cancel", run_id)
        assert cancelled.returncode == 0, cancelled.stderr
        runs = RunHistory(data / "runs.sqlite3", recover=False)
        try:
            record = await until(
                lambda: (x := runs.get(run_id)) and x.status == "cancelled" and x, "cancelled"
            )
            steps = {s.node_id: s.status for s in runs.steps(run_id)}
        finally:
            runs.close()
        assert steps["s2"] == "cancelled" and "s3" not in seen
        assert any(e["kind"] == "cancelled" for e in record.error_details or [])
    tail = cli(data, "audit", "tail", "-n", "50").stdout
    assert f"cancel of run {run_id}" in tail


def test_a_cancelled_runs_call_stops_at_its_next_epoch_tick_as_cancelled(
    tmp_path: Path, built: Path
) -> None:
    """A real sandbox: a guest spinning under a long deadline is stopped when its run
    is cancelled, and says so (``CallCancelled``, not ``DeadlineExceeded``); a call
    outside a run is not watched."""
    import threading

    from ionflux import CallCancelled
    from ionflux.host import Host
    from ionflux.http.testing import publish_wasm
    from ionflux.runtime import cancel_run
    from test_durable_runs import TESTING

    from ionwall import CallContext

    host = Host(make_config(tmp_path / "data", timeout_ms=60_000, fuel=10**15))
    try:
        limits = {"timeout_ms": 60_000, "fuel": 10**15}
        spin = publish_wasm(host, "forever", TESTING / "spin.wasm", limits=limits)
        caught: list[BaseException] = []

        def call() -> None:
            ctx = CallContext(subject=spin.cid, transform="forever", run_id="run-cancel-1")
            try:
                host.invoke("forever", {}, ctx=ctx)
            except BaseException as exc:
                caught.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        deadline = time.monotonic() + 30  # stops a hang
        while not host.runtime._ticker.ticking():
            assert time.monotonic() < deadline, "the call never started"
            time.sleep(0.01)
        cancel_run("run-cancel-1")
        thread.join(timeout=30)  # far below its 60 s deadline: only a stop gets here
        assert not thread.is_alive(), "the cancelled call did not stop"
        [error] = caught
        assert isinstance(error, CallCancelled) and error.kind == "cancelled"
    finally:
        host.close()


def test_a_watched_call_of_a_run_still_reports_its_own_deadline(
    tmp_path: Path, built: Path
) -> None:
    """The per-tick watch of a run's call keeps ``timeout_ms``: past it the call is
    ``DeadlineExceeded``, as outside a run."""
    from ionflux import DeadlineExceeded
    from ionflux.host import Host
    from ionflux.http.testing import publish_wasm
    from test_durable_runs import TESTING

    from ionwall import CallContext

    host = Host(make_config(tmp_path / "data", fuel=10**15))
    try:
        nap = publish_wasm(
            host, "nap", TESTING / "spin.wasm", limits={"timeout_ms": 150, "fuel": 10**15}
        )
        for run_id in ("run-deadline-1", None):
            ctx = CallContext(subject=nap.cid, transform="nap", run_id=run_id)
            with pytest.raises(DeadlineExceeded):
                host.invoke("nap", {}, ctx=ctx)
    finally:
        host.close()
