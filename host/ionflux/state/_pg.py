"""The host's state on PostgreSQL: one connection pool, spoken to as the SQLite code does.

The stores (registry, graph versions, run history) keep one body of SQL, written
for SQLite; ``PgDatabase`` runs it on PostgreSQL through psycopg 3 and its pool,
rewriting the few SQLite spellings on the way, once per distinct statement
(cached): ``?`` placeholders, ``INSERT OR IGNORE`` / ``INSERT OR REPLACE`` (as
``ON CONFLICT``), ``IS ?`` (``IS NOT DISTINCT FROM``) and a ``CASE WHEN ?`` over an
integer flag. A statement outside ``transaction()`` is its own transaction
(autocommit), as on SQLite.

Errors: a unique-key clash is ``StateConflict``; anything else the server or the
connection says is ``StateUnavailable`` (the run recorder turns it into a
retryable ``RunNotRecorded``, as it does a full disk).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from .._errors import StateConflict, StateUnavailable

# The primary key each ``INSERT OR REPLACE`` replaces on.
_KEYS = {"run_steps": "step_run_id", "content_cache": "key"}
_OR_REPLACE = re.compile(r"INSERT OR REPLACE INTO (\w+) \(([^)]*)\)", re.S)
# An ``INSERT`` of one row of placeholders, which ``executemany`` sends as one
# statement of many rows.
_ONE_ROW = re.compile(
    r"(INSERT (?:OR (?:REPLACE|IGNORE) )?INTO (\w+) \(([^)]*)\) VALUES )(\([?,\s]*\))"
)
# Rows per multi-row statement (17 columns of ``run_steps``: far below the
# protocol's 65535 parameters).
_ROWS = 256


def translate(sql: str) -> str:
    """SQLite's spelling of a statement, as PostgreSQL reads it."""
    sql = sql.replace("%", "%%")
    sql = sql.replace(" IS ?", " IS NOT DISTINCT FROM ?")
    sql = sql.replace("CASE WHEN ? THEN", "CASE WHEN ?::int <> 0 THEN")
    if "INSERT OR IGNORE INTO" in sql:
        sql = sql.replace("INSERT OR IGNORE INTO", "INSERT INTO") + " ON CONFLICT DO NOTHING"
    found = _OR_REPLACE.search(sql)
    if found is not None:
        table, columns = found.group(1), [c.strip() for c in found.group(2).split(",")]
        key = _KEYS[table]
        sets = [f"{c}=EXCLUDED.{c}" for c in columns if c != key]
        if table == "content_cache":
            sets.append("seq=EXCLUDED.seq")  # a replaced entry is the newest, as on SQLite
        sql = (
            sql.replace("INSERT OR REPLACE INTO", "INSERT INTO", 1)
            + f" ON CONFLICT ({key}) DO UPDATE SET "
            + ", ".join(sets)
        )
    return sql.replace("?", "%s")


class _Rows:
    """How ``executemany`` spells an ``INSERT`` of one row as one of many: the
    statement up to ``VALUES``, its row of placeholders, and for ``INSERT OR
    REPLACE`` the position of the key (a key given twice keeps its last row, as
    replacing it row by row would; PostgreSQL refuses to update one row twice in
    one statement)."""

    __slots__ = ("head", "key", "row")

    def __init__(self, head: str, row: str, key: int | None) -> None:
        self.head, self.row, self.key = head, row, key

    @staticmethod
    def of(sql: str) -> _Rows | None:
        found = _ONE_ROW.fullmatch(sql.strip())
        if found is None:
            return None
        head, table, columns, row = found.groups()
        key = None
        if head.startswith("INSERT OR REPLACE"):
            key = [c.strip() for c in columns.split(",")].index(_KEYS[table])
        return _Rows(head, row, key)

    def batches(self, params: Sequence[Sequence[Any]]) -> Iterator[tuple[str, list[Any]]]:
        """(the SQLite text, its parameters) per statement of up to ``_ROWS`` rows."""
        rows: Sequence[Sequence[Any]] = params
        if self.key is not None:
            last: dict[Any, Sequence[Any]] = {}
            for one in params:
                last.pop(one[self.key], None)  # a replaced row is the newest
                last[one[self.key]] = one
            rows = list(last.values())
        for at in range(0, len(rows), _ROWS):
            chunk = rows[at : at + _ROWS]
            flat = [value for one in chunk for value in one]
            yield self.head + ",".join([self.row] * len(chunk)), flat


