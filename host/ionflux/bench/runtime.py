"""Issue 2's figures: one trivial call through the host, beside raw wasmtime-py
and the Extism Python SDK, and the first call of a newly published module."""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable
from pathlib import Path

import extism
import wasmtime
from wasmtime.component import Component, Linker

import ionwall

from ..config import load_config
from ..host import Host
from ..manifest import Manifest, ModuleRef
from ..runtime import INTERFACES, WORLD_VERSION
from ..store import cid_for_bytes
from ._timing import Row, once, per_call

INPUT = '{"text":"hello"}'
LOG_CALL = '{"call":"log","level":"info","message":"hello"}'


def _publish(
    host: Host, name: str, path: Path, abi: str = "component", scopes: tuple[str, ...] = ()
) -> str:
    data = path.read_bytes()
    cid = cid_for_bytes(data)
    manifest = Manifest.model_validate(
        {
            "name": name,
            "version": "0.1.0",
            "abi": abi,
            "module": ModuleRef(cid=cid),
            "scopes": list(scopes),
        }
    )
    host.publish_bytes(manifest, data)
    return cid


def _gate_pair(host: Host, build: Path) -> tuple[Callable[[], object], Callable[[], object]]:
    """all-imports published and its consent approved: an invoke making one allowed
    import call through the IONWALL gate, and the same through a gate that allows
    everything (the runtime and the native bench compare the two)."""
    _publish(host, "all-imports", build / "testing" / "all-imports.wasm", scopes=("emit_log:*",))
    try:
        host.invoke("all-imports", LOG_CALL)
    except ionwall.ConsentRequired as exc:
        host.ionwall.approve(exc.request.id)
    allow_all = ionwall.AllowAllGate()

    def gated() -> object:
        return host.invoke("all-imports", LOG_CALL)

    def ungated() -> object:
        return host.invoke("all-imports", LOG_CALL, gate=allow_all)

    return gated, ungated


def run(*, repo: Path, workdir: Path) -> list[Row]:
    build = repo / "build" / "transforms"
    echo = build / "testing" / "echo.wasm"
    rows: list[Row] = []

    host = Host(load_config(data_dir=workdir / "host"))
    cid = _publish(host, "echo", echo)
    _publish(host, "extism-echo", build / "extism-echo.wasm", abi="extism")
    host.invoke("echo", INPUT)

    # Raw wasmtime-py: the same component, a fresh store + instance + call, nothing else.
    engine = wasmtime.Engine(wasmtime.Config())
    component = Component(engine, echo.read_bytes())
    linker = Linker(engine)
    with linker.root() as root:
        for interface in INTERFACES:
            with root.add_instance(f"ionflux:transform/{interface}@{WORLD_VERSION}"):
                pass
    index = component.get_export_index("run")

    def raw() -> object:
        store = wasmtime.Store(engine)
        instance = linker.instantiate(store, component)
        func = instance.get_func(store, index)  # type: ignore[arg-type]
        return func(store, INPUT)  # type: ignore[misc]

    def hosted() -> object:
        return host.invoke("echo", INPUT)

    # Extism SDK, a reused Plugin (the SDK's fast path, not a fresh sandbox).
    plugin = extism.Plugin((build / "extism-echo.wasm").read_bytes(), wasi=False, functions=[])

    def extism_reused() -> object:
        return plugin.call("run", INPUT)

    def extism_hosted() -> object:
        return host.invoke("extism-echo", INPUT)

    # Interleave the measurements so drift on a shared machine hits all of them.
    t_raw, t_host, t_ext, t_ext_host = [], [], [], []
    for _ in range(3):
        t_raw.append(per_call(raw, n=400, repeats=3))
        t_host.append(per_call(hosted, n=400, repeats=3))
        t_ext.append(per_call(extism_reused, n=400, repeats=3))
        t_ext_host.append(per_call(extism_hosted, n=100, repeats=3))
    raw_s, host_s, ext_s, ext_host_s = (sorted(t)[1] for t in (t_raw, t_host, t_ext, t_ext_host))
    rows += [
        Row("raw wasmtime-py: new store + instantiate + call", raw_s * 1e6, "µs"),
        Row("host.invoke (fresh sandbox, gate, limits, JSON check)", host_s * 1e6, "µs"),
        Row("  host / raw", host_s / raw_s, "x (target ≤ 1.2)"),
        Row("extism SDK, reused Plugin", ext_s * 1e6, "µs"),
        Row("host.invoke of the Extism plugin (fresh Plugin)", ext_host_s * 1e6, "µs"),
    ]

    # One allowed import call per invocation: the IONWALL gate (grant lookup,
    # scope match, hash-chained audit entry) beside a gate that allows everything.
    gated, ungated = _gate_pair(host, build)

    # Where the overhead goes: one gate check with its audit entry written at
    # once, made right after an allow-all invocation (the sandbox call has just
    # run through the CPU's caches) beside the same check in a tight loop.
    published = host.prepare("all-imports").transform
    grant_id = host.authorize(published)
    ctx = ionwall.CallContext(published.cid, published.name, grant_id=grant_id)

    def check() -> object:
        return host.ionwall.gate(grant_id).check(ctx, "emit_log:info")

    def ungated_then_check() -> object:
        ungated()
        return check()

    # Batches of the three interleaved, nine times; each figure is the median of
    # the per-round values, so drift on a shared machine hits all three alike.
    for fn in (gated, ungated, ungated_then_check):
        per_call(fn, n=100, repeats=1)
    t_gated, t_free, t_after = [], [], []
    for _ in range(9):
        t_gated.append(per_call(gated, n=200, repeats=1, warmup=0))
        t_free.append(per_call(ungated, n=200, repeats=1, warmup=0))
        t_after.append(per_call(ungated_then_check, n=200, repeats=1, warmup=0))
    gated_s, free_s = statistics.median(t_gated), statistics.median(t_free)
    overhead = statistics.median(g / f - 1 for g, f in zip(t_gated, t_free, strict=True))
    after_s = statistics.median(a - f for a, f in zip(t_after, t_free, strict=True))
    hot_s = per_call(check, n=2000)
    rows += [
        Row("invoke with one import call, IONWALL gate + audit", gated_s * 1e6, "µs"),
        Row("invoke with one import call, allow-all gate", free_s * 1e6, "µs"),
        Row("  gate overhead", overhead * 100, "% (target < 10)"),
        Row("  one gate check + audit write, in a tight loop", hot_s * 1e6, "µs"),
        Row("  the same check right after an invocation", after_s * 1e6, "µs"),
    ]

    # First call of a newly published module: compile cached on disk vs not.
    cold_dir = workdir / "cold"
    first = Host(load_config(data_dir=cold_dir))
    _publish(first, "uppercase", build / "uppercase.wasm")
    first.close()
    cached, uncached = [], []
    for _ in range(5):
        h = Host(load_config(data_dir=cold_dir))
        cached.append(once(lambda h=h: h.invoke("uppercase", INPUT)))  # type: ignore[misc]
        h.close()
        shutil.rmtree(cold_dir / "cache")
        h = Host(load_config(data_dir=cold_dir))
        uncached.append(once(lambda h=h: h.invoke("uppercase", INPUT)))  # type: ignore[misc]
        h.close()
    rows += [
        Row("first call, compile cached on disk", sorted(cached)[2] * 1e3, "ms (target < 5)"),
        Row("first call, not cached (compile)", sorted(uncached)[2] * 1e3, "ms"),
    ]
    host.close()
    del cid
    return rows
