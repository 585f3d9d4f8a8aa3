"""Issue 13's figures: a cluster on the PostgreSQL state backend, from one run.

- runs/s of a 3-node graph over NATS (core request-reply, 32 outstanding) served
  by one, two and three ``ionflux up`` hosts, each on a data directory of its
  own, sharing one PostgreSQL, one nats-server and one Kubo node, with the CPU
  cores the hosts and the whole machine use meanwhile;
- what a step costs on PostgreSQL against SQLite: the same 10-node linear graph
  in one process, step rows batched (the default) and every step recorded
  before and after its call (``idempotent: false``), and runs/s with 10 at once.

Target: two hosts >= 1.6x one. Every part (the hosts, PostgreSQL, NATS, Kubo,
the load generator) shares this machine's cores: compare within one run, and
read the ratio beside the cores used.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import nats

from ..config import StateSettings, load_config
from ..graph import Engine
from ..host import Host
from ..http.testing import UpProcess, chain_graph, publish_wasm
from ..testing.kubo import KuboDaemon, find_kubo
from ..testing.postgres import PostgresServer
from ..triggers import NatsServer
from ._timing import Row
from .graph import NODES, _linear, _linear_once_only, _measure_durable
from .triggers import _CpuMeter, _latency, _pct, _throughput

SUBJECT = "bench.cluster.graph3"
REQUESTS = 1200


def run(*, repo: Path, workdir: Path) -> list[Row]:
    echo = repo / "build" / "transforms" / "testing" / "echo.wasm"
    postgres = PostgresServer().start()
    try:
        rows = _per_step(echo, workdir / "steps", postgres)
        rows += asyncio.run(_hosts(echo, workdir / "hosts", postgres))
    finally:
        postgres.stop()
    return rows


async def _hosts(echo: Path, workdir: Path, postgres: PostgresServer) -> list[Row]:
    url = postgres.create_database("bench_cluster")
    binary = find_kubo()
    if binary is None:
        raise RuntimeError("no Kubo binary: run `just kubo`")
    kubo = KuboDaemon(binary).start()
    server = NatsServer(workdir / "nats").start()
    hosts: list[UpProcess] = []
    rows: list[Row] = []
    try:
        dirs = [_data_dir(workdir / f"h{n}", url, server, kubo) for n in (1, 2, 3)]
        _prepare(dirs[0], echo)
        nc = await nats.connect(server.url, **server.connect_options())
        rates: list[float] = []
        per_cpu: list[float] = []
        for n, data in enumerate(dirs, start=1):
            hosts.append(UpProcess(data, nats_url=server.url).start(60))
            await _latency(nc, SUBJECT, 100)  # warm the new host (and its compile cache)
            with _CpuMeter(*hosts) as cpu:
                rate = await _throughput(nc, SUBJECT, REQUESTS * n, 32 * n)
            rates.append(rate)
            per_cpu.append(rate / cpu.hosts if cpu.hosts else 0.0)
            rows.append(Row(f"3-node graph over NATS, {n} host(s) on PostgreSQL", rate, "runs/s"))
            rows.append(Row(f"  CPU cores the {n} host(s) use", cpu.hosts, "cores"))
            rows.append(Row("  CPU cores the whole machine uses", cpu.machine, "cores"))
        lat = await _latency(nc, SUBJECT, 500)
        rows.append(Row("  3 hosts: request p50", _pct(lat, 0.5) * 1e3, "ms"))
        rows.append(Row("  3 hosts: request p99", _pct(lat, 0.99) * 1e3, "ms"))
        cores = os.cpu_count()
        ratio = rates[1] / rates[0]
        rows.append(Row("2 hosts / 1 host", ratio, f"x (target >= 1.6; {cores} cores)"))
        rows.append(Row("3 hosts / 1 host", rates[2] / rates[0], f"x ({cores} cores)"))
        # Runs per CPU-second the hosts burn: near 1 means a host added costs no
        # more per run (the shared state adds no contention of its own), and the
        # ratios above are bounded by the cores left over on this machine.
        for n in (2, 3):
            rows.append(
                Row(
                    f"  runs per host CPU-second, {n} hosts / 1 host",
                    per_cpu[n - 1] / per_cpu[0] if per_cpu[0] else 0.0,
                    "x",
                )
            )
        await nc.close()
    finally:
        for host in hosts:
            host.terminate(30)
        server.stop()
        kubo.cleanup()
    return rows


def _data_dir(data: Path, url: str, server: NatsServer, kubo: KuboDaemon) -> Path:
    data.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "nats": {"url": server.url, "token": server.credentials.token},
        "state": {"backend": "postgres", "url": url},
        "store": {"backend": "kubo", "kubo_api": kubo.api},
    }
    (data / "ionflux.yaml").write_text(json.dumps(settings))
    return data


def _prepare(data: Path, echo: Path) -> None:
    """Publishes echo and deploys the graph once: every host finds them in the state."""
    trigger = f"{{type: event_driven, config: {{topic: {SUBJECT}, authentication_method: none}}}}"
    text = chain_graph("graph3", nodes=3, triggers=[trigger])
    host = Host(load_config(data_dir=data))
    try:
        publish_wasm(host, "echo", echo)
        engine = Engine.for_host(host)
        plan = engine.validate(text)
        engine.repository.deploy(text, plan.name, plan.graph.version, "bench")
        engine.close()
    finally:
        host.close()


def _per_step(echo: Path, workdir: Path, postgres: PostgresServer) -> list[Row]:
    """The same graphs recorded in SQLite, then in PostgreSQL (one process each)."""
    measured: dict[str, tuple[float, float, float]] = {}
    for backend in ("sqlite", "postgres"):
        data = workdir / backend
        config = load_config(data_dir=data)
        update: dict[str, Any] = {
            "graph": config.graph.model_copy(update={"concurrency": NODES}),
        }
        if backend == "postgres":
            update["state"] = StateSettings(
                backend="postgres", url=postgres.create_database("bench_steps")
            )
        host = Host(config.model_copy(update=update))
        publish_wasm(host, "echo", echo)
        engine = Engine.for_host(host)
        data.mkdir(parents=True, exist_ok=True)
        linear, once = data / "linear.yaml", data / "linear_once.yaml"
        linear.write_text(_linear())
        once.write_text(_linear_once_only())
        try:
            measured[backend] = asyncio.run(_measure_durable(engine, str(linear), str(once)))
        finally:
            engine.close()
            host.close()
    (lite_b, lite_d, lite_r), (pg_b, pg_d, pg_r) = measured["sqlite"], measured["postgres"]
    return [
        Row(f"linear graph of {NODES} x echo, step rows batched: SQLite", lite_b * 1e3, "ms"),
        Row("  same on PostgreSQL", pg_b * 1e3, "ms"),
        Row(f"linear graph of {NODES} x echo, every step durable: SQLite", lite_d * 1e3, "ms"),
        Row("  same on PostgreSQL", pg_d * 1e3, "ms"),
        Row("  a durable step, PostgreSQL - SQLite", (pg_d - lite_d) / NODES * 1e6, "µs"),
        Row("  a batched step, PostgreSQL - SQLite", (pg_b - lite_b) / NODES * 1e6, "µs"),
        Row(f"runs/s, {NODES} runs at once, one process: SQLite", lite_r, "runs/s"),
        Row("  same on PostgreSQL", pg_r, "runs/s"),
    ]
