"""Stopping a guest call in flight at its next epoch tick, when its run is cancelled.

A call made for a run (its ``CallContext`` names a ``run_id``) gets an epoch
deadline of one tick and a deadline callback (wasmtime's C API; wasmtime-py
has no wrapper) that, at every tick, either traps the call (its run was
cancelled: ``CANCELLED``; or its own ``timeout_ms`` ran out: ``DEADLINE``) or
gives it one more tick. A call outside a run keeps the plain deadline. The
callback is one ctypes function for every store; ``data`` is the key of the
call's ``_Watch``. It never raises into native code: on any error it gives one
more tick and the call's own deadline still counts down.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import wasmtime
from wasmtime import _bindings

CANCELLED = "ionflux: the call's run was cancelled"
DEADLINE = "ionflux: the call's deadline ran out"

_lock = threading.Lock()
_cancelled: set[str] = set()
_keys = itertools.count(1)


@dataclass
class _Watch:
    run_id: str
    ticks_left: int


_watched: dict[int, _Watch] = {}

_CALLBACK_TYPE = _bindings._wasmtime_store_epoch_deadline_callback.argtypes[1]
_FINALIZER_TYPE = _bindings._wasmtime_store_epoch_deadline_callback.argtypes[3]
_CONTINUE = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE


def _error(message: str) -> int:
    err = _bindings.wasmtime_error_new(message.encode("utf-8"))
    return int(ctypes.cast(err, ctypes.c_void_p).value or 0)


def _on_tick(_context: Any, data: int | None, delta: Any, kind: Any) -> int:
    try:
        watch = _watched.get(data or 0)
        if watch is not None:
            if watch.run_id in _cancelled:
                return _error(CANCELLED)
            watch.ticks_left -= 1
            if watch.ticks_left <= 0:
                return _error(DEADLINE)
    except Exception:  # never into native code: one more tick
        pass
    delta[0] = 1
    kind[0] = _CONTINUE
    return 0


_CALLBACK = _CALLBACK_TYPE(_on_tick)
_NO_FINALIZER = _FINALIZER_TYPE()


def watch(store: wasmtime.Store, run_id: str, ticks: int) -> int:
    """Watches one call's store for ``ticks`` ticks (its deadline); returns its key."""
    key = next(_keys)
    _watched[key] = _Watch(run_id, ticks)
    _bindings.wasmtime_store_epoch_deadline_callback(store.ptr(), _CALLBACK, key, _NO_FINALIZER)
    store.set_epoch_deadline(1)
    return key


def track(run_id: str) -> int:
    """Counts a call of ``run_id`` in flight that another engine watches (the
    native one, which checks ``_mirror``'s copy of the cancelled runs at each
    tick); ``unwatch`` it when it ends. Returns its key."""
    key = next(_keys)
    _watched[key] = _Watch(run_id, 0)
    return key


# Called with (run_id, cancelled) whenever a run enters or leaves `_cancelled`:
# the native engine keeps its own copy, read at every tick without the GIL.
_mirror: list[Callable[[str, bool], None]] = []


def mirror_to(update: Callable[[str, bool], None]) -> None:
    """Keeps ``update`` told of every run entering or leaving the cancelled set."""
    with _lock:
        if update not in _mirror:
            _mirror.append(update)
            for run_id in _cancelled:
                update(run_id, True)


def _tell(run_id: str, cancelled: bool) -> None:
    for update in _mirror:
        update(run_id, cancelled)


def unwatch(key: int) -> None:
    with _lock:
        watch = _watched.pop(key, None)
        if watch is not None and watch.run_id in _cancelled:
            if not any(w.run_id == watch.run_id for w in _watched.values()):
                _cancelled.discard(watch.run_id)  # its last call in flight stopped
                _tell(watch.run_id, False)


def cancel_run(run_id: str) -> None:
    """Stops every call of ``run_id`` in flight at its next tick."""
    with _lock:
        _cancelled.add(run_id)
        _tell(run_id, True)


def cancel_all() -> int:
    """Stops every run's calls in flight at their next tick (a host stopping at
    once: its worker threads must not spin on to their deadlines before the
    process can exit). Returns how many runs it stopped."""
    with _lock:
        runs = {w.run_id for w in _watched.values()} - _cancelled
        for run_id in runs:
            _cancelled.add(run_id)
            _tell(run_id, True)
    return len(runs)


def forget_run(run_id: str) -> None:
    """Calls of ``run_id`` run again (a cancelled run retried)."""
    with _lock:
        _cancelled.discard(run_id)
        _tell(run_id, False)
