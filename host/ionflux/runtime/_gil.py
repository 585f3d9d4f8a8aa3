"""Short wasmtime calls that keep the GIL.

ctypes releases the GIL around every foreign call of a ``CDLL`` and takes it
back afterwards. A sandbox call makes about a dozen of them (make a store, set
its fuel, deadline and limits, look up ``run``, lower and free values, drop
the store), each a few hundred nanoseconds of native work. On a busy host
every one of those hand-backs is a chance to lose the GIL to the event loop
and wait for it again (up to the 5 ms switch interval, or a thread wake-up
on the other CPU): for a trivial transform, waiting for the GIL cost more than
the call.

This binds those short functions a second time through ``ctypes.PyDLL``,
which keeps the GIL, and puts them in wasmtime-py's bindings in place of the
``CDLL`` ones. Only functions that never run guest code and never block are
listed: instantiating a component (it may run a start function) and calling
``run`` still release the GIL, so the epoch ticker (a Python thread) can
always stop a guest, and two guests run on two CPUs. wasmtime-py's bindings
are private; the version is pinned and tests/test_runtime_sandbox.py checks
that every name below is still bound.
"""

from __future__ import annotations

import ctypes
from typing import Any

from wasmtime import _bindings
from wasmtime import _ffi as ffi

# Each is a getter, a setter, an allocation or a free: no guest code, no waits.
SHORT_CALLS = (
    "wasmtime_store_new",
    "wasmtime_store_context",
    "wasmtime_store_limiter",
    "wasmtime_store_delete",
    "wasmtime_context_set_fuel",
    "wasmtime_context_get_fuel",
    "wasmtime_context_set_epoch_deadline",
    "wasmtime_component_instance_get_func",
    "wasmtime_component_val_delete",
    "wasm_byte_vec_new",
    "wasm_byte_vec_delete",
)

_installed: list[str] = []


def keep_gil_for_short_calls() -> list[str]:
    """Rebinds ``SHORT_CALLS`` (once per process); returns the names rebound."""
    if _installed:
        return _installed
    library = ctypes.PyDLL(str(ffi.filename))
    for name in SHORT_CALLS:
        slow: Any = getattr(_bindings, "_" + name)
        fast: Any = getattr(library, name)
        fast.restype, fast.argtypes = slow.restype, slow.argtypes
        setattr(_bindings, "_" + name, fast)
        _installed.append(name)
    return _installed
