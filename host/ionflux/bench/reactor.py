"""Issue 14's figure: what the ION Reactor adds per plan step, beside invoking the
same graph directly.

The agent is a one-node graph over the testing guest ``echo``. A plan of ten
steps in a chain (each reading the previous step's output) runs as one run of
the Reactor's execute-master-plan graph: fetch the plan from IONPOD, validate it,
ten child runs under the plan's one grant, the step log stored in IONPOD, the
completion node. The direct figure is ten ``engine.run`` of the agent in a row
(each a recorded run too). The per-step overhead is (plan - direct) / 10; the
one-step plan minus one direct run is the Reactor's fixed cost per plan.
Samples are interleaved; each figure is a median.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

from ionwall import Ionwall

from ..config import load_config
from ..graph import Engine, IonwallAuthorizer
from ..host import Host
from ..manifest import Manifest, load_manifest
from ..reactor import Reactor
from ..store import cid_for_bytes
from ._timing import Row

STEPS = 10
REPEATS = 11
AGENT = (
    "name: bench_agent\nversion: '1.0.0'\n"
    "graph:\n  - {id: n, transform: echo, inputs: {v: '{{ trigger.input_data.v }}'}}\n"
)


def _plan(steps: int) -> dict[str, object]:
    out: list[dict[str, object]] = [
        {"step_id": "s0", "agent_to_call": "bench_agent", "input_mapping": {"v": 0}}
    ]
    for i in range(1, steps):
        out.append(
            {
                "step_id": f"s{i}",
                "agent_to_call": "bench_agent",
                "dependencies": [f"s{i - 1}"],
                "input_mapping": {"v": f"{{{{ nodes.s{i - 1}.outputs.v }}}}"},
            }
        )
    return {"name": f"bench_plan_{steps}", "steps": out}


def run(*, repo: Path, workdir: Path) -> list[Row]:
    build = repo / "build" / "transforms"
    config = load_config(data_dir=workdir / "host")
    host = Host(config)
    echo = (build / "testing" / "echo.wasm").read_bytes()
    host.publish_bytes(
        Manifest.model_validate(
            {"name": "echo", "version": "0.1.0", "abi": "component",
             "module": {"cid": cid_for_bytes(echo)}}
        ),
        echo,
    )  # fmt: skip
    for name in ("pod-fetch", "pod-store"):
        manifest = load_manifest(repo / "manifests" / f"{name}.yaml")
        data = (build / f"{name}.wasm").read_bytes()
        module = manifest.module.model_copy(update={"cid": cid_for_bytes(data)})
        host.publish_bytes(manifest.model_copy(update={"module": module}), data)
    wall = Ionwall(config.data_dir / "ionwall")
    engine = Engine.for_host(host, authorizer=IonwallAuthorizer(wall))
    reactor = Reactor(engine, wall=wall)
    try:
        reactor.ensure_graphs(repo / "graphs")
        agent = engine.validate(AGENT)
        engine.repository.deploy(AGENT, agent.name, agent.graph.version, "bench")
        return asyncio.run(_measure(engine, reactor, wall))
    finally:
        reactor.close()
        engine.close()
        wall.close()
        host.close()


async def _measure(engine: Engine, reactor: Reactor, wall: Ionwall) -> list[Row]:
    long_cid, _ = reactor.put_plan(_plan(STEPS))
    one_cid, _ = reactor.put_plan(_plan(1))
    for cid in (long_cid, one_cid):  # the plans' one consent each, given ahead
        first = await reactor.run_plan(cid)
        if first.overall_status == "awaiting_approval":
            for consent in wall.consents("pending"):
                wall.approve(consent.id)
        assert (await reactor.run_plan(cid)).output["overall_status"] == "success"

    async def direct(n: int) -> float:
        start = time.perf_counter()
        v = 0
        for _ in range(n):
            result = await engine.run("bench_agent", {"v": v})
            v = result.output["v"] if isinstance(result.output, dict) else v
        return time.perf_counter() - start

    async def plan(cid: str) -> float:
        start = time.perf_counter()
        result = await reactor.run_plan(cid)
        elapsed = time.perf_counter() - start
        assert result.output["overall_status"] == "success", result.error_details
        return elapsed

    direct_n, plan_n, direct_1, plan_1 = [], [], [], []
    for _ in range(REPEATS):
        direct_n.append(await direct(STEPS))
        plan_n.append(await plan(long_cid))
        direct_1.append(await direct(1))
        plan_1.append(await plan(one_cid))
    engine.flush()
    d_n, p_n = statistics.median(direct_n), statistics.median(plan_n)
    d_1, p_1 = statistics.median(direct_1), statistics.median(plan_1)
    per_step = (p_n - d_n) / STEPS
    return [
        Row(f"{STEPS} direct runs of the agent graph", d_n * 1000, "ms"),
        Row(f"{STEPS}-step master plan (one plan run, {STEPS} child runs)", p_n * 1000, "ms"),
        Row("Reactor overhead per plan step ((plan - direct) / steps)", per_step * 1000, "ms"),
        Row("Reactor fixed cost per plan (1-step plan - 1 direct run)", (p_1 - d_1) * 1000, "ms"),
    ]
