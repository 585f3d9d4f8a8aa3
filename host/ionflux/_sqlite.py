"""The host's SQLite databases (registry, graph versions, run history), opened one way.

WAL, so readers never wait for a writer and several processes (the workers of
`ionflux up --workers`) share a file; a busy timeout for the rare writer that
finds the file locked; autocommit, so each store opens its own transactions.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal


def open_database(
    path: Path, schema: str, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
) -> sqlite3.Connection:
    """A connection to ``path`` (created with its folder), ``schema`` applied.

    ``synchronous``: ``NORMAL`` with WAL means a commit survives a process crash
    and only an OS crash may lose the last ones; ``FULL`` (SQLite's default)
    survives both, at an fsync per commit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("PRAGMA busy_timeout=5000")
    db.executescript(schema)
    return db
