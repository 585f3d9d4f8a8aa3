"""``ionflux up`` as users run it: its own nats-server, HTTP, triggers, and a
SIGTERM that lets the run in flight finish before everything stops."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nats
from conftest import TESTING, make_config
from ionflux.bus import NatsCredentials
from ionflux.graph import Engine, RunHistory
from ionflux.host import Host
from ionflux.http.testing import UpProcess, chain_graph, publish_wasm

from ionwall import Ionwall


def prepare(data_dir: Path, spin_ms: int = 1500) -> None:
    """A data directory with `digest` and `slow` deployed; `slow` spins for
    ``spin_ms`` (its deadline) before its one echo node."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # Fuel enough for spin to run into its deadline: a slow run.
    limits = "fuel: 1000000000000" + (f", timeout_ms: {spin_ms}" if spin_ms > 2000 else "")
    (data_dir / "ionflux.yaml").write_text(f"limits: {{{limits}}}\n")
    host = Host(make_config(data_dir))
    publish_wasm(host, "echo", TESTING / "echo.wasm")
    publish_wasm(host, "spin", TESTING / "spin.wasm", limits={"timeout_ms": spin_ms})
    engine = Engine.for_host(host)
    for text in (
        chain_graph(
            "digest",
            triggers=[
                "{type: event_driven, config: {event_source: NATS, topic: ionflux.digest.run}}",
                "{type: webhook, config: {path: /webhooks/invoke/digest, method: POST, "
                "authentication_method: ionwall_jwt}}",
            ],
        ),
        chain_graph(
            "slow",
            nodes=1,
            slow="spin",
            triggers=[
                "{type: webhook, config: {path: /webhooks/invoke/slow}}",
            ],
        ),
    ):
        plan = engine.validate(text)
        engine.repository.deploy(text, plan.name, plan.graph.version, "test")
    engine.close()
    host.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def gone(pid: int, within: float) -> bool:
    """Whether ``pid`` has exited, waiting up to ``within`` seconds for it."""
    deadline = time.monotonic() + within
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


async def test_up_serves_nats_and_http_and_drains_on_sigterm(tmp_path: Path, built: Path) -> None:
    data = tmp_path / "data"
    prepare(data)
    up = UpProcess(data).start()
    try:
        ports = list((data / "nats" / "ports").glob("*.ports"))
        nats_pid = int(ports[0].stem.rsplit("_", 1)[1])
        assert alive(nats_pid)
        with Ionwall(data / "ionwall") as wall:
            token = wall.issue_token(["execute_graph:*"]).token
        auth = {"Authorization": f"Bearer {token}"}
        # The nats-server it started wants its token (<data>/nats/token); the trigger, ours.
        nc = await nats.connect(
            up.nats_url,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.1,  # type: ignore[arg-type]
            **NatsCredentials.stored(data / "nats").options(),
        )
        reply = await nc.request(
            "ionflux.digest.run", b'{"text": "over nats"}', timeout=10, headers=auth
        )
        assert json.loads(reply.data)["output"] == {"text": "over nats"}
        # The nats-server it started dies: the host starts it again, everyone reconnects.
        os.kill(nats_pid, signal.SIGKILL)
        for _ in range(100):
            time.sleep(0.05)
            ports = [
                p
                for p in (data / "nats" / "ports").glob("*.ports")
                if not p.stem.endswith(f"_{nats_pid}")
            ]
            if ports:
                break
        nats_pid = int(ports[0].stem.rsplit("_", 1)[1])
        for _ in range(50):
            try:
                reply = await nc.request(
                    "ionflux.digest.run", b'{"text": "again"}', timeout=1, headers=auth
                )
                break
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(0.1)
        assert json.loads(reply.data)["output"] == {"text": "again"}
        await nc.close()
        # A graph deployed from the command line while the host is up is picked up.
        late = tmp_path / "late.yaml"
        late.write_text(
            chain_graph(
                "late", nodes=1, triggers=["{type: webhook, config: {path: /webhooks/invoke/late}}"]
            )
        )
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from ionflux.cli import main; main()",
                "--data-dir",
                str(data),
                "graph",
                "deploy",
                str(late),
                "-m",
                "late",
            ],
            check=True,
            capture_output=True,
        )
        async with httpx.AsyncClient(base_url=up.url, timeout=20) as http:
            for _ in range(100):
                r = await http.post("/webhooks/invoke/late", json={"text": "hi"}, headers=auth)
                if r.status_code != 404:
                    break
                time.sleep(0.05)
            assert r.status_code == 200 and r.json()["output"] == {"text": "hi"}
        async with httpx.AsyncClient(base_url=up.url, timeout=20) as http:
            r = await http.post("/webhooks/invoke/digest", json={"text": "over http"}, headers=auth)
            assert r.json()["output"] == {"text": "over http"}
            r = await http.post(
                "/webhooks/invoke/slow",
                json={"text": "drained"},
                headers={**auth, "Prefer": "respond-async"},
            )
            assert r.status_code == 202
            status_url = r.json()["status_url"]
            for _ in range(100):
                state = (await http.get(status_url, headers=auth)).json()
                if state.get("status") == "running":
                    break
                time.sleep(0.02)
            assert state.get("status") == "running", state
        assert up.terminate(30) == 0  # SIGTERM while the slow run is in flight
        history = RunHistory(data / "runs.sqlite3", recover=False)
        slow = history.list_runs(graph="slow")
        history.close()
        assert [r.status for r in slow] == ["partial_success_with_errors"]
        assert gone(nats_pid, within=5)
    finally:
        up.kill()


def test_up_with_its_http_port_in_use_fails_at_once(tmp_path: Path, built: Path) -> None:
    """It used to hang silently, its nats-server stopped and nothing listening,
    when the data directory had deployed triggers (a schedule, a durable consumer)."""
    data = tmp_path / "data"
    prepare(data)
    host = Host(make_config(data))
    engine = Engine.for_host(host)
    text = chain_graph(
        "cron",
        nodes=1,
        triggers=[
            "{type: scheduled, config: {cron: '* * * * *'}}",
            "{type: event_driven, config: {topic: ionflux.cron.run, delivery: jetstream}}",
        ],
    )
    plan = engine.validate(text)
    engine.repository.deploy(text, plan.name, plan.graph.version, "test")
    engine.close()
    host.close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = UpProcess(data, extra=["--http-port", str(port)])
        # A hang is what this test catches: the bound only has to be generous.
        done = subprocess.run(up.args, capture_output=True, text=True, timeout=60, env=up.env)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0], lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    # Nothing was started, so nothing is left running: no nats-server of its own.
    ports = data / "nats" / "ports"
    pids = [int(p.stem.rsplit("_", 1)[1]) for p in ports.glob("*.ports")] if ports.exists() else []
    assert not [pid for pid in pids if alive(pid)]
