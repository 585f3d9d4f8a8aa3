"""WASI 0.2 for the components that import it, denied by default.

A component built by componentize-py imports 25 WASI 0.2 interfaces whether
its code uses them or not (the CPython it embeds is a WASI program). Those
components are linked against wasmtime's WASI implementation with a context
that grants nothing:

- no environment variables, no arguments, no preopened directories (every
  path a guest opens is "not found"), an empty stdin;
- no network: the context never calls ``inherit_network``, so wasmtime's
  address check refuses every bind and connect and name lookup is off; the
  socket constructors are refused here too (``WasiRefused``), so a guest
  cannot hold host file descriptors by opening sockets it can never use;
- stdout and stderr become lines of the ``log`` import (``info`` and ``warn``)
  at the end of the call, under its scope (``emit_log:<level>``) and the
  call's log budget, so a ``print`` is audited and bounded like any log line;
- clocks and random as wasmtime provides them (wall clock, monotonic clock,
  the host's CSPRNG), except that a guest may not wait on a timer: wasmtime
  sleeps in native code for a ``subscribe-duration``/``subscribe-instant``
  pollable, where the epoch deadline cannot stop it (``time.sleep(3600)``
  held a host thread for an hour). Those two trap with ``WasiRefused``.

Only the interfaces in ``_world.WASI_ALLOWED`` (any 0.2.x version) may be imported;
anything else under ``wasi:`` (``wasi:http``, ``wasi:keyvalue``, a 0.3
interface) is refused at publish like any import outside the world.

Components that import no ``wasi:*`` interface (our Rust guests, JS built
with ``--stub-wasi``) never see any of this: they keep the plain linker and
pay nothing for it.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
import time
import weakref
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime.component import Linker

from .._errors import WasiRefused
from . import _imports

#: The version under which the refusing functions are defined; wasmtime finds
#: them for an import of any 0.2.x version (semver-compatible lookup).
_SHADOW_VERSION = "0.2.9"
STDOUT_LEVEL = "info"
STDERR_LEVEL = "warn"


#: Marks the trap of a refused WASI call in wasmtime's error text; the
#: sandbox turns it into ``WasiRefused`` (``refused``).
REFUSED = "ionflux: WASI call refused: "


def _refusal(what: str) -> Any:
    # A WasmtimeError becomes the trap itself; any other exception would pass
    # through wasmtime-py's one global slot, which another thread's trap may take.
    def refuse(_store: object, *_args: Any) -> Any:
        raise wasmtime.WasmtimeError(REFUSED + what)

    return refuse


def refused(text: str) -> WasiRefused:
    """The ``WasiRefused`` for a trap whose text holds ``REFUSED``."""
    what = text[text.index(REFUSED) + len(REFUSED) :].splitlines()[0].strip()
    return WasiRefused(f"trapped: {what}")


_TIMER = (
    "the guest waited on a timer (a sleep): the host does not let a transform sleep, "
    "a wait in native code is beyond the call's deadline"
)
_SOCKET = "the guest opened a socket: transforms have no network (use the http import)"


def wasi_linker(engine: wasmtime.Engine) -> Linker:
    """A linker with the world's imports, wasmtime's WASI 0.2 and our refusals."""
    linker = Linker(engine)
    linker.add_wasip2()
    _imports.define_imports(linker)
    # Defining an instance again replaces it whole: each one below is given
    # every function it has (its resource types come from other interfaces).
    linker.allow_shadowing = True
    v = _SHADOW_VERSION
    with linker.root() as root:
        with root.add_instance(f"wasi:clocks/monotonic-clock@{v}") as clock:
            clock.add_func("now", lambda _store: time.monotonic_ns())
            clock.add_func("resolution", lambda _store: 1)
            clock.add_func("subscribe-instant", _refusal(_TIMER))
            clock.add_func("subscribe-duration", _refusal(_TIMER))
        with root.add_instance(f"wasi:sockets/tcp-create-socket@{v}") as tcp:
            tcp.add_func("create-tcp-socket", _refusal(_SOCKET))
        with root.add_instance(f"wasi:sockets/udp-create-socket@{v}") as udp:
            udp.add_func("create-udp-socket", _refusal(_SOCKET))
    linker.allow_shadowing = False
    return linker


class GuestOutput:
    """A call's stdout and stderr, sent as lines to the ``log`` import when the call ends.

    wasmtime writes a stream from a tokio thread of its own, where the call's
    ``ImportEnv`` is not current (and which may run while the guest goes on),
    so the writes only collect bytes here, under a lock, up to ``cap`` bytes a
    stream (the call's log budget and a line: enough to see the budget
    crossed). ``flush``, on the calling thread at the end of the call, sends
    them line by line through the ``log`` import: its scope (``emit_log:info``
    for stdout, ``emit_log:warn`` for stderr), its audit entry, its budget. A
    refused line is dropped; the guest's write still succeeds, as a write to a
    closed log would. Bytes written after ``flush`` (a write wasmtime had not
    yet delivered) are dropped.
    """

    __slots__ = ("__weakref__", "_cap", "_id", "_lock", "_pending")

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._lock = threading.Lock()
        self._pending: dict[str, bytearray] = {STDOUT_LEVEL: bytearray(), STDERR_LEVEL: bytearray()}
        self._id = _register(self)

    def write(self, level: str, data: bytes) -> None:
        pending = self._pending[level]
        with self._lock:
            room = self._cap - len(pending)
            if room > 0:
                pending.extend(data[:room])

    def flush(self) -> None:
        _OUTPUTS.pop(self._id, None)
        with self._lock:
            chunks = [(level, bytes(p)) for level, p in self._pending.items()]
            for p in self._pending.values():
                p.clear()
        for level, data in chunks:
            for line in data.splitlines():
                text = line.decode("utf-8", "replace")
                while text:
                    _imports.log_write(None, level, text[: _imports.MAX_LOG_LINE_BYTES])
                    text = text[_imports.MAX_LOG_LINE_BYTES :]


# The calls' outputs by id. wasmtime calls one C callback for every write, with
# the id and the stream in its data pointer (id * 2 + 1 for stderr), and no
# finalizer: wasmtime-py's own custom streams call back into Python when wasmtime
# drops a stream, which it may do on a tokio thread while the interpreter is
# exiting; the thread is then torn down through Rust frames and the process aborts
# ("panic in a function that cannot unwind", seen once in four short runs).
# Weak: an output no call holds any more (one made to check a module at publish) goes.
_OUTPUTS: weakref.WeakValueDictionary[int, GuestOutput] = weakref.WeakValueDictionary()
_next_id = itertools.count(1)


def _register(output: GuestOutput) -> int:
    key = next(_next_id)
    _OUTPUTS[key] = output
    return key


def _write(data: int | None, buf: Any, size: int) -> int:
    try:
        key = data or 0
        output = _OUTPUTS.get(key >> 1)
        if output is not None and size:
            raw = ctypes.string_at(ctypes.addressof(buf.contents), size)
            output.write(STDERR_LEVEL if key & 1 else STDOUT_LEVEL, raw)
    except Exception:  # nothing may escape into wasmtime's native frames
        pass
    return size


_on_write = ctypes.CFUNCTYPE(
    ctypes.c_ssize_t, ctypes.c_void_p, ctypes.POINTER(ctypes.c_ubyte), ctypes.c_size_t
)(_write)


_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)()  # a NULL function pointer


def wasi_config(output: GuestOutput) -> wasmtime.WasiConfig:
    """A context that grants nothing but the two output streams."""
    config = wasmtime.WasiConfig()
    for stream, setter in (
        (0, ffi.wasi_config_set_stdout_custom),
        (1, ffi.wasi_config_set_stderr_custom),
    ):
        setter(config.ptr(), _on_write, ctypes.c_void_p(output._id * 2 + stream), _NO_FINALIZER)
    return config


def attach(store: wasmtime.Store, max_log_bytes: int = 0) -> GuestOutput:
    """Gives ``store`` its WASI context (for a component that imports ``wasi:*``);
    the caller flushes the returned output at the end of the call, on its thread."""
    output = GuestOutput(max_log_bytes + _imports.MAX_LOG_LINE_BYTES)
    store.set_wasi(wasi_config(output))
    return output
