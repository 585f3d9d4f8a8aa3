"""What a transform may import and must export: the `ionflux:transform` world.

Checked once, at publish (and load) time, so a module that asks for anything
else never reaches a store.
"""

from __future__ import annotations

import wasmtime
from wasmtime.component import Component

from .._errors import ImportOutsideWorld, ModuleError, NotWasm

WORLD_VERSION = "0.1.0"
INTERFACES = ("types", "log", "config", "pod", "bus", "http")
WORLD_IMPORTS = frozenset(f"ionflux:transform/{name}@{WORLD_VERSION}" for name in INTERFACES)

_WASM_MAGIC = b"\x00asm"
_CORE_VERSION = b"\x01\x00\x00\x00"


def wasm_kind(data: bytes) -> str:
    """``"component"`` or ``"module"``; ``NotWasm`` for anything else."""
    if len(data) < 8 or data[:4] != _WASM_MAGIC:
        raise NotWasm("not a WebAssembly binary (no \\0asm header)")
    return "module" if data[4:8] == _CORE_VERSION else "component"


def compile_component(engine: wasmtime.Engine, data: bytes) -> Component:
    if wasm_kind(data) != "component":
        raise ModuleError(
            "abi 'component' needs a WebAssembly component, this is a core module "
            "(build it with `wasm-tools component new`, or publish it with abi: extism)"
        )
    try:
        return Component(engine, data)
    except wasmtime.WasmtimeError as exc:
        raise ModuleError(f"component does not compile: {_first_line(exc)}") from exc


def check_world(engine: wasmtime.Engine, component: Component) -> None:
    """Refuses imports outside the world and a missing ``run`` export."""
    ctype = component.type
    outside = sorted(name for name in ctype.imports(engine) if name not in WORLD_IMPORTS)
    if outside:
        raise ImportOutsideWorld(outside)
    if "run" not in ctype.exports(engine):
        raise ModuleError("component does not export `run` (world ionflux:transform/transform)")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
