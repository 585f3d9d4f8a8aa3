"""The shared wasmtime engine and the clock that bounds every call's wall time.

One engine serves every sandbox: compiled code is shared, stores are not.
Fuel bounds instructions; the epoch ticker bounds wall-clock time, because a
guest blocked in a slow host import burns no fuel.
"""

from __future__ import annotations

import hashlib
import threading
import time
from importlib.metadata import version

import wasmtime
from wasmtime import _ffi as ffi

EPOCH_TICK_S = 0.005  # a deadline is honoured to within about one tick


def make_engine(
    max_wasm_stack_bytes: int, *, sandboxes: int, max_memory_bytes: int
) -> wasmtime.Engine:
    """``sandboxes`` is how many calls the runtime lets run at once (it queues
    the rest); the pool has room for twice that, for the instance that checks a
    module at publish time and for slack. ``max_memory_bytes`` is the largest
    memory limit any call may be given."""
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    config.max_wasm_stack = max_wasm_stack_bytes
    config.wasm_component_model = True
    # Deny by default: no threads, no shared memory. Everything else a module
    # could use is an import, and imports are checked at publish time.
    config.wasm_threads = False
    _use_pooling_allocator(config, sandboxes * 2, max_memory_bytes)
    return wasmtime.Engine(config)


def _use_pooling_allocator(config: wasmtime.Config, sandboxes: int, max_memory: int) -> None:
    """Pre-reserves ``sandboxes`` slots of instance, memory, table and stack.

    A fresh sandbox per call otherwise maps and unmaps its linear memory every
    time; reusing warm slots makes instantiation about a quarter cheaper and
    spares the TLB shootdowns that slowed everything running right after.
    wasmtime-py exposes this only through its C bindings.
    """
    pool = ffi.wasmtime_pooling_allocation_config_new()
    try:
        ffi.wasmtime_pooling_allocation_config_total_component_instances_set(pool, sandboxes)
        ffi.wasmtime_pooling_allocation_config_total_core_instances_set(pool, sandboxes * 4)
        ffi.wasmtime_pooling_allocation_config_total_memories_set(pool, sandboxes * 2)
        ffi.wasmtime_pooling_allocation_config_total_tables_set(pool, sandboxes * 4)
        ffi.wasmtime_pooling_allocation_config_total_stacks_set(pool, sandboxes)
        ffi.wasmtime_pooling_allocation_config_max_memory_size_set(pool, max_memory)
        ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)
    finally:
        ffi.wasmtime_pooling_allocation_config_delete(pool)


def engine_fingerprint(max_wasm_stack_bytes: int) -> str:
    """Identifies compiled code: serialized artifacts are only valid for the
    same wasmtime build and the same engine settings."""
    text = f"wasmtime={version('wasmtime')};fuel;epoch;stack={max_wasm_stack_bytes}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class EpochTicker:
    """Advances the engine's epoch every ``EPOCH_TICK_S`` while any call is in
    flight (between ``enter`` and ``leave``), and sleeps while none is: an idle
    host does not wake up 200 times a second. A store's deadline counts ticks
    from the moment it is set, so ticks missed while idle shorten no call."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._engine = engine
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def enter(self) -> None:
        with self._cond:
            self._active += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ionflux-epoch", daemon=True)
                self._thread.start()
            elif self._active == 1:
                self._cond.notify()

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            if self._active == 0 and self._stopped.is_set():
                self._cond.notify()

    def _run(self) -> None:
        # Stopped, it still ticks while a call is in flight: a call's deadline is
        # the only thing that ends a spinning guest, and a host stopping at once
        # (or closing its runtime) must not leave one running with no clock.
        while True:
            with self._cond:
                while self._active == 0:
                    if self._stopped.is_set():
                        return
                    self._cond.wait()
            time.sleep(EPOCH_TICK_S)
            self._engine.increment_epoch()

    def ticking(self) -> bool:
        """Whether a call is in flight (so the epoch advances); for tests."""
        with self._cond:
            return self._active > 0

    def stop(self) -> None:
        """Stops ticking once no call is in flight (calls still end by their deadline)."""
        self._stopped.set()
        with self._cond:
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=1)


def ticks_for(timeout_ms: int) -> int:
    # +1: the current tick may be about to end.
    return max(1, -(-timeout_ms // int(EPOCH_TICK_S * 1000))) + 1
