"""Where the engine runs a level's nodes: light and CPU-bound calls (as measured
on earlier runs) share as few worker threads as pay, anything else gets a thread
of its own; a linear chain runs on one thread and reports its nodes in batches.
Real wasm modules through the real host; what is checked is when each node ran
(a shared thread runs its nodes one after another, in file order)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTING, make_config
from ionflux.config import Config
from ionflux.graph import (
    Engine,
    GraphRepository,
    HostInvoker,
    Invoked,
    RunHistory,
    TransformInfo,
)
from ionflux.graph._engine import _Head
from ionflux.graph._result import RunResult
from ionflux.host import Host
from test_graph_engine import publish

from ionwall import CallContext, Gate


@pytest.fixture(scope="module")
def phost(tmp_path_factory: pytest.TempPathFactory, built: Path) -> Iterator[Host]:
    config: Config = make_config(tmp_path_factory.mktemp("placement") / "data", fuel=10**11)
    host = Host(config)
    for name in ("echo", "busy", "trap"):
        publish(host, TESTING / f"{name}.wasm", name)
    yield host
    host.close()


@pytest.fixture
def engine(phost: Host, tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(
        phost.config,
        invoker=HostInvoker(phost),
        repository=GraphRepository(tmp_path / "graphs.sqlite3", pod=phost.pod),
        history=RunHistory(tmp_path / "runs.sqlite3"),
        pod=phost.pod,
    )
    yield eng
    eng.close()


def fan_out(tmp_path: Path, nodes: list[str], name: str = "fan") -> str:
    lines = [f"name: {name}", "graph:"]
    lines += [f"  - {node}" for node in nodes]
    path = tmp_path / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def overlaps(result: RunResult, a: str, b: str) -> bool:
    x, y = result.step(a), result.step(b)
    assert None not in (x.started_at, x.ended_at, y.started_at, y.ended_at)
    return x.started_at < y.ended_at and y.started_at < x.ended_at  # type: ignore[operator]


def back_to_back(result: RunResult, ids: list[str]) -> bool:
    steps = [result.step(i) for i in ids]
    return all(
        later.started_at >= earlier.ended_at  # type: ignore[operator]
        for earlier, later in pairwise(steps)
    )


async def test_calls_are_measured_as_compute_and_waits(
    engine: Engine, phost: Host, tmp_path: Path
) -> None:
    ref = fan_out(tmp_path, ["{id: a, transform: echo, inputs: {v: 1}}"])
    result = await engine.run(ref, {})
    cpu, wait = engine._costs[phost.registry.get("echo").cid]
    assert 0 < cpu <= result.step("a").duration_s  # type: ignore[operator]
    assert wait == 0.0  # echo calls no import


async def test_light_fan_out_shares_one_thread(engine: Engine, phost: Host, tmp_path: Path) -> None:
    ids = [f"e{i}" for i in range(6)]
    nodes = [f"{{id: {i}, transform: echo, inputs: {{v: {n}}}}}" for n, i in enumerate(ids)]
    ref = fan_out(tmp_path, nodes)
    # As measured on a quiet machine: 0.1 ms of CPU a call, no waits. Six of them
    # are not worth a thread each, nor two threads: one runs them in file order.
    engine._costs[phost.registry.get("echo").cid] = (0.0001, 0.0)
    result = await engine.run(ref, {})
    assert result.overall_status == "success"
    assert [result.step(i).outputs for i in ids] == [{"v": n} for n in range(6)]
    assert back_to_back(result, ids)


async def test_unmeasured_nodes_each_get_a_thread(engine: Engine, tmp_path: Path) -> None:
    # Never measured: each node is started on its own thread, so the two long
    # calls are in flight at the same time.
    nodes = [
        "{id: a, transform: busy, inputs: {iterations: 20000000}}",
        "{id: b, transform: busy, inputs: {iterations: 20000000}}",
    ]
    result = await engine.run(fan_out(tmp_path, nodes), {})
    assert result.overall_status == "success"
    assert overlaps(result, "a", "b")


def test_cpu_bound_nodes_are_spread_over_the_cpus(engine: Engine, phost: Host) -> None:
    plan = engine.validate(
        "name: spread\ngraph:\n"
        + "".join(
            f"  - {{id: n{i}, transform: busy, inputs: {{iterations: 1}}}}\n" for i in range(7)
        )
        + "  - {id: io, transform: echo, inputs: {}}\n"
    )
    busy_cid = phost.registry.get("busy").cid
    echo_cid = phost.registry.get("echo").cid
    engine._costs[busy_cid] = (0.010, 0.0)  # 10 ms of CPU: CPU-bound
    engine._costs[echo_cid] = (0.001, 0.050)  # 50 ms waiting in imports: I/O
    heads = [_Head(plan.nodes[n], None, 0.0) for n in plan.nodes]  # type: ignore[arg-type]
    groups = engine._groups(heads)
    cpus = len(os.sched_getaffinity(0))
    shared = [g for g in groups if g[0].planned.id != "io"]
    assert [[h.planned.id for h in g] for g in groups if g[0].planned.id == "io"] == [["io"]]
    assert len(shared) == min(7, cpus)
    sizes = sorted(len(g) for g in shared)
    assert sizes[-1] - sizes[0] <= 1  # balanced by cost (all equal here)
    for group in shared:  # file order within a thread
        order = [int(h.planned.id[1:]) for h in group]
        assert order == sorted(order)


async def test_a_failing_member_fails_the_run_and_the_others_report_what_they_did(
    engine: Engine, phost: Host, tmp_path: Path
) -> None:
    nodes = [
        "{id: a, transform: echo, inputs: {v: 1}}",
        "{id: t, transform: trap, inputs: {}}",
        "{id: b, transform: echo, inputs: {v: 2}}",
    ]
    ref = fan_out(tmp_path, nodes)
    engine._costs[phost.registry.get("echo").cid] = (0.0001, 0.0)
    engine._costs[phost.registry.get("trap").cid] = (0.0001, 0.0)
    result = await engine.run(ref, {})
    assert back_to_back(result, ["a", "t", "b"])  # one shared thread
    assert result.overall_status == "failure"
    assert result.step("t").status == "failure"
    assert result.step("t").error is not None and result.step("t").error["kind"] == "trap"
    # `b` ran on the same thread before the loop heard of the failure: it is
    # reported as what it was, not as cancelled.
    assert result.step("a").outputs == {"v": 1}
    assert result.step("b").status == "success" and result.step("b").outputs == {"v": 2}
    rows = engine.history.steps(result.execution_id)
    assert {r.node_id: r.status for r in rows} == {"a": "success", "t": "failure", "b": "success"}


async def test_long_chain_on_one_thread_records_every_node(engine: Engine, tmp_path: Path) -> None:
    count = 30
    lines = ["name: chain", "graph:", "  - {id: n0, transform: echo, inputs: {v: 0}}"]
    for i in range(1, count):
        ref = f"'{{{{ nodes.n{i - 1}.outputs.v + 1 }}}}'"
        lines.append(f"  - {{id: n{i}, transform: echo, inputs: {{v: {ref}}}}}")
    path = tmp_path / "chain.yaml"
    path.write_text("\n".join(lines) + "\n")
    result = await engine.run(str(path), {})
    assert result.overall_status == "success"
    assert result.output == {"v": count - 1}
    assert [s.node_id for s in result.steps] == [f"n{i}" for i in range(count)]
    rows = engine.history.steps(result.execution_id)
    assert len(rows) == count and all(r.status == "success" for r in rows)


async def test_an_edited_graph_file_runs_as_edited(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "edited.yaml"
    path.write_text("name: edited\ngraph:\n  - {id: a, transform: echo, inputs: {v: 1}}\n")
    first = await engine.run(str(path), {})
    assert first.output == {"v": 1}
    # Same size, new bytes, and a modification time forced to differ.
    path.write_text("name: edited\ngraph:\n  - {id: a, transform: echo, inputs: {v: 2}}\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = await engine.run(str(path), {})
    assert second.output == {"v": 2}
    assert second.graph_cid != first.graph_cid


def test_a_resolved_name_follows_deploys_here_and_elsewhere(tmp_path: Path) -> None:
    # Two connections to one file: this host, and another process deploying.
    here = GraphRepository(tmp_path / "graphs.sqlite3")
    elsewhere = GraphRepository(tmp_path / "graphs.sqlite3")
    v = "name: g\ngraph:\n  - {{id: a, transform: echo, inputs: {{v: {n}}}}}\n"
    try:
        # Each changed text is a new version: a name@version is immutable.
        here.deploy(v.format(n=1), "g", "0.0.1", "one")
        first = here.resolve("g")
        assert here.resolve("g") is first  # remembered
        elsewhere.deploy(v.format(n=2), "g", "0.0.2", "two")
        second = here.resolve("g")
        assert "v: 2" in second.text and second.cid != first.cid
        here.deploy(v.format(n=3), "g", "0.0.3", "three")
        assert "v: 3" in here.resolve("g").text
        assert "v: 3" in elsewhere.resolve("g").text
        assert here.resolve(first.cid).text == first.text  # by CID, still
    finally:
        here.close()
        elsewhere.close()


async def test_a_run_shows_as_running_only_once_it_has_run_a_moment(
    engine: Engine, phost: Host, tmp_path: Path
) -> None:
    from ionflux.graph._history import new_run_id

    # A short run's row and steps are written in one transaction at its end...
    short = new_run_id()
    ref = fan_out(tmp_path, ["{id: a, transform: echo, inputs: {v: 1}}"], name="short")
    await engine.run(ref, {}, run_id=short)
    record = engine.history.get(short)
    assert record is not None and record.status == "success"
    # ...a longer one is visible as running while it runs. Its one call is held
    # at a gate (before the real sandbox runs) until the test has seen the run's
    # row, so the run cannot end first however fast or slow the machine is.
    opened = threading.Event()

    class Held(HostInvoker):
        def invoke(
            self, transform: TransformInfo, input: Any, *, ctx: CallContext, gate: Gate | None
        ) -> Invoked:
            assert opened.wait(60), "the test never opened the gate"
            return super().invoke(transform, input, ctx=ctx, gate=gate)

    engine.invoker = Held(phost)
    slow = new_run_id()
    ref = fan_out(tmp_path, ["{id: b, transform: echo, inputs: {v: 2}}"], name="slow")
    task = asyncio.create_task(engine.run(ref, {}, run_id=slow))
    try:
        deadline = time.monotonic() + 30
        while (record := engine.history.get(slow)) is None:
            assert time.monotonic() < deadline and not task.done(), "the run never showed"
            await asyncio.sleep(0.005)
        assert record.status == "running"
        assert not task.done()
    finally:
        opened.set()
    result = await task
    assert result.execution_id == slow and result.overall_status == "success"
    final = engine.history.get(slow)
    assert final is not None and final.status == "success"
    assert [s.node_id for s in engine.history.steps(slow)] == ["b"]
