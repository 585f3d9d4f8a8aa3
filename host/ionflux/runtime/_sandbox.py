"""One call of one transform in a fresh sandbox, on the native engine or wasmtime-py.

Each call gets a new Store (its own memory, fuel and deadline) and a new
instance; nothing survives from one call to the next. Limits are set before
the guest runs a single instruction, and every way a guest can fail becomes
a typed ``GuestError`` while the host goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import wasmtime
from wasmtime.component import Component, ExportIndex, Variant

from .._errors import (
    CallCancelled,
    GuestError,
    GuestTrap,
    InvalidInput,
    InvalidOutput,
    ModuleError,
    StackOverflow,
    TransformFailed,
)
from . import _cancel, _native, _wasi, _wasmtime_fixes
from ._cache import CompileCache
from ._call import call_run, check_run_signature
from ._engine import EpochTicker, engine_fingerprint, make_engine, ticks_for
from ._gil import keep_gil_for_short_calls
from ._guest_errors import (
    STACK_OVERFLOW,
    deadline_exceeded,
    fuel_exhausted,
    memory_exceeded,
    output_too_large,
)
from ._imports import ImportEnv, LogLine, set_env
from ._world import check_world, compile_component, imports_wasi

if TYPE_CHECKING:
    from ._ionflux_native import NativeEngine

_log = logging.getLogger(__name__)
# The kinds of the native engine's answer (native/src/lib.rs).
_NATIVE_OK, _NATIVE_GUEST_ERROR, _NATIVE_TRAP, _NATIVE_OUTPUT_TOO_LARGE = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class CallLimits:
    fuel: int
    timeout_ms: int
    memory_bytes: int
    table_elements: int
    instances: int
    max_input_bytes: int
    max_output_bytes: int


@dataclass(slots=True)
class Loaded:
    """A compiled component ready to instantiate."""

    cid: str
    component: Any  # a wasmtime-py Component, or a NativeComponent
    run: ExportIndex | None  # None: runs on the native engine
    wasi: bool = False  # imports wasi:* (runtime/_wasi.py gives each call a WASI context)


@dataclass
class CallResult:
    output: str
    fuel_used: int
    duration_s: float
    logs: list[LogLine] = field(default_factory=list)
    import_calls: int = 0
    import_s: float = 0.0  # of duration_s, the time the imports took (I/O waits)

    @cached_property
    def value(self) -> Any:
        return json.loads(self.output)


# wasmtime only answers -1 to a refused memory.grow; the guest then traps.
# Guests built with our pdk trap in `ionflux_pdk::alloc::out_of_memory` (the
# name section is kept for this), other Rust guests in the std handlers.
_OOM_MARKERS = ("out_of_memory", "alloc_error", "rust_oom", "handle_alloc_error")
_INSTANTIATE_MEMORY = re.compile(r"memory minimum size|exceeds memory limits|resource limit", re.I)
# wasmtime names the memory's size in an out-of-bounds trap.
_MEMORY_FAULT = re.compile(
    r"memory fault at wasm address (0x[0-9a-f]+) in linear memory of size (0x[0-9a-f]+)"
)
_PAGE = 65536
_CAUSE_NUMBER = re.compile(r"^\d+: ")


class Runtime:
    """Runs components, one fresh sandbox per call, on one of two engines.

    ``engine="native"`` (the default, ``runtime.engine`` in the config): a
    component whose imports are all the world's runs on the native extension
    (``_native``, the wasmtime crate behind PyO3); anything else a component
    ABI module can be (a core module, a component importing ``wasi:*``) goes to
    wasmtime-py, made on first need. ``engine="wasmtime"``: wasmtime-py only.
    Both keep the same promises and raise the same typed errors. If the
    extension is not built, everything runs on wasmtime-py (logged once).
    """

    def __init__(
        self,
        *,
        max_wasm_stack_bytes: int,
        cache_dir: Path | None,
        sandboxes: int = 64,
        max_memory_bytes: int = 256 * 1024 * 1024,
        engine: str = "native",
    ) -> None:
        self._settings = (max_wasm_stack_bytes, sandboxes, max_memory_bytes)
        self._cache_dir = cache_dir
        # Calls past the pool's size wait for a slot instead of failing.
        self._slots = threading.BoundedSemaphore(sandboxes)
        self._py: _WasmtimePy | None = None
        self._py_lock = threading.Lock()
        self._kinds: dict[str, bool] = {}  # cid -> runs natively
        self._native: NativeEngine | None = None
        self._native_cache: _native.NativeCompileCache | None = None
        if engine == "native" and not _native.available():
            _log.warning(
                "runtime.engine is native but the extension is not built (%s): "
                "components run on wasmtime-py (run scripts/bootstrap.sh)",
                _native.missing_reason(),
            )
        if engine == "native" and _native.available():
            self._native = _native.make_engine(
                max_wasm_stack_bytes, sandboxes=sandboxes, max_memory_bytes=max_memory_bytes
            )
            self._native_cache = _native.NativeCompileCache(
                self._native,
                cache_dir,
                _native.fingerprint(max_wasm_stack_bytes, max_memory_bytes),
            )
            self._ticker: _Ticker = self._native
        else:
            self._ticker = self._wasmtime_py().ticker
        self.cache = _Caches(self)

    @property
    def engine_name(self) -> str:
        """``native`` or ``wasmtime``: the engine a world-only component runs on."""
        return "native" if self._native is not None else "wasmtime"

    def _wasmtime_py(self) -> _WasmtimePy:
        py = self._py
        if py is None:
            with self._py_lock:
                if self._py is None:
                    stack, sandboxes, memory = self._settings
                    self._py = _WasmtimePy(stack, sandboxes, memory, self._cache_dir)
                py = self._py
        return py

    def close(self) -> None:
        if self._native is not None:
            self._native.stop()
        if self._py is not None:
            self._py.ticker.stop()

    def _runs_natively(self, data: bytes) -> bool:
        return self._native is not None and _native.runs_natively(data)

    def compile_checked(self, data: bytes) -> Any:
        """Compiles and checks against the world; for publish and first load."""
        if self._native is not None and self._runs_natively(data):
            return _native.compile_checked(self._native, data)
        return self._wasmtime_py().compile_checked(data)

    def _native_cid(self, cid: str, fetch_bytes: Any) -> bool:
        """Whether ``cid`` runs natively: remembered, or known from which
        engine's disk cache holds it, or read from its imports."""
        known = self._kinds.get(cid)
        if known is None:
            if self._native_cache is not None and self._native_cache.has_file(cid):
                known = True
            elif self._native is None:
                known = False
            else:
                known = self._runs_natively(fetch_bytes())
            self._kinds[cid] = known
        return known

    def load(self, cid: str, fetch_bytes: Any) -> Loaded:
        """The compiled component for ``cid``; ``fetch_bytes()`` must return
        bytes already verified against ``cid`` (the store re-hashes on read)."""
        fetched: list[bytes] = []

        def data() -> bytes:
            if not fetched:
                fetched.append(fetch_bytes())
            return fetched[0]

        if self._native_cache is not None and self._native_cid(cid, data):
            native = self._native_cache.get(cid, lambda: self.compile_checked(data()))
            return Loaded(cid, native, None)
        return self._wasmtime_py().load(cid, data)

    def call(
        self, loaded: Loaded, input_text: str, limits: CallLimits, env: ImportEnv
    ) -> CallResult:
        if len(input_text) > limits.max_input_bytes or (
            len(input_text.encode("utf-8")) > limits.max_input_bytes
        ):
            raise InvalidInput(f"input is over the {limits.max_input_bytes}-byte limit")
        if loaded.run is None:
            return self._call_native(loaded, input_text, limits, env)
        return self._wasmtime_py().call(loaded, input_text, limits, env, self._slots)

    def _call_native(
        self, loaded: Loaded, input_text: str, limits: CallLimits, env: ImportEnv
    ) -> CallResult:
        engine = self._native
        assert engine is not None
        started = time.perf_counter()
        run_id = env.ctx.run_id
        # A call of a run can be cancelled: watched tick by tick (see _cancel).
        watched = _cancel.track(run_id) if run_id else 0
        set_env(env)
        self._slots.acquire()
        try:
            kind, first, second, fuel_used = engine.call(
                loaded.component,
                input_text,
                fuel=limits.fuel,
                ticks=ticks_for(limits.timeout_ms),
                memory_bytes=limits.memory_bytes,
                table_elements=limits.table_elements,
                instances=limits.instances,
                max_output_bytes=limits.max_output_bytes,
                run_id=run_id,
            )
        finally:
            self._slots.release()
            set_env(None)
            if watched:
                _cancel.unwatch(watched)
        if kind == _NATIVE_OK:
            duration = time.perf_counter() - started
            return CallResult(first, fuel_used, duration, env.logs, env.calls, env.import_s)
        failure: GuestError
        if kind == _NATIVE_GUEST_ERROR:
            failure = TransformFailed(first, second)
        elif kind == _NATIVE_OUTPUT_TOO_LARGE:
            failure = output_too_large(first, limits.max_output_bytes)
        else:
            failure = classify_trap_text(first, limits)
        failure.fuel_used = fuel_used
        raise failure


