"""The path table: human names (``reports/01.json``) bound to CIDs, kept in SQLite.

Paths are relative POSIX paths without empty, ``.`` or ``..`` segments, so a
path can never mean two things. SQLite gives atomic, crash-safe updates; one
connection behind a lock serves every thread.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from .._errors import NotFound, StoreError
from .._sqlite import open_database
from ._cid import Cid

_SCHEMA = "CREATE TABLE IF NOT EXISTS paths (path TEXT PRIMARY KEY, cid TEXT NOT NULL)"


def normalize_path(path: str) -> str:
    """``/reports//01.json`` -> ``reports/01.json``; StoreError for paths that escape."""
    if not isinstance(path, str) or "\0" in path or "\\" in path:
        raise StoreError(f"invalid pod path {path!r}")
    parts = [p for p in path.strip("/").split("/")]
    if not path.strip("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"invalid pod path {path!r}: use names like 'reports/01.json'")
    return "/".join(parts)


class PathTable:
    """In ``file`` (SQLite, this machine), or in ``database`` (a ``PgDatabase``: the
    state every host of a cluster shares, table ``paths`` of its schema), closed
    here only if ``owns``."""

    def __init__(self, file: Path | None, *, database: Any = None, owns: bool = False) -> None:
        self._db: Any
        self._owns = owns or database is None
        if database is not None:
            self._db = database
        else:
            assert file is not None
            # The host's one way of opening SQLite (WAL; read-only on a read-only data
            # directory, so `pod ls` and `runs list` work there; DataDirError naming the file).
            self._db = open_database(file, _SCHEMA, synchronous="FULL")
        self._lock = threading.Lock()

    def bind(self, path: str, cid: Cid) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO paths (path, cid) VALUES (?, ?) "
                "ON CONFLICT(path) DO UPDATE SET cid = excluded.cid",
                (normalize_path(path), str(cid)),
            )

    def resolve(self, path: str) -> Cid:
        with self._lock:
            row = self._db.execute(
                "SELECT cid FROM paths WHERE path = ?", (normalize_path(path),)
            ).fetchone()
        if row is None:
            raise NotFound(f"no content bound to {path!r}")
        return Cid.parse(row[0])

    def unbind(self, path: str) -> None:
        with self._lock:
            cursor = self._db.execute("DELETE FROM paths WHERE path = ?", (normalize_path(path),))
        if cursor.rowcount == 0:
            raise NotFound(f"no content bound to {path!r}")

    def list(self, prefix: str = "") -> dict[str, str]:
        prefix = prefix.lstrip("/")
        with self._lock:
            rows = self._db.execute(
                "SELECT path, cid FROM paths WHERE substr(path, 1, ?) = ? ORDER BY path",
                (len(prefix), prefix),
            ).fetchall()
        return {path: cid for path, cid in rows}

    def close(self) -> None:
        with self._lock:
            if self._owns:
                self._db.close()
