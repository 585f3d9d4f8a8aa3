"""The host's SQLite files: the run history's WAL is checkpointed off the
committing thread, and stays bounded."""

from __future__ import annotations

import sqlite3
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


def test_the_checkpointer_keeps_the_wal_bounded(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    db = open_database(path, _SCHEMA, autocheckpoint=False)
    checkpointer = Checkpointer(path, every=50)
    try:
        for _ in range(30):  # writes keep coming while the thread checkpoints
            _commit_many(db, 100, checkpointer)
            time.sleep(0.01)
        # A checkpoint that has caught up lets the next writer start the WAL
        # over from its beginning, so its size stays near what `every` commits
        # write (SQLite's own checkpoint would let it reach 1000 pages).
        assert _wal_bytes(path) < 1000 * 4096
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 100
    finally:
        checkpointer.close()
        db.close()


def test_an_idle_checkpointer_checkpoints_what_is_left(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    db = open_database(path, _SCHEMA, autocheckpoint=False)
    checkpointer = Checkpointer(path, every=10_000, idle_s=0.05)
    try:
        before = path.stat().st_size
        _commit_many(db, 20, checkpointer)  # far fewer than `every`
        assert path.stat().st_size == before  # the rows are only in the WAL
        # Pages reach the main file only through a checkpoint, and nobody
        # but the thread makes one here.
        deadline = time.monotonic() + 5
        while path.stat().st_size == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.stat().st_size > before + 20 * 2000
    finally:
        checkpointer.close()
        db.close()
