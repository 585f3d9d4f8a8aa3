# ruff: noqa: F811  (pytest fixtures imported from serving, taken as parameters)
"""Attacks on a run's total work (issue 11, class 9), against a serving host.

Every call has its own fuel and time limits, but a graph fanning out through
sub-graphs multiplies them: 40 nodes each calling a graph of 40 nodes each
calling one of 40 is 64,000 calls from one request. One budget covers the
whole run, sub-graphs included: node calls (``graph.max_nodes_per_run``,
default 1,000) and fuel (``graph.max_fuel_per_run``); a graph may ask for less
(``budget:``), never more. Past it the run fails with ``run_budget_exceeded``
naming the budget and its value, no further node starts, and the host serves on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from ionflux.graph import Engine
from ionflux.http import RunningHost
from ionflux.http.testing import deploy
from serving import http, nats_server, peak_rss_mb, running, still_serves, token  # noqa: F401

FAN = "/webhooks/invoke/fan"


def fan_out(name: str, width: int, child: str | None, extra: str = "") -> str:
    """``width`` independent nodes, each an echo or a call of the graph ``child``."""
    target = f"subgraph: {child}" if child else "transform: echo"
    nodes = "".join(
        f"  - {{id: n{i}, {target}, inputs: {{text: '{{{{ trigger.input_data.text }}}}'}}}}\n"
        for i in range(width)
    )
    return f"name: {name}\n{extra}graph:\n{nodes}"


def node_calls(engine: Engine, graphs: tuple[str, ...]) -> int:
    """Node calls of the runs of ``graphs`` the history shows: a sub-graph call
    is a child run, a transform call that ran a successful step."""
    total = 0
    for run in engine.history.list_runs(limit=100_000):
        if run.graph_name not in graphs:
            continue
        total += run.parent_run_id is not None
        total += sum(
            1
            for s in engine.history.steps(run.run_id)
            if s.status == "success" and s.target == "echo"
        )
    return total


async def test_a_40x40x40_fan_out_through_subgraphs_stops_at_the_node_budget(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    await deploy(running, fan_out("leaf", 40, None))
    await deploy(running, fan_out("mid", 40, "leaf"))
    trigger = f"triggers:\n  - {{type: webhook, config: {{path: {FAN}}}}}\n"
    await deploy(running, fan_out("fan", 40, "mid", trigger))
    limit = running.config.graph.max_nodes_per_run
    assert limit == 1_000  # the default, against 40 + 1,600 + 64,000 calls unbounded

    # /healthz while the attack runs: the figure for the notes, not an assertion.
    latencies: list[float] = []

    async def probe() -> None:
        while True:
            began = time.perf_counter()
            await http.get("/healthz")
            latencies.append(time.perf_counter() - began)
            await asyncio.sleep(0.05)

    prober = asyncio.get_running_loop().create_task(probe())
    try:
        r = await http.post(
            FAN, json={"text": "x"}, headers=token(running, "execute_graph:fan"), timeout=120
        )
    finally:
        prober.cancel()
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["overall_status"] == "failure"
    stopped = body["error_details"][-1]
    assert stopped["kind"] == "run_budget_exceeded", body["error_details"]
    assert (stopped["budget"], stopped["limit"]) == ("max_nodes", limit)
    assert "graph.max_nodes_per_run" in stopped["message"]
    # Nothing started past the budget, and no run of the tree is left running.
    assert node_calls(running.engine, ("fan", "mid", "leaf")) <= limit
    runs = running.engine.history.list_runs(limit=100_000)
    assert "running" not in {r.status for r in runs}
    record = running.engine.history.get(body["execution_id"])
    assert record is not None and record.status == "failure"
    assert any(e["kind"] == "run_budget_exceeded" for e in record.error_details or [])
    served = await still_serves(running, http)
    print(
        f"\n40x40x40 fan-out: {len(runs)} runs, "
        f"{node_calls(running.engine, ('fan', 'mid', 'leaf'))} node calls; "
        f"/healthz max {max(latencies, default=0) * 1e3:.0f} ms over {len(latencies)} probes; "
        f"normal call after {served * 1e3:.0f} ms; peak RSS {peak_rss_mb():.0f} MB"
    )


async def test_a_graphs_fuel_budget_stops_its_run_at_the_first_call_past_it(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    await deploy(running, fan_out("fleaf", 10, None))
    # A graph may tighten the budget: 1 fuel is spent by the first call it makes.
    trigger = f"triggers:\n  - {{type: webhook, config: {{path: {FAN}}}}}\n"
    tight = fan_out("thrifty", 10, "fleaf", "budget: {max_fuel: 1}\n" + trigger)
    await deploy(running, tight)
    r = await http.post(FAN, json={"text": "x"}, headers=token(running, "execute_graph:thrifty"))
    body = r.json()
    assert body["overall_status"] == "failure"
    stopped = body["error_details"][-1]
    assert (stopped["kind"], stopped["budget"], stopped["limit"]) == (
        "run_budget_exceeded",
        "max_fuel",
        1,
    )
    assert "budget.max_fuel" in stopped["message"]
    # The first call to end crossed it; every call that ended after it was refused too.
    runs = running.engine.history.list_runs(limit=1000)
    assert node_calls(running.engine, ("fleaf",)) == len(
        [r for r in runs if r.graph_name == "fleaf"]
    )
    assert "running" not in {r.status for r in runs}
    await still_serves(running, http)


async def test_failed_calls_count_against_the_fuel_budget(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    """A call that runs out of fuel burnt all of it: retrying it must not make
    the run's fuel budget look unspent."""
    from conftest import TESTING
    from ionflux.http.testing import publish_wasm

    publish_wasm(running.host, "spinner", TESTING / "spin.wasm", limits={"fuel": 1_000_000})
    text = (
        "name: spinning\n"
        'version: "1.0.0"\n'
        "budget: {max_fuel: 1500000}\n"
        "triggers: [{type: manual}]\n"
        "graph:\n"
        "  - id: spin\n"
        "    transform: spinner\n"
        "    retry: 5\n"
        "    inputs: {}\n"
    )
    await deploy(running, text)
    result = await running.engine.run("spinning", {})
    assert result.overall_status == "failure"
    kinds = [e["kind"] for e in result.error_details or []]
    assert "run_budget_exceeded" in kinds, result.error_details
    # Each attempt burnt its whole million; the second crossed 1.5 million and
    # the retries after it were refused (on the old code: six attempts, 0 fuel counted).
    assert result.fuel_used == 2_000_000
    assert result.step("spin").attempts < 6
    await still_serves(running, http)