class _Ticker(Protocol):
    def ticking(self) -> bool: ...
    def stop(self) -> None: ...


class _Caches:
    """The compile caches of both engines behind one face (``Runtime.cache``):
    a component goes to the cache of the engine that compiled it."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _of(self, component: Any) -> CompileCache:
        native = self._rt._native_cache
        if native is not None and not isinstance(component, Component):
            return native
        return self._rt._wasmtime_py().cache

    def put(self, cid: str, component: Any) -> None:
        self._rt._kinds[cid] = not isinstance(component, Component)
        self._of(component).put(cid, component)

    def get(self, cid: str, compile_: Any) -> Any:
        native = self._rt._native_cache
        if native is not None and (native.in_memory(cid) or native.has_file(cid)):
            return native.get(cid, compile_)
        py = self._rt._py
        if py is not None and py.cache.in_memory(cid):
            return py.cache.get(cid, compile_)
        component = compile_()
        self.put(cid, component)
        return component

    def in_memory(self, cid: str) -> bool:
        native, py = self._rt._native_cache, self._rt._py
        return (native is not None and native.in_memory(cid)) or (
            py is not None and py.cache.in_memory(cid)
        )

    def forget(self, cid: str, *, disk: bool = False) -> None:
        self._rt._kinds.pop(cid, None)
        if self._rt._native_cache is not None:
            self._rt._native_cache.forget(cid, disk=disk)
        if self._rt._py is not None:
            self._rt._py.cache.forget(cid, disk=disk)


class _WasmtimePy:
    """The wasmtime-py engine: components the native path does not run
    (``wasi:*`` imports), or all of them with ``runtime.engine: wasmtime``."""

    def __init__(
        self,
        max_wasm_stack_bytes: int,
        sandboxes: int,
        max_memory_bytes: int,
        cache_dir: Path | None,
    ) -> None:
        _wasmtime_fixes.install()
        keep_gil_for_short_calls()
        self.engine = make_engine(
            max_wasm_stack_bytes, sandboxes=sandboxes, max_memory_bytes=max_memory_bytes
        )
        self.fingerprint = engine_fingerprint(max_wasm_stack_bytes)
        self.ticker = EpochTicker(self.engine)
        # The world's imports and WASI 0.2 (denied by default, runtime/_wasi.py).
        self.linker = _wasi.wasi_linker(self.engine)
        self.cache = CompileCache(self.engine, cache_dir, self.fingerprint)

    def compile_checked(self, data: bytes) -> Component:
        component = compile_component(self.engine, data)
        check_world(self.engine, component)
        # `run`'s signature is only visible on an instance: make one, unused.
        store = wasmtime.Store(self.engine)
        if imports_wasi(self.engine, component):
            _wasi.attach(store)
        store.set_fuel(10_000_000)  # a start function may run; bounded like any call
        store.set_epoch_deadline(ticks_for(1_000))
        self.ticker.enter()
        try:
            instance = self.linker.instantiate(store, component)
        except wasmtime.WasmtimeError as exc:
            store.close()
            raise ModuleError(
                f"component cannot be instantiated: {_trap_reason(str(exc))}"
            ) from exc
        finally:
            self.ticker.leave()
        try:
            run = instance.get_func(store, "run")
            if run is None:
                raise ModuleError("component does not export a function `run`")
            check_run_signature(run, store)
        finally:
            store.close()
        return component

    def load(self, cid: str, fetch_bytes: Any) -> Loaded:
        component = self.cache.get(cid, lambda: self.compile_checked(fetch_bytes()))
        index = component.get_export_index("run")
        if index is None:
            raise GuestTrap("component does not export `run`")
        return Loaded(cid, component, index, imports_wasi(self.engine, component))

    def call(
        self,
        loaded: Loaded,
        input_text: str,
        limits: CallLimits,
        env: ImportEnv,
        slots: threading.BoundedSemaphore,
    ) -> CallResult:
        store = wasmtime.Store(self.engine)
        output = _wasi.attach(store, env.budget.max_log_bytes) if loaded.wasi else None
        store.set_fuel(limits.fuel)
        store.set_epoch_deadline(ticks_for(limits.timeout_ms))
        store.set_limits(
            memory_size=limits.memory_bytes,
            table_elements=limits.table_elements,
            instances=limits.instances,
        )
        started = time.perf_counter()
        # A call of a run can be cancelled: watched tick by tick (see _cancel).
        run_id = env.ctx.run_id
        watched = _cancel.watch(store, run_id, ticks_for(limits.timeout_ms)) if run_id else 0
        set_env(env)
        slots.acquire()
        self.ticker.enter()
        failure: GuestError | None = None
        try:
            instance = self.linker.instantiate(store, loaded.component)
            assert loaded.run is not None
            run = instance.get_func(store, loaded.run)
            assert run is not None
            result = call_run(run, store, input_text, limits.max_output_bytes)
            fuel_used = limits.fuel - store.get_fuel()
        except wasmtime.WasmtimeError as exc:
            # Raised below, outside this block: a raise here would keep the
            # native error alive through __context__ until the GC finds it.
            failure = classify_trap(exc, limits)
            with contextlib.suppress(wasmtime.WasmtimeError):
                failure.fuel_used = limits.fuel - store.get_fuel()
        finally:
            if watched:
                _cancel.unwatch(watched)
            if output is not None:
                output.flush()  # the last line of stdout/stderr, with the call's env
            store.close()  # give the pool slot back before the next caller takes it
            self.ticker.leave()
            slots.release()
            set_env(None)
        if failure is not None:
            raise failure
        duration = time.perf_counter() - started
        if isinstance(result, Variant):
            failed = TransformFailed(result.tag, str(result.payload))
            failed.fuel_used = fuel_used
            raise failed
        if not isinstance(result, str):
            invalid = InvalidOutput(f"run returned {type(result).__name__}, expected a string")
            invalid.fuel_used = fuel_used
            raise invalid
        # Its UTF-8 size was checked against max_output_bytes before it was copied (call_run).
        return CallResult(result, fuel_used, duration, env.logs, env.calls, env.import_s)


def classify_trap(exc: wasmtime.WasmtimeError, limits: CallLimits) -> GuestError:
    return classify_trap_text(str(exc), limits)


def classify_trap_text(text: str, limits: CallLimits) -> GuestError:
    """The typed error for a trap, from wasmtime's rendering of it (the same
    text from wasmtime-py and from the native extension)."""
    reason = _trap_reason(text)
    if "all fuel consumed" in text:
        return fuel_exhausted(limits)
    if "wasm trap: interrupt" in text or _cancel.DEADLINE in text:
        return deadline_exceeded(limits)
    if _cancel.CANCELLED in text:
        return CallCancelled(
            "the call was stopped at its next epoch tick: its run was cancelled by an operator"
        )
    if _wasi.REFUSED in text:  # a timer or a socket (runtime/_wasi.py)
        return _wasi.refused(text)
    if "call stack exhausted" in text:
        return StackOverflow(STACK_OVERFLOW)
    if any(marker in text for marker in _OOM_MARKERS) or _INSTANTIATE_MEMORY.search(text):
        return memory_exceeded(limits, reason)
    fault = _MEMORY_FAULT.search(text)
    if fault is not None and int(fault[2], 16) + _PAGE > limits.memory_bytes:
        # Its memory had grown to the limit and it reached past the end: the
        # memory.grow that would have made room was refused.
        return memory_exceeded(
            limits,
            f"its memory was at {int(fault[2], 16)} bytes, a memory.grow was refused, "
            f"then it accessed address {fault[1]}: {reason}",
        )
    return GuestTrap(f"trapped: {reason}")


def _trap_reason(text: str) -> str:
    for line in text.splitlines():
        line = _CAUSE_NUMBER.sub("", line.strip())  # "1: wasm trap: …" under "Caused by:"
        if line.startswith("wasm trap:"):
            return line.removeprefix("wasm trap:").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "unknown trap"