class Result:
    """What a statement gave: its rows (fetched at once), rowcount, and lastrowid (None)."""

    __slots__ = ("_at", "_rows", "lastrowid", "rowcount")

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self._at = 0
        self.rowcount = rowcount
        self.lastrowid: int | None = None

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows = self._rows[self._at :]
        self._at = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())


class _Session:
    """One connection: each ``execute`` runs on it (inside the caller's transaction)."""

    def __init__(self, conn: psycopg.Connection[Any], db: PgDatabase) -> None:
        self._conn = conn
        self._db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        with _errors(self._db.url), self._conn.cursor() as cur:
            cur.execute(self._db.sql(sql), params, prepare=True)
            rows = cur.fetchall() if cur.description is not None else []
            return Result(rows, cur.rowcount)

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Result:
        if not params:
            return Result([], 0)
        shape = self._db.rows(sql)
        with _errors(self._db.url), self._conn.cursor() as cur:
            if shape is None:
                cur.executemany(self._db.sql(sql), params)
                return Result([], cur.rowcount)
            count = 0
            for statement, values in shape.batches(params):
                cur.execute(self._db.sql(statement), values, prepare=True)
                count += cur.rowcount
            return Result([], count)


class PgDatabase:
    """A pool of connections to one PostgreSQL database, shared by a host's stores."""

    def __init__(self, url: str, *, size: int = 8, timeout_s: float = 10.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._translated: dict[str, str] = {}
        self._shapes: dict[str, _Rows | None] = {}
        self._lock = threading.Lock()
        try:
            self._pool = ConnectionPool(
                url,
                min_size=1,
                max_size=size,
                timeout=timeout_s,
                kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout_s))},
                open=False,
                name="ionflux-state",
            )
            self._pool.open(wait=True, timeout=timeout_s)
        except (psycopg.Error, PoolTimeout) as exc:
            raise StateUnavailable(f"cannot reach the state database {_safe(url)}: {exc}") from exc

    def sql(self, statement: str) -> str:
        found = self._translated.get(statement)
        if found is None:
            found = self._translated[statement] = translate(statement)
        return found

    def rows(self, statement: str) -> _Rows | None:
        """How ``executemany`` sends ``statement`` as one of many rows (None: row by row)."""
        try:
            return self._shapes[statement]
        except KeyError:
            found = self._shapes[statement] = _Rows.of(statement)
            return found

    def close(self) -> None:
        self._pool.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """One statement, its own transaction."""
        with self._connection() as conn:
            return _Session(conn, self).execute(sql, params)

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Result:
        with self.transaction() as tx:
            return tx.executemany(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[_Session]:
        """One transaction on one connection: committed when the block ends, rolled
        back if it raises."""
        with self._connection() as conn, _errors(self.url), conn.transaction():
            yield _Session(conn, self)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise StateUnavailable(
                f"no connection to the state database {_safe(self.url)} within "
                f"{self.timeout_s:g} s (state.connect_timeout_s): {exc}"
            ) from exc
        except psycopg.OperationalError as exc:
            self._recheck()
            raise StateUnavailable(f"the state database {_safe(self.url)}: {exc}") from exc
        except StateUnavailable:
            self._recheck()
            raise

    def _recheck(self) -> None:
        """After a failure: drops the idle connections that broke with it (a server
        restarted), so the next statement gets a live one rather than failing too."""
        try:
            self._pool.check()
        except Exception:
            pass


class PgChanges:
    """``_sqlite.Changes`` for PostgreSQL: whether any host wrote ``table`` since the
    last ask, from the counter a trigger moves on each write (migration 0001)."""

    def __init__(self, db: PgDatabase, table: str) -> None:
        self._db = db
        self._table = table
        self._seen = -1

    def since_last(self) -> bool:
        row = self._db.execute(
            "SELECT n FROM state_generations WHERE name=?", (self._table,)
        ).fetchone()
        version = -1 if row is None else int(row[0])
        changed = version != self._seen or version < 0
        self._seen = version
        return changed


@contextmanager
def _errors(url: str) -> Iterator[None]:
    try:
        yield
    except psycopg.IntegrityError as exc:
        raise StateConflict(f"the state database {_safe(url)}: {exc}") from exc
    except psycopg.Error as exc:
        raise StateUnavailable(f"the state database {_safe(url)}: {exc}") from exc


def _safe(url: str) -> str:
    """``url`` without its password."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)
