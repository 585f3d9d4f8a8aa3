"""The host's SQLite databases (registry, graph versions, run history), opened one way.

WAL, so readers never wait for a writer and several processes (the workers of
`ionflux up --workers`) share a file; a busy timeout for the rare writer that
finds the file locked; autocommit, so each store opens its own transactions
(``transaction``). ``Changes`` tells a store's cache that another process
committed; ``Checkpointer`` keeps the run history's checkpoints off its writers;
``OwnOrShared`` closes and opens transactions for a store whose tables are
in its own database or in the cluster's shared one.

A data directory on a read-only file system (a snapshot, a read-only mount)
is opened read-only (``mode=ro``, or ``immutable`` where SQLite cannot even
keep its shared-memory file there; a database never created there reads as
empty), so reading commands work; a write fails with SQLite's "attempt to
write a readonly database", which the CLI prints as one line.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

from ionwall import connect_read_only, read_only

from ._errors import DataDirError

log = logging.getLogger("ionflux.sqlite")


def open_database(
    path: Path,
    schema: str,
    *,
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    autocheckpoint: bool = True,
) -> sqlite3.Connection:
    """A connection to ``path`` (created with its folder), ``schema`` applied.

    ``synchronous``: ``NORMAL`` with WAL means a commit survives a process crash
    and only an OS crash may lose the last ones; ``FULL`` (SQLite's default)
    survives both, at an fsync per commit. ``autocheckpoint=False``: a
    ``Checkpointer`` does it instead, off the committing thread. On a read-only
    data directory: read-only (see the module's docstring)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if read_only(path.parent):
            return connect_read_only(path) if path.exists() else _empty(schema)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.execute("PRAGMA busy_timeout=5000")
            if not autocheckpoint:
                db.execute("PRAGMA wal_autocheckpoint=0")
            db.executescript(schema)
        except BaseException:
            db.close()
            raise
    except (OSError, sqlite3.Error) as exc:
        raise DataDirError(f"{path}: cannot open the database: {_reason(exc)}") from exc
    return db


def _empty(schema: str) -> sqlite3.Connection:
    """A database that was never created on a read-only data directory: empty, and
    refusing writes as the file would."""
    db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    db.executescript(schema)
    db.execute("PRAGMA query_only=ON")
    return db


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, its lock taken at once (``BEGIN IMMEDIATE``), so two
    writers never both read before either writes; rolled back if the block (or the
    commit) fails. The caller holds whatever lock serialises its connection."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class _SharedDatabase(Protocol):
    def transaction(self) -> AbstractContextManager[Any]: ...


class OwnOrShared:
    """Base of a store whose tables are in its own SQLite database (``_db``) or in
    a shared one (``_shared``: PostgreSQL, the cluster's), which who opened it closes."""

    _db: Any
    _shared: _SharedDatabase | None

    def close(self) -> None:
        if self._shared is None:  # a shared database is closed by who opened it
            self._db.close()

    def _transaction(self) -> AbstractContextManager[Any]:
        if self._shared is not None:
            return self._shared.transaction()
        return transaction(self._db)


class Changes:
    """Tells whether another connection (another process) committed to ``db``
    since the last ask: ``PRAGMA data_version``, one cheap query. The caller
    holds whatever lock serialises ``db``."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._seen = -1  # nothing seen yet: the first ask says "changed"

    def since_last(self) -> bool:
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        changed = version != self._seen
        self._seen = version
        return bool(changed)


class Checkpointer:
    """Copies a WAL database's committed pages into its main file, on a thread.

    SQLite does this inside a commit once the WAL passes 1000 pages, and with
    ``synchronous=NORMAL`` that checkpoint syncs the file: about every hundred
    runs, one run's commit stalled the event loop for 10-15 ms (measured: the
    whole p99 of a 3-node run in-process). The connection that writes is opened
    with ``wal_autocheckpoint=0`` and this thread, on a connection of its own,
    checkpoints after ``every`` commits, or ``idle_s`` after the last one.
    Python's sqlite3 lets go of the GIL while SQLite works.

    A round is two passive checkpoints. The first copies (and syncs) the bulk
    while writers go on. The WAL only starts over from its beginning when a
    writer finds every frame copied, which writers in other processes,
    committing all the time, would never let happen: under a constant load
    the WAL grew without bound (170 MB in a minute, measured). So the second
    checkpoint, which has only the few frames written meanwhile to copy, holds
    ``lock_path`` (the lock file every writer of the database takes first).
    """

    def __init__(
        self, path: Path, *, lock_path: Path | None = None, every: int = 64, idle_s: float = 1.0
    ) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock_fd = (
            -1 if lock_path is None else os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        )
        self._every = every
        self._idle_s = idle_s
        self._commits = 0
        self._wake = threading.Event()
        self._stop = False
        # Rounds begun and ended, for ``sync``; a forced round runs with no commits.
        self._rounds = threading.Condition()
        self._begun = self._ended = 0
        self._forced = False
        self._thread = threading.Thread(
            target=self._run, name=f"ionflux-checkpoint-{path.stem}", daemon=True
        )
        self._thread.start()

    def committed(self) -> None:
        """Called after each commit of the writing connection. The count is not
        locked: a commit counted while the thread resets it only waits for the
        next round (at most ``idle_s`` later)."""
        self._commits += 1
        if self._commits >= self._every:
            self._wake.set()

    def sync(self, timeout: float | None = None) -> bool:
        """Returns once a round that began after this call has ended (False if
        ``timeout`` passed first): everything committed before the call is then
        in the main file, and the next writer starts the WAL over. For a clean
        stop, and for tests that must not guess how long a round takes."""
        with self._rounds:
            want = self._begun + 1
            self._forced = True
            self._wake.set()
            return self._rounds.wait_for(lambda: self._ended >= want or self._stop, timeout)

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self._idle_s)
            self._wake.clear()
            with self._rounds:
                if self._commits == 0 and not self._forced:
                    continue
                self._forced = False
                self._begun += 1
                round_ = self._begun
            self._commits = 0
            try:
                self._checkpoint()
            except (sqlite3.Error, OSError) as exc:  # the next round tries again
                log.warning("checkpoint of %s failed: %s", self.path, exc)
            with self._rounds:
                self._ended = round_
                self._rounds.notify_all()

    def _checkpoint(self) -> None:
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._rounds:
            self._stop = True
            self._rounds.notify_all()
        self._wake.set()
        self._thread.join(timeout=10)
        self._db.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
