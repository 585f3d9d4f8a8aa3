"""Small values that every process sharing a data directory reads on every call.

A file mapped into memory (``mmap``, ``MAP_SHARED``) is one copy in the page
cache for all processes: a store by one is seen by the next load of any
other, and reading it is a memory access, not a system call. The gate reads
the revocation counter twice per call and the audit log its head once per
append, so each saves a ``stat`` (about 2 µs, several times that right after a
sandbox call has run through the CPU's caches).

Writers serialise on ``flock`` of the same file; readers take no lock: a
reader either sees the old value or the new one (or, for a torn multi-byte
store, a value that differs from the old one, which is all they compare).
The files are never shrunk by the host. One that something else truncates
under a running host ends that host (``SIGBUS`` on the next read): like the
rest of the data directory (mode 0700) they belong to the host alone.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from pathlib import Path


class SharedFile:
    """``size`` bytes of ``path``, mapped; created zero-filled (mode 0600)."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                if os.fstat(self._fd).st_size < size:
                    os.ftruncate(self._fd, size)  # zero-filled; never shrinks a file
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(self._fd, size)
        except BaseException:
            os.close(self._fd)
            raise

    def read(self) -> bytes:
        return self._map[: self.size]

    def write(self, data: bytes) -> None:
        """Stores ``data`` at offset 0 (the caller holds ``lock()`` if others write)."""
        self._map[: len(data)] = data

    def lock(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def unlock(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            self._map.close()
            os.close(self._fd)
            self._fd = -1


class SharedCounter:
    """A counter any process sharing ``path`` can bump; ``stamp()`` changes with it."""

    _SIZE = 8

    def __init__(self, path: Path) -> None:
        self._file = SharedFile(path, self._SIZE)

    def stamp(self) -> bytes:
        return self._file.read()

    def bump(self) -> None:
        self._file.lock()
        try:
            value = int.from_bytes(self._file.read(), "little")
            self._file.write(((value + 1) % 2**64).to_bytes(self._SIZE, "little"))
        finally:
            self._file.unlock()

    def close(self) -> None:
        self._file.close()
