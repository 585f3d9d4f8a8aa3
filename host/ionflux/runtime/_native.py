"""The native call path: components run by the wasmtime crate in a PyO3 extension.

``_ionflux_native`` (Rust, ``native/`` at the repository root, built by
``scripts/build_native.sh`` from ``scripts/bootstrap.sh``) makes a fresh Store
per call, instantiates from an ``InstancePre`` made once per module (pooling
allocator), calls ``run`` and returns the output, with the GIL released from
the first guest instruction to the last. The sandbox's promises are kept
there: fuel, the epoch deadline (its own ticker thread, ticking only while a
call is in flight), memory/table/instance limits, the stack limit, the output
size checked before the output is copied, typed failures.

The imports are not decided there: each one takes the GIL back and calls the
same Python function the wasmtime-py path registers (``_imports.IMPORTS``),
which resolves the concrete scope, asks the IONWALL gate (which audits the
decision) and only then acts.

It runs components whose imports are all the world's; anything else (a core
module, a component importing ``wasi:*``) goes to the wasmtime-py path
(``_sandbox.Runtime`` decides per module). Only the runtime imports this
module (tests/test_layers.py).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wasmtime.component import Record, Variant

from .._errors import ModuleError
from . import _cancel
from ._cache import CompileCache
from ._imports import IMPORTS
from ._world import WORLD_IMPORTS

if TYPE_CHECKING:
    from ._ionflux_native import NativeComponent, NativeEngine

log = logging.getLogger(__name__)

try:
    from . import _ionflux_native as ext
except ImportError as exc:  # not built: the wasmtime-py path runs everything
    ext = None  # type: ignore[assignment]
    _MISSING = str(exc)
else:
    _MISSING = ""


def available() -> bool:
    return ext is not None


def missing_reason() -> str:
    return _MISSING or "built"


def make_engine(
    max_wasm_stack_bytes: int, *, sandboxes: int, max_memory_bytes: int
) -> NativeEngine:
    assert ext is not None
    imports = {
        f"{interface}.{name}": func
        for interface, funcs in IMPORTS.items()
        for name, func in funcs.items()
    }
    _cancel.mirror_to(ext.set_cancelled)
    return ext.NativeEngine(
        max_wasm_stack_bytes=max_wasm_stack_bytes,
        sandboxes=sandboxes,
        max_memory_bytes=max_memory_bytes,
        imports=imports,
        variant=Variant,
        record=Record,
    )


def fingerprint(max_wasm_stack_bytes: int, max_memory_bytes: int) -> str:
    """Identifies compiled code: the wasmtime crate's version and the engine's settings."""
    assert ext is not None
    text = (
        f"wasmtime-native={ext.WASMTIME_VERSION};fuel;epoch;stack={max_wasm_stack_bytes};"
        f"pool-memory={max_memory_bytes}"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def runs_natively(data: bytes) -> bool:
    """Whether ``data`` is a component importing nothing outside the world."""
    if ext is None or len(data) < 8 or data[:4] != b"\x00asm" or data[4:8] == b"\x01\x00\x00\x00":
        return False
    try:
        imports = ext.component_imports(data)
    except ValueError:
        return False  # the wasmtime-py path names what is wrong with it
    return all(name in WORLD_IMPORTS for name in imports)


def compile_checked(engine: NativeEngine, data: bytes) -> NativeComponent:
    """Compiles, links against the world and checks ``run`` by instantiating
    once (a start function runs, bounded like any call): ``ModuleError``."""
    try:
        component = engine.compile(data)
        engine.check(component)
    except ValueError as exc:
        raise ModuleError(str(exc)) from None
    return component


class NativeCompileCache(CompileCache):
    """``CompileCache`` for the native engine: same folder layout (its own
    fingerprint), artifacts loaded by the native engine."""

    def __init__(self, engine: NativeEngine, directory: Path | None, fingerprint: str) -> None:
        super().__init__(engine, directory, fingerprint)  # type: ignore[arg-type]
        self._native = engine

    def _load(self, cid: str) -> Any:
        if self._dir is None:
            return None
        path = self._dir / f"{cid}.cwasm"
        if not path.exists():
            return None
        try:
            return self._native.deserialize_file(str(path))
        except (ValueError, OSError):
            path.unlink(missing_ok=True)  # stale or damaged: recompile
            return None

    def has_file(self, cid: str) -> bool:
        return self._dir is not None and (self._dir / f"{cid}.cwasm").exists()
