"""What a transform may import and must export: the `ionflux:transform` world.

Checked once, at publish (and load) time, so a module that asks for anything
else never reaches a store. Besides the world, a component may import the
WASI 0.2 interfaces on ``WASI_ALLOWED`` (what componentize-py's CPython
needs); ``_wasi`` links them with a context that grants nothing.
"""

from __future__ import annotations

import re

import wasmtime
from wasmtime.component import Component

from .._errors import ImportOutsideWorld, ModuleError, NotWasm

WORLD_VERSION = "0.1.0"
INTERFACES = ("types", "log", "config", "pod", "bus", "http")
WORLD_IMPORTS = frozenset(f"ionflux:transform/{name}@{WORLD_VERSION}" for name in INTERFACES)

#: The WASI 0.2 interfaces a component may import (any 0.2.x version). Listed
#: here is what may be linked, not what is granted: ``_wasi.wasi_config`` gives
#: no environment, arguments, directories or network, and ``_wasi.wasi_linker``
#: refuses timers and sockets. Anything else under ``wasi:`` (``wasi:http``, a
#: 0.3 interface, …) is outside the world.
WASI_ALLOWED = frozenset(
    {
        "wasi:cli/environment",
        "wasi:cli/exit",
        "wasi:cli/stderr",
        "wasi:cli/stdin",
        "wasi:cli/stdout",
        "wasi:cli/terminal-input",
        "wasi:cli/terminal-output",
        "wasi:cli/terminal-stderr",
        "wasi:cli/terminal-stdin",
        "wasi:cli/terminal-stdout",
        "wasi:clocks/monotonic-clock",
        "wasi:clocks/wall-clock",
        "wasi:filesystem/preopens",
        "wasi:filesystem/types",
        "wasi:io/error",
        "wasi:io/poll",
        "wasi:io/streams",
        "wasi:random/insecure",
        "wasi:random/insecure-seed",
        "wasi:random/random",
        "wasi:sockets/instance-network",
        "wasi:sockets/ip-name-lookup",
        "wasi:sockets/network",
        "wasi:sockets/tcp",
        "wasi:sockets/tcp-create-socket",
        "wasi:sockets/udp",
        "wasi:sockets/udp-create-socket",
    }
)
_WASI_VERSION = re.compile(r"^0\.2\.\d+$")

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


def is_wasi(name: str) -> bool:
    return name.startswith("wasi:")


def wasi_allowed(name: str) -> bool:
    """Whether the import ``name`` (``wasi:pkg/iface@version``) is on ``WASI_ALLOWED``."""
    interface, _, version = name.partition("@")
    return interface in WASI_ALLOWED and bool(_WASI_VERSION.match(version))


def imports_wasi(engine: wasmtime.Engine, component: Component) -> bool:
    """Whether ``component`` imports any ``wasi:*`` interface (then it needs ``_wasi``)."""
    return any(is_wasi(name) for name in component.type.imports(engine))


def check_world(engine: wasmtime.Engine, component: Component) -> None:
    """Refuses imports outside the world (and ``WASI_ALLOWED``) and a missing ``run`` export."""
    ctype = component.type
    outside = sorted(
        name
        for name in ctype.imports(engine)
        if name not in WORLD_IMPORTS and not wasi_allowed(name)
    )
    if outside:
        raise ImportOutsideWorld(outside)
    if "run" not in ctype.exports(engine):
        raise ModuleError("component does not export `run` (world ionflux:transform/transform)")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
