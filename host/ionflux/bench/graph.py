"""Issue 4's figures: what the graph engine adds per node, beside the same
invocations called directly.

Ten trivial transforms (the testing guest ``echo``) as a linear chain (each
node reads the previous node's outputs) and as a fan-out (ten independent
nodes, one level), each a full ``engine.run``: input validation, planning
cache hit, rendering, scheduling, a sandbox per node on a worker thread, and
the run and every step recorded in SQLite (and the run log in the pod).
The direct figure is ten ``host.invoke`` calls in a row, the sandbox alone;
the pool figure is the same ten calls on ten threads with no engine at all,
the most a fan-out can get from threads (a trivial call is mostly Python
under the GIL). Samples are interleaved; each figure is a median.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..config import load_config
from ..graph import Engine
from ..host import Host
from ..manifest import Manifest, ModuleRef
from ..store import cid_for_bytes
from ._timing import Row

NODES = 10
REPEATS = 21


def _linear() -> str:
    lines = ["name: bench_linear", "graph:", "  - {id: n0, transform: echo, inputs: {v: 0}}"]
    for i in range(1, NODES):
        ref = f"'{{{{ nodes.n{i - 1}.outputs.v }}}}'"
        lines.append(f"  - {{id: n{i}, transform: echo, inputs: {{v: {ref}}}}}")
    return "\n".join(lines) + "\n"


def _linear_once_only() -> str:
    """``_linear`` with every node ``idempotent: false``: each step is recorded
    ``running`` before its call and ``done`` after it, each in its own committed
    transaction (the durable path), where the default batches step rows."""
    lines = ["name: bench_linear_once", "graph:"]
    lines.append("  - {id: n0, transform: echo, inputs: {v: 0}, idempotent: false}")
    for i in range(1, NODES):
        ref = f"'{{{{ nodes.n{i - 1}.outputs.v }}}}'"
        lines.append(f"  - {{id: n{i}, transform: echo, inputs: {{v: {ref}}}, idempotent: false}}")
    return "\n".join(lines) + "\n"


def _linear_pure(cache: bool) -> str:
    """``_linear`` over ``echo-pure`` (the same module, ``pure: true``), its first input
    from the trigger; with ``cache: content`` on every node or on none."""
    extra = ", cache: content" if cache else ""
    lines = [f"name: bench_linear_pure_{int(cache)}", "graph:"]
    lines.append(
        f"  - {{id: n0, transform: echo-pure, inputs: {{v: '{{{{ trigger.input_data.n }}}}'}}"
        f"{extra}}}"
    )
    for i in range(1, NODES):
        ref = f"'{{{{ nodes.n{i - 1}.outputs.v }}}}'"
        lines.append(f"  - {{id: n{i}, transform: echo-pure, inputs: {{v: {ref}, i: {i}}}{extra}}}")
    return "\n".join(lines) + "\n"


def _fan_out(transform: str = "echo", inputs: str = "{{v: {i}}}") -> str:
    lines = [f"name: bench_fan_out_{transform}", "graph:"]
    lines += [
        f"  - {{id: n{i}, transform: {transform}, inputs: {inputs.format(i=i)}}}"
        for i in range(NODES)
    ]
    return "\n".join(lines) + "\n"


def _thousand() -> str:
    """1000 nodes as a binary tree (10 levels), each reading its parent's output:
    what ``test_a_thousand_node_graph_validates`` checks, timed here instead."""
    lines = ["name: bench_thousand", "graph:", "  - {id: n0, transform: echo, inputs: {v: 0}}"]
    for i in range(1, 1000):
        ref = f"'{{{{ nodes.n{(i - 1) // 2}.outputs.v }}}}'"
        lines.append(f"  - {{id: n{i}, transform: echo, inputs: {{v: {ref}, i: {i}}}}}")
    return "\n".join(lines) + "\n"


# A call that is mostly guest work: `busy` for 500 k iterations (about a
# millisecond of wasm), then an answer. Sandbox calls run outside the GIL, so
# ten of them on worker threads overlap on two cores; echo's call is mostly
# the host's Python and cannot.
BUSY_ITERATIONS = 500_000
BUSY_INPUT = "{{iterations: " + str(BUSY_ITERATIONS) + "}}"  # a template for _fan_out


def run(*, repo: Path, workdir: Path) -> list[Row]:
    build = repo / "build" / "transforms"
    echo = build / "testing" / "echo.wasm"
    data = echo.read_bytes()
    config = load_config(data_dir=workdir / "host")
    graph_settings = config.graph.model_copy(update={"concurrency": NODES})
    config = config.model_copy(update={"graph": graph_settings})
    host = Host(config)
    busy = (build / "testing" / "busy.wasm").read_bytes()
    for name, wasm, limits in (
        ("echo", data, {}),
        ("echo-pure", data, {}),
        ("busy", busy, {"fuel": 100_000_000}),
    ):
        module = ModuleRef(cid=cid_for_bytes(wasm))
        manifest = Manifest.model_validate(
            {
                "name": name,
                "version": "0.1.0",
                "abi": "component",
                "module": module,
                "limits": limits,
                "pure": name == "echo-pure",
            }
        )
        host.publish_bytes(manifest, wasm)
    engine = Engine.for_host(host)
    workdir.mkdir(parents=True, exist_ok=True)
    linear = workdir / "linear.yaml"
    linear.write_text(_linear())
    fan_out = workdir / "fan_out.yaml"
    fan_out.write_text(_fan_out())
    once = workdir / "linear_once.yaml"
    once.write_text(_linear_once_only())
    heavy = workdir / "heavy.yaml"
    heavy.write_text(_fan_out("busy", BUSY_INPUT))
    plain_pure = workdir / "linear_pure.yaml"
    plain_pure.write_text(_linear_pure(False))
    cached = workdir / "linear_cached.yaml"
    cached.write_text(_linear_pure(True))
    pool = ThreadPoolExecutor(NODES)
    thousand = _thousand()
    try:
        validate_s = statistics.median(
            _timed(lambda: engine.validate(thousand, "thousand.yaml")) for _ in range(5)
        )
        direct, pooled, linear_s, fan_s = asyncio.run(
            _measure(host, engine, pool, str(linear), str(fan_out))
        )
        heavy_direct, heavy_pooled, heavy_fan = asyncio.run(
            _measure_heavy(host, engine, pool, str(heavy))
        )
        batched_s, durable_s, runs_s = asyncio.run(_measure_durable(engine, str(linear), str(once)))
        plain_s, hit_s, miss_s = asyncio.run(_measure_cache(engine, str(plain_pure), str(cached)))
    finally:
        pool.shutdown()
        engine.close()
        host.close()
    return [
        Row(f"{NODES} x echo called directly (host.invoke, sequential sum)", direct * 1e3, "ms"),
        Row(f"linear graph of {NODES} x echo (engine.run)", linear_s * 1e3, "ms"),
        Row("engine overhead per node, linear", (linear_s - direct) / NODES * 1e6, "µs"),
        Row(f"fan-out graph of {NODES} x echo (engine.run, one level)", fan_s * 1e3, "ms"),
        Row("engine overhead per node, fan-out", (fan_s - direct) / NODES * 1e6, "µs"),
        Row("fan-out time / sequential sum", fan_s / direct, "x"),
        Row(f"{NODES} x echo on {NODES} threads, no engine (the ceiling)", pooled * 1e3, "ms"),
        Row("  its time / sequential sum", pooled / direct, "x"),
        Row(f"{NODES} x busy (≈1 ms) called directly, sequential sum", heavy_direct * 1e3, "ms"),
        Row(f"fan-out graph of {NODES} x busy", heavy_fan * 1e3, "ms"),
        Row("busy fan-out time / sequential sum", heavy_fan / heavy_direct, "x"),
        Row(f"{NODES} x busy on {NODES} threads, no engine", heavy_pooled * 1e3, "ms"),
        Row("  its time / sequential sum", heavy_pooled / heavy_direct, "x"),
        Row("1000-node graph validated and planned (engine.validate)", validate_s * 1e3, "ms"),
        Row(f"linear graph of {NODES} x echo, step rows batched (default)", batched_s * 1e3, "ms"),
        Row("  same, every step durable (idempotent: false)", durable_s * 1e3, "ms"),
        Row(
            "  cost of a durable step (running + done committed)",
            (durable_s - batched_s) / NODES * 1e6,
            "µs",
        ),
        Row(f"runs/s, linear graph of {NODES} x echo, {NODES} runs at once", runs_s, "runs/s"),
        Row(f"linear graph of {NODES} x echo-pure (pure), no cache:", plain_s * 1e3, "ms"),
        Row("  same, cache: content, every step a hit", hit_s * 1e3, "ms"),
        Row("  same, cache: content, every step a miss (new input)", miss_s * 1e3, "ms"),
        Row("  cached step (hit: key, lookup, no guest call)", hit_s / NODES * 1e6, "µs"),
        Row("  uncached step (miss: key, lookup, call, entry)", miss_s / NODES * 1e6, "µs"),
        Row("  a miss over a node without cache:", (miss_s - plain_s) / NODES * 1e6, "µs"),
    ]


async def _measure_cache(engine: Engine, plain: str, cached: str) -> tuple[float, float, float]:
    """The same linear graph without ``cache:``, with ``cache: content`` answered from
    the cache (the same input as an earlier run) and missing it (a new input)."""
    fresh = iter(range(10**9))

    async def graph(ref: str, n: int) -> None:
        result = await engine.run(ref, {"n": n})
        if result.overall_status != "success":
            raise RuntimeError(f"benchmark graph failed: {result.error_details}")

    for _ in range(3):
        await graph(plain, -1)
        await graph(cached, -1)
        await graph(cached, next(fresh))
    times: tuple[list[float], list[float], list[float]] = ([], [], [])
    for _ in range(REPEATS):
        for i, (ref, n) in enumerate(((plain, -1), (cached, -1), (cached, next(fresh)))):
            start = time.perf_counter()
            await graph(ref, n)
            times[i].append(time.perf_counter() - start)
    plain_s, hit_s, miss_s = (statistics.median(t) for t in times)
    return plain_s, hit_s, miss_s


async def _measure_durable(engine: Engine, linear: str, once: str) -> tuple[float, float, float]:
    """The same graph with step rows batched and with every step recorded before and
    after its call; then runs per second with ``NODES`` runs in flight."""

    async def graph(ref: str) -> None:
        result = await engine.run(ref, {})
        if result.overall_status != "success":
            raise RuntimeError(f"benchmark graph failed: {result.error_details}")

    for _ in range(3):
        await graph(linear)
        await graph(once)
    batched: list[float] = []
    durable: list[float] = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        await graph(linear)
        batched.append(time.perf_counter() - start)
        start = time.perf_counter()
        await graph(once)
        durable.append(time.perf_counter() - start)
    runs = 10 * NODES
    start = time.perf_counter()
    for _ in range(runs // NODES):
        await asyncio.gather(*(graph(linear) for _ in range(NODES)))
    per_s = runs / (time.perf_counter() - start)
    return statistics.median(batched), statistics.median(durable), per_s


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


async def _measure_heavy(
    host: Host, engine: Engine, pool: ThreadPoolExecutor, heavy: str
) -> tuple[float, float, float]:
    def one(_: int = 0) -> None:
        host.invoke("busy", {"iterations": BUSY_ITERATIONS})

    def direct() -> None:
        for _ in range(NODES):
            one()

    def pooled() -> None:
        list(pool.map(one, range(NODES)))

    async def graph() -> None:
        result = await engine.run(heavy, {})
        if result.overall_status != "success":
            raise RuntimeError(f"benchmark graph failed: {result.error_details}")

    direct()
    pooled()
    await graph()
    d: list[float] = []
    p: list[float] = []
    g: list[float] = []
    for _ in range(11):
        start = time.perf_counter()
        direct()
        d.append(time.perf_counter() - start)
        start = time.perf_counter()
        pooled()
        p.append(time.perf_counter() - start)
        start = time.perf_counter()
        await graph()
        g.append(time.perf_counter() - start)
    return statistics.median(d), statistics.median(p), statistics.median(g)


async def _measure(
    host: Host, engine: Engine, pool: ThreadPoolExecutor, linear: str, fan_out: str
) -> tuple[float, float, float, float]:
    def direct() -> None:
        for i in range(NODES):
            host.invoke("echo", {"v": i})

    def pooled() -> None:
        list(pool.map(lambda i: host.invoke("echo", {"v": i}), range(NODES)))

    async def graph(ref: str) -> None:
        result = await engine.run(ref, {})
        if result.overall_status != "success":
            raise RuntimeError(f"benchmark graph failed: {result.error_details}")

    for _ in range(3):  # warm: compile cache, plan cache, worker threads
        direct()
        pooled()
        await graph(linear)
        await graph(fan_out)
    samples: dict[str, list[float]] = {"direct": [], "pool": [], "linear": [], "fan": []}
    for _ in range(REPEATS):  # interleaved, so drift on a shared machine hits all four
        start = time.perf_counter()
        direct()
        samples["direct"].append(time.perf_counter() - start)
        start = time.perf_counter()
        pooled()
        samples["pool"].append(time.perf_counter() - start)
        start = time.perf_counter()
        await graph(linear)
        samples["linear"].append(time.perf_counter() - start)
        start = time.perf_counter()
        await graph(fan_out)
        samples["fan"].append(time.perf_counter() - start)
    return (
        statistics.median(samples["direct"]),
        statistics.median(samples["pool"]),
        statistics.median(samples["linear"]),
        statistics.median(samples["fan"]),
    )
