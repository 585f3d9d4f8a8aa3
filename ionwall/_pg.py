"""IONWALL's PostgreSQL connection: one pool per ``Ionwall``, and the migrations.

The one seam to psycopg: every ``psycopg.Error`` that reaches a caller leaves
here as a ``StoreError`` (``translate``). Migrations are plain SQL files in
``ionwall/migrations/`` (``NNNN_name.sql``), applied in order, each in its
own transaction, under an advisory lock (hosts starting at once apply each
one once), and recorded in ``ionwall_schema_migrations``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from ._errors import StoreError

_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# pg_advisory_xact_lock keys: migrations, and IONWALL's writes (BEGIN IMMEDIATE's role)
MIGRATE_LOCK = 0x10_4A_11_01
WRITE_LOCK = 0x10_4A_11_02
CONNECT_TIMEOUT_S = 5


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration shipped, oldest first."""
    found = []
    for entry in resources.files("ionwall").joinpath("migrations").iterdir():
        match = _MIGRATION.match(entry.name)
        if match is not None:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate_postgres(url: str, *, upto: int | None = None) -> list[int]:
    """Applies IONWALL's migrations not yet applied to the database at ``url``
    (up to version ``upto``; default all); returns the versions it applied
    (none: the schema was current). Raises ``StoreError`` when the database
    cannot be reached or a migration fails (that migration is rolled back)."""
    with translate(f"{redact(url)}: cannot migrate IONWALL's schema"):
        with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            return _migrate(conn, upto)


def _migrate(conn: psycopg.Connection[Any], upto: int | None = None) -> list[int]:
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS ionwall_schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM ionwall_schema_migrations")}
        for version, name, sql in migrations():
            if version in done or (upto is not None and version > upto):
                continue
            with conn.transaction():  # a savepoint: a failing one names itself
                try:
                    conn.execute(sql.encode())
                except psycopg.Error as exc:
                    raise StoreError(f"IONWALL migration {name} failed: {exc}") from exc
                conn.execute(
                    "INSERT INTO ionwall_schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
            applied.append(version)
    return applied


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


@contextmanager
def translate(what: str) -> Iterator[None]:
    """``psycopg.Error`` (and the pool's timeout) as ``StoreError("<what>: …")``."""
    try:
        yield
    except psycopg.Error as exc:
        raise StoreError(f"{what}: {exc}") from exc
    except TimeoutError as exc:  # psycopg_pool.PoolTimeout is one
        raise StoreError(f"{what}: {exc}") from exc


class Database:
    """A pool of autocommit connections to ``url``; migrated when opened."""

    def __init__(self, url: str, *, max_size: int = 8) -> None:
        self.url = url
        self.where = redact(url)
        migrate_postgres(url)
        with translate(f"{self.where}: cannot open IONWALL's store"):
            self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                url,
                min_size=1,
                max_size=max_size,
                kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
                timeout=CONNECT_TIMEOUT_S,
                open=False,
                name="ionwall",
            )
            self.pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)

    @contextmanager
    def connection(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        with translate(f"{self.where}: {what}"), self.pool.connection() as conn:
            yield conn

    def close(self) -> None:
        self.pool.close()
