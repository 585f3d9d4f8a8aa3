"""One call of one transform in a fresh sandbox.

Each call gets a new Store (its own memory, fuel and deadline) and a new
instance; nothing survives from one call to the next. Limits are set before
the guest runs a single instruction, and every way a guest can fail becomes
a typed ``GuestError`` while the host goes on.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

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
from . import _cancel, _wasi, _wasmtime_fixes
from ._cache import CompileCache
from ._call import call_run, check_run_signature
from ._engine import EpochTicker, engine_fingerprint, make_engine, ticks_for
from ._gil import keep_gil_for_short_calls
from ._guest_errors import STACK_OVERFLOW, deadline_exceeded, fuel_exhausted, memory_exceeded
from ._imports import ImportEnv, LogLine, set_env
from ._world import check_world, compile_component, imports_wasi


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
    component: Component
    run: ExportIndex
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
    def __init__(
        self,
        *,
        max_wasm_stack_bytes: int,
        cache_dir: Path | None,
        sandboxes: int = 64,
        max_memory_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        _wasmtime_fixes.install()
        keep_gil_for_short_calls()
        self.engine = make_engine(
            max_wasm_stack_bytes, sandboxes=sandboxes, max_memory_bytes=max_memory_bytes
        )
        # Calls past the pool's size wait for a slot instead of failing.
        self._slots = threading.BoundedSemaphore(sandboxes)
        self.fingerprint = engine_fingerprint(max_wasm_stack_bytes)
        self._ticker = EpochTicker(self.engine)
        # The world's imports and WASI 0.2 (denied by default, runtime/_wasi.py).
        self.linker = _wasi.wasi_linker(self.engine)
        self.cache = CompileCache(self.engine, cache_dir, self.fingerprint)

    def close(self) -> None:
        self._ticker.stop()

    def compile_checked(self, data: bytes) -> Component:
        """Compiles and checks against the world; for publish and first load."""
        component = compile_component(self.engine, data)
        check_world(self.engine, component)
        # `run`'s signature is only visible on an instance: make one, unused.
        store = wasmtime.Store(self.engine)
        if imports_wasi(self.engine, component):
            _wasi.attach(store)
        store.set_fuel(10_000_000)  # a start function may run; bounded like any call
        store.set_epoch_deadline(ticks_for(1_000))
        self._ticker.enter()
        try:
            instance = self.linker.instantiate(store, component)
        except wasmtime.WasmtimeError as exc:
            store.close()
            raise ModuleError(
                f"component cannot be instantiated: {_trap_reason(str(exc))}"
            ) from exc
        finally:
            self._ticker.leave()
        try:
            run = instance.get_func(store, "run")
            if run is None:
                raise ModuleError("component does not export a function `run`")
            check_run_signature(run, store)
        finally:
            store.close()
        return component

    def load(self, cid: str, fetch_bytes: Any) -> Loaded:
        """The compiled component for ``cid``; ``fetch_bytes()`` must return
        bytes already verified against ``cid`` (the store re-hashes on read)."""
        component = self.cache.get(cid, lambda: self.compile_checked(fetch_bytes()))
        index = component.get_export_index("run")
        if index is None:
            raise GuestTrap("component does not export `run`")
        return Loaded(cid, component, index, imports_wasi(self.engine, component))

    def call(
        self, loaded: Loaded, input_text: str, limits: CallLimits, env: ImportEnv
    ) -> CallResult:
        if len(input_text) > limits.max_input_bytes or (
            len(input_text.encode("utf-8")) > limits.max_input_bytes
        ):
            raise InvalidInput(f"input is over the {limits.max_input_bytes}-byte limit")
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
        self._slots.acquire()
        self._ticker.enter()
        failure: GuestError | None = None
        try:
            instance = self.linker.instantiate(store, loaded.component)
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
            self._ticker.leave()
            self._slots.release()
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
    text = str(exc)
    reason = _trap_reason(text)
    if "all fuel consumed" in text:
        return fuel_exhausted(limits)
    if "wasm trap: interrupt" in text or _cancel.DEADLINE in text:
        return deadline_exceeded(limits)
    if _cancel.CANCELLED in text:
        return CallCancelled(
            "the call was stopped at its next epoch tick: its run was cancelled by an operator"
        )
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
