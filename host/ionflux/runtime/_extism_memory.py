"""Reading and writing an Extism plugin's kernel memory without trusting it.

A host function finds its argument through the Extism kernel: a block offset,
whose length the kernel reads from the block's header. That header lives in
the kernel's memory, and the kernel's ``store_u8``/``store_u64`` let a plugin
write anywhere in that memory, headers included. So the length a host
function is told can be forged (up to 4 GiB), and the Python SDK's
``input_string`` copies that many bytes from the memory's base: past the end
of the memory that is a fault in host code (the host dies) or, past the
reservation, host memory handed to the guest.

Here every copy is bounded twice: by the call's memory limit (Extism's
limiter holds each memory of the plugin to it, and wasmtime reserves 4 GiB
for a 32-bit memory, so nothing below that bound is another mapping's), and
by the pages actually mapped, through ``process_vm_readv``/``process_vm_writev``
on this process: the kernel stops at the first inaccessible page and says so,
where a plain ``memcpy`` would fault.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

from extism_sys import ffi as _ffi
from extism_sys import lib as _lib


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
_VM_ARGS: list[Any] = [
    ctypes.c_int,
    ctypes.POINTER(_IoVec),
    ctypes.c_ulong,
    ctypes.POINTER(_IoVec),
    ctypes.c_ulong,
    ctypes.c_ulong,
]
_readv = _libc.process_vm_readv
_readv.restype = ctypes.c_ssize_t
_readv.argtypes = _VM_ARGS
_writev = _libc.process_vm_writev
_writev.restype = ctypes.c_ssize_t
_writev.argtypes = _VM_ARGS


# This process's id, for the two calls above; a forked child must not read
# its parent's memory at the same addresses.
_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)

# Up to this size a forged length costs a buffer no bigger than a page or so:
# copied at once; past it, the last byte is checked first.
_PROBE_ABOVE = 64 * 1024


class BadBlock(ValueError):
    """The plugin named memory that is not a block it can hand over."""


def _base(current: Any) -> int:
    base = _lib.extism_current_plugin_memory(current)
    if base == _ffi.NULL:
        raise BadBlock("the plugin has no Extism memory")
    return int(_ffi.cast("uintptr_t", base))


def read_block(current: Any, offset: int, limit: int) -> bytes:
    """The bytes of the kernel block at ``offset``: at most ``limit`` of them,
    all inside memory that is mapped, or ``BadBlock``."""
    if offset <= 0 or offset >= limit:
        raise BadBlock(f"{offset} is not a block of the plugin's Extism memory")
    length = int(_lib.extism_current_plugin_memory_length(current, offset))
    if length <= 0:
        raise BadBlock(f"{offset} is not a block of the plugin's Extism memory")
    if offset + length > limit:
        raise BadBlock(
            f"the block at {offset} says it holds {length} bytes, past the plugin's "
            f"{limit}-byte memory limit (a forged block header)"
        )
    address = _base(current) + offset
    if length > _PROBE_ABOVE:
        # The last byte first: a forged length is refused before a buffer of
        # that size is made. (Mapped memory is a prefix of the reservation.)
        _copy_in(address + length - 1, 1, offset, length)
    return _copy_in(address, length, offset, length)


def _copy_in(address: int, size: int, offset: int, length: int) -> bytes:
    buffer = ctypes.create_string_buffer(size)
    local = _IoVec(ctypes.addressof(buffer), size)
    remote = _IoVec(address, size)
    done = _readv(_pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if done != size:
        _raise_unless_unmapped(done)
        raise BadBlock(
            f"the block at {offset} says it holds {length} bytes, past the end of the "
            "plugin's Extism memory (a forged block header)"
        )
    return buffer.raw


def write_block(current: Any, data: bytes, limit: int) -> int:
    """A new kernel block holding ``data``: its offset, or 0 when the plugin's
    memory has no room (the guest reads an empty answer)."""
    if not data:
        return 0
    offset = int(_lib.extism_current_plugin_memory_alloc(current, len(data)))
    if offset <= 0:
        return 0
    if offset + len(data) > limit:
        _lib.extism_current_plugin_memory_free(current, offset)
        return 0
    local = _IoVec(ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value, len(data))
    remote = _IoVec(_base(current) + offset, len(data))
    done = _writev(_pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if done != len(data):
        # The kernel's allocator was lied to (a forged root): the block is not all there.
        _raise_unless_unmapped(done)
        return 0
    return offset


def _raise_unless_unmapped(done: int) -> None:
    """A short copy or EFAULT means unmapped memory; anything else (the
    syscall refused by a seccomp policy, say) is the host's problem, not the
    plugin's, and is raised as such."""
    if done >= 0:
        return
    err = ctypes.get_errno()
    if err != 14:  # EFAULT
        raise OSError(err, f"process_vm_readv/writev: {os.strerror(err)}")
