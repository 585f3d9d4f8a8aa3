"""Schema migrations of the PostgreSQL state: plain versioned SQL files, applied in order.

``migrations/NNNN_name.sql``; each runs in one transaction with the row that
records it in ``schema_migrations`` (version, name, SHA-256 of the file). Hosts
starting together take one advisory lock, so each file runs once. A database
whose recorded version is past the files this host ships, or whose recorded
file hashes differ from them, is refused (``StateSchemaError``) rather than
written with the wrong shape.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from .._errors import StateSchemaError, StateUnavailable

_LOCK_KEY = 0x10F1_0001  # pg_advisory_xact_lock's key for migrations
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def migrations() -> list[Migration]:
    """The files this host ships, in version order."""
    found = []
    for entry in resources.files("ionflux.state").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match is not None:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    return found


def latest_version() -> int:
    return migrations()[-1].version


def applied(url: str) -> list[tuple[int, str, str]]:
    """(version, name, sha256) recorded in the database, oldest first; [] when none."""
    with _connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
        if exists is None or exists[0] is None:
            return []
        rows = conn.execute(
            "SELECT version, name, sha256 FROM schema_migrations ORDER BY version"
        ).fetchall()
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


def migrate(url: str, *, target: int | None = None) -> list[Migration]:
    """Applies the migrations the database lacks (up to ``target``); returns them."""
    wanted = [m for m in migrations() if target is None or m.version <= target]
    done: list[Migration] = []
    with _connect(url) as conn:
        try:
            with conn.transaction():
                # Under the lock: hosts starting together would race on CREATE TABLE.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                conn.execute(_TABLE)
            for migration in wanted:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                    recorded = _recorded(conn)
                    _check(recorded)
                    if migration.version in recorded:
                        continue
                    conn.execute(migration.sql.encode("utf-8"))
                    conn.execute(
                        "INSERT INTO schema_migrations VALUES (%s, %s, %s, %s)",
                        (migration.version, migration.name, migration.sha256, time.time()),
                    )
                    done.append(migration)
            with conn.transaction():
                _check(_recorded(conn))
        except psycopg.Error as exc:
            raise StateUnavailable(f"migrating the state database: {exc}") from exc
    return done


def check_current(url: str) -> None:
    """Raises ``StateSchemaError`` unless the database is at this host's version."""
    with _connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
        recorded = {} if exists is None or exists[0] is None else _recorded(conn)
    _check(recorded)
    latest = latest_version()
    if max(recorded, default=0) < latest:
        raise StateSchemaError(
            f"the state database is at schema version {max(recorded, default=0)}, this host "
            f"needs {latest}: run `ionflux db migrate`"
        )


def _recorded(conn: psycopg.Connection[Any]) -> dict[int, str]:
    rows = conn.execute("SELECT version, sha256 FROM schema_migrations").fetchall()
    return {int(r[0]): str(r[1]) for r in rows}


def _check(recorded: dict[int, str]) -> None:
    shipped = {m.version: m for m in migrations()}
    newer = sorted(v for v in recorded if v not in shipped)
    if newer:
        raise StateSchemaError(
            f"the state database has schema version {newer[-1]}, newer than this host knows "
            f"(up to {max(shipped)}): upgrade the host"
        )
    for version, digest in recorded.items():
        if shipped[version].sha256 != digest:
            raise StateSchemaError(
                f"schema migration {version:04d}_{shipped[version].name}.sql differs from the "
                "one applied to the state database: a host of another build migrated it"
            )


def _connect(url: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise StateUnavailable(f"cannot reach the state database: {exc}") from exc
