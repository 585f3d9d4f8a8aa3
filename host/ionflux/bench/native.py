"""Issue 18's figures: the native call path, as ratios to the Extism Python
SDK's call of an already-instantiated plugin, measured in the same run (these
machines are shared and noisy: absolute times move 2x, ratios much less).

- fresh-sandbox native call: the extension alone (new Store, instantiate from
  the module's InstancePre, ``run``, output), ``echo``; goal ≤ 1.0.
- ``Host.invoke`` of ``echo`` on the native path (wasmtime-py's beside it); goal ≤ 3.
- a linear graph of ten ``echo`` nodes: time per node and the engine's
  overhead per node (the graph run minus ten direct invokes); goal ≤ 3.
- a call with one import through IONWALL ÷ the same with an allow-all gate; goal ≤ 1.10.
- two host processes ÷ one: calls per second of ``Host.invoke`` in two
  processes at once over one process alone (processes for cores, since threads
  do not scale: every instantiate maps and protects memory in one address space); goal ≥ 1.8.
- the extension's cold and warm build times, as recorded by
  ``scripts/build_native.sh`` in ``~/.cache/ionflux/native-build-times.json``.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import extism

from ..config import Config, load_config
from ..graph import Engine
from ..host import Host
from ..runtime import Loaded
from . import graph as graph_bench
from ._timing import Row, per_call
from .runtime import INPUT, _gate_pair, _publish

PROCESS_CALLS = 20_000  # about a second of calls per process


def _config(workdir: Path, engine: str) -> Config:
    config = load_config(data_dir=workdir)
    return config.model_copy(
        update={"runtime": config.runtime.model_copy(update={"engine": engine})}
    )


def run(*, repo: Path, workdir: Path) -> list[Row]:
    build = repo / "build" / "transforms"
    echo = build / "testing" / "echo.wasm"
    host = Host(_config(workdir / "native", "native"))
    if host.runtime.engine_name != "native":
        host.close()
        raise RuntimeError("the native extension is not built (bash scripts/bootstrap.sh)")
    py_host = Host(_config(workdir / "wasmtime", "wasmtime"))
    rows: list[Row] = []
    try:
        for h in (host, py_host):
            _publish(h, "echo", echo)
            h.invoke("echo", INPUT)
        plugin = extism.Plugin((build / "extism-echo.wasm").read_bytes(), wasi=False, functions=[])

        def extism_reused() -> object:
            return plugin.call("run", INPUT)

        native = host.runtime._native
        assert native is not None
        prepared = host.prepare("echo")
        assert isinstance(prepared.loaded, Loaded)
        component, limits = prepared.loaded.component, prepared.limits

        def fresh_native() -> object:
            return native.call(
                component,
                INPUT,
                fuel=limits.fuel,
                ticks=400,
                memory_bytes=limits.memory_bytes,
                table_elements=limits.table_elements,
                instances=limits.instances,
                max_output_bytes=limits.max_output_bytes,
            )

        def invoke_native() -> object:
            return host.invoke("echo", INPUT)

        def invoke_py() -> object:
            return py_host.invoke("echo", INPUT)

        fns = (extism_reused, fresh_native, invoke_native, invoke_py)
        samples: list[list[float]] = [[] for _ in fns]
        for _ in range(5):  # interleaved: drift hits all of them alike
            for i, fn in enumerate(fns):
                samples[i].append(per_call(fn, n=300, repeats=3))
        ext_s, fresh_s, inv_s, inv_py_s = (statistics.median(s) for s in samples)
        rows += [
            Row("extism SDK, reused Plugin (the unit below)", ext_s * 1e6, "µs"),
            Row("fresh-sandbox native call (extension alone)", fresh_s * 1e6, "µs"),
            Row("  ÷ extism reused", fresh_s / ext_s, "x (goal ≤ 1.0)"),
            Row("host.invoke, native path", inv_s * 1e6, "µs"),
            Row("  ÷ extism reused", inv_s / ext_s, "x (goal ≤ 3)"),
            Row("host.invoke, wasmtime-py path", inv_py_s * 1e6, "µs"),
            Row("  ÷ extism reused", inv_py_s / ext_s, "x"),
        ]

        rows += _graph(host, workdir, ext_s)
        rows += _gate(host, build, ext_s)
    finally:
        py_host.close()
        host.close()
    rows += _processes(echo, workdir)
    rows += _build_times()
    return rows


def _graph(host: Host, workdir: Path, ext_s: float) -> list[Row]:
    engine = Engine.for_host(host)
    workdir.mkdir(parents=True, exist_ok=True)
    linear = workdir / "linear.yaml"
    linear.write_text(graph_bench._linear())
    fan_out = workdir / "fan_out.yaml"
    fan_out.write_text(graph_bench._fan_out())
    pool = ThreadPoolExecutor(graph_bench.NODES)
    try:
        direct, _pooled, linear_s, _fan = asyncio.run(
            graph_bench._measure(host, engine, pool, str(linear), str(fan_out))
        )
    finally:
        pool.shutdown()
        engine.close()
    nodes = graph_bench.NODES
    per_node = linear_s / nodes
    overhead = (linear_s - direct) / nodes
    return [
        Row(f"linear graph of {nodes} x echo, per node (native)", per_node * 1e6, "µs"),
        Row("  ÷ extism reused", per_node / ext_s, "x"),
        Row("  engine overhead per node (graph minus direct invokes)", overhead * 1e6, "µs"),
        Row("  ÷ extism reused", overhead / ext_s, "x (goal ≤ 3)"),
    ]


def _gate(host: Host, build: Path, ext_s: float) -> list[Row]:
    gated, ungated = _gate_pair(host, build)

    for fn in (gated, ungated):
        per_call(fn, n=100, repeats=1)
    t_gated, t_free = [], []
    for _ in range(9):
        t_gated.append(per_call(gated, n=200, repeats=1, warmup=0))
        t_free.append(per_call(ungated, n=200, repeats=1, warmup=0))
    ratio = statistics.median(g / f for g, f in zip(t_gated, t_free, strict=True))
    gated_s, free_s = statistics.median(t_gated), statistics.median(t_free)
    return [
        Row("invoke with one import, IONWALL gate + audit (native)", gated_s * 1e6, "µs"),
        Row("  ÷ extism reused", gated_s / ext_s, "x"),
        Row("invoke with one import, allow-all gate (native)", free_s * 1e6, "µs"),
        Row("  gated ÷ allow-all", ratio, "x (goal ≤ 1.10)"),
    ]


def _serve_calls(args: tuple[str, str, Any, int]) -> tuple[float, float]:
    """One host process: ``PROCESS_CALLS`` invokes of echo after ``start``;
    (wall seconds, CPU seconds of this process)."""
    echo, workdir, start, calls = args
    host = Host(_config(Path(workdir), "native"))
    try:
        _publish(host, "echo", Path(echo))
        for _ in range(200):
            host.invoke("echo", INPUT)
        start.wait()
        began, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            host.invoke("echo", INPUT)
        return time.perf_counter() - began, time.process_time() - cpu
    finally:
        host.close()


def _processes(echo: Path, workdir: Path) -> list[Row]:
    """Calls per second of one process, and of two at once. On a machine shared
    with other work two processes cannot have two idle cores, so the CPU time
    per call is shown too: if it stays the same in two processes, nothing
    shared between them slows a call, and calls scale with the free cores."""
    context = multiprocessing.get_context("spawn")
    rates: dict[int, list[float]] = {1: [], 2: []}
    cpu_per_call: dict[int, list[float]] = {1: [], 2: []}
    with context.Manager() as manager:
        for _ in range(3):
            for count in (1, 2):
                start = manager.Barrier(count)
                args = [
                    (str(echo), str(workdir / f"proc-{count}-{i}"), start, PROCESS_CALLS)
                    for i in range(count)
                ]
                with context.Pool(count) as pool:
                    timings = pool.map(_serve_calls, args)
                rates[count].append(count * PROCESS_CALLS / max(wall for wall, _ in timings))
                cpu_per_call[count].append(
                    statistics.mean(cpu for _, cpu in timings) / PROCESS_CALLS
                )
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    cpu_one, cpu_two = statistics.median(cpu_per_call[1]), statistics.median(cpu_per_call[2])
    load = os.getloadavg()[0]
    return [
        Row("host.invoke calls/s, one process", one, "calls/s"),
        Row("host.invoke calls/s, two processes at once", two, "calls/s"),
        Row(
            "  two ÷ one",
            two / one,
            f"x (goal ≥ 1.8; {os.cpu_count()} cores, load average {load:.1f} after)",
        ),
        Row("CPU time per call, one process", cpu_one * 1e6, "µs"),
        Row("CPU time per call, each of two processes", cpu_two * 1e6, "µs"),
        Row("  one ÷ two (1.0: nothing shared slows a call)", cpu_one / cpu_two, "x"),
    ]


def _build_times() -> list[Row]:
    path = Path.home() / ".cache" / "ionflux" / "native-build-times.json"
    try:
        times = json.loads(path.read_text())
    except (OSError, ValueError):
        return [Row(f"extension build times: none recorded in {path}", 0, "")]
    rows = []
    for kind in ("cold", "warm"):
        if kind in times:
            at = times[kind].get("at", "?")
            rows.append(Row(f"extension {kind} build (recorded {at})", times[kind]["seconds"], "s"))
    return rows
