"""The host's SQLite files: the run history's WAL is checkpointed off the
committing thread, and stays bounded."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from pathlib import Path

from ionflux._sqlite import Checkpointer, open_database

_SCHEMA = "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT);"


def _commit_many(db: sqlite3.Connection, n: int, checkpointer: Checkpointer | None) -> None:
    for i in range(n):
        db.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (i, "x" * 2000))
        if checkpointer is not None:
            checkpointer.committed()


def _wal_bytes(path: Path) -> int:
    return path.with_name(path.name + "-wal").stat().st_size


def test_the_writing_connection_never_checkpoints_itself(tmp_path: Path) -> None:
    db = open_database(tmp_path / "h.sqlite3", _SCHEMA, autocheckpoint=False)
    assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    # Without a checkpointer the WAL only grows: 3000 commits of a page or two.
    _commit_many(db, 3000, None)
    assert _wal_bytes(tmp_path / "h.sqlite3") > 4 * 1000 * 4096
    db.close()


def test_the_checkpointer_keeps_the_wal_bounded_under_constant_writes(tmp_path: Path) -> None:
    # Two writers (as two host processes would) commit back to back, each
    # taking the lock file first, as the run history's writers do. The WAL
    # starts over only when a writer finds every frame copied: the
    # checkpointer's second pass, under the lock, makes sure it does.
    #
    # Count-driven, not timed: each writer waits for a checkpoint round after
    # every 100 of its commits (``sync``), so however slowly the machine runs
    # the checkpointer's thread, at most 200 commits (a few hundred pages, about
    # 2 MB) separate two rounds, while the other writer goes on committing
    # during the round. If a round could not complete under those writes, the
    # WAL would never start over and would hold all 3000 commits (over 12 MB).
    path = tmp_path / "h.sqlite3"
    lock_path = tmp_path / "h.sqlite3.lock"
    writers = [open_database(path, _SCHEMA, autocheckpoint=False) for _ in range(2)]
    checkpointer = Checkpointer(path, lock_path=lock_path, every=50)
    peak = 0
    synced: list[bool] = []

    def write(db: sqlite3.Connection, offset: int) -> None:
        nonlocal peak
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            for i in range(1500):
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    db.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (offset + i, "x" * 2000))
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                checkpointer.committed()
                peak = max(peak, _wal_bytes(path))
                if i % 100 == 99:
                    synced.append(checkpointer.sync(timeout=60))
        finally:
            os.close(fd)

    try:
        threads = [
            threading.Thread(target=write, args=(db, i * 10_000)) for i, db in enumerate(writers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert synced and all(synced), "a checkpoint round did not end within a minute"
        assert peak < 4 * 1024 * 1024, peak
        assert writers[0].execute("SELECT count(*) FROM t").fetchone()[0] == 3000
    finally:
        checkpointer.close()
        for db in writers:
            db.close()


def test_an_idle_checkpointer_checkpoints_what_is_left(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    db = open_database(path, _SCHEMA, autocheckpoint=False)
    checkpointer = Checkpointer(path, every=10_000, idle_s=0.05)
    try:
        before = path.stat().st_size
        _commit_many(db, 20, None)  # not yet told: the thread has nothing to do
        assert path.stat().st_size == before  # the rows are only in the WAL
        checkpointer.committed()  # far fewer than `every`: only being idle triggers it
        # Pages reach the main file only through a checkpoint, and nobody
        # but the thread makes one here. (A polled condition, generously bounded.)
        deadline = time.monotonic() + 60
        while path.stat().st_size == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.stat().st_size > before + 20 * 2000
    finally:
        checkpointer.close()
        db.close()
