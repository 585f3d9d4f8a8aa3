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

On a read-only data directory (a read-only mount, or no write permission) a
file is mapped read-only, or read once when it is missing or short; writing
it raises ``OSError``, so reading commands work and writing ones fail.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import sqlite3
from pathlib import Path

READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def read_only(directory: Path) -> bool:
    """Whether files in ``directory`` cannot be created or written: a read-only
    file system (root can write anything else, so ask the mount), or no write
    permission."""
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    return not os.access(directory, os.W_OK)


def connect_read_only(path: Path) -> sqlite3.Connection:
    """``mode=ro``; ``immutable`` where SQLite cannot keep the WAL's shared memory."""
    for flags in ("mode=ro", "immutable=1"):
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?{flags}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error:
            conn.close()
            if flags == "immutable=1":
                raise
            continue
        return conn
    raise AssertionError("unreachable")


class SharedFile:
    """``size`` bytes of ``path``, mapped; created zero-filled (mode 0600)."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self.read_only = False
        try:
            self._fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno not in READ_ONLY_ERRNOS:
                raise
            self._open_read_only()
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                if os.fstat(self._fd).st_size < size:
                    # Allocated, not a hole: a store into a hole on a full disk is a
                    # SIGBUS; this is an ENOSPC now. Zero-filled; never shrinks a file.
                    os.posix_fallocate(self._fd, 0, size)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(self._fd, size)
        except BaseException as exc:
            os.close(self._fd)
            if isinstance(exc, OSError) and exc.filename is None:  # say which file
                raise OSError(exc.errno, exc.strerror, str(path)) from exc
            raise

    def _open_read_only(self) -> None:
        self.read_only = True
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._fd = -1
        if self._fd >= 0 and os.fstat(self._fd).st_size >= self.size:
            self._map = mmap.mmap(self._fd, self.size, prot=mmap.PROT_READ)
            return
        # Missing or short: mapping past its end would fault on read; its bytes, once.
        data = os.pread(self._fd, self.size, 0) if self._fd >= 0 else b""
        self._map = mmap.mmap(-1, self.size)
        self._map[: len(data)] = data

    def read(self) -> bytes:
        return self._map[: self.size]

    def write(self, data: bytes) -> None:
        """Stores ``data`` at offset 0 (the caller holds ``lock()`` if others write)."""
        if self.read_only:
            raise OSError(errno.EROFS, "the data directory is read-only", str(self.path))
        self._map[: len(data)] = data

    def lock(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def unlock(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if not self._map.closed:
            self._map.close()
        if self._fd >= 0:
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
