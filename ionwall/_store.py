"""The consent and grant store: one SQLite database (WAL) in the data directory.

Every write runs in a ``BEGIN IMMEDIATE`` transaction, so concurrent
approvals from threads or processes serialise: one wins, the others see the
request already answered. A partial unique index keeps at most one pending
request per fingerprint.

Revocations also bump a counter in ``revocations.counter``, a file every
process maps into memory, which is how the gate notices a revocation made
elsewhere without querying the database, or making a system call, on every
call (see ``GrantStore.revocation_stamp``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ._consent import ConsentRequest, ConsentStatus
from ._errors import StoreError
from ._grants import Grant, GrantKind
from ._shared import SharedCounter, connect_read_only, read_only

_SCHEMA = """
CREATE TABLE IF NOT EXISTS consents (
    id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    subject TEXT NOT NULL,
    transform TEXT NOT NULL,
    version TEXT NOT NULL,
    scopes TEXT NOT NULL,
    publisher TEXT,
    signature_valid INTEGER,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    status TEXT NOT NULL,
    answered_at REAL,
    answered_by TEXT,
    grant_id TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS consents_one_pending
    ON consents(fingerprint) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    transform TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    token TEXT NOT NULL,
    kind TEXT NOT NULL,
    consent_id TEXT,
    fingerprint TEXT,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS grants_fingerprint ON grants(fingerprint);
"""


class _Row(Protocol):
    """A row by column name: ``sqlite3.Row``, or psycopg's ``dict_row``."""

    def __getitem__(self, key: str, /) -> Any: ...


class StateStore(Protocol):
    """What ``Ionwall`` keeps consents and grants in: ``GrantStore`` (SQLite, one
    machine) or ``PgGrantStore`` (PostgreSQL, a cluster). ``conn`` is whatever
    ``write()`` yields: writes go through it, inside that transaction."""

    read_only: bool

    def write(self) -> AbstractContextManager[Any]: ...
    def close(self) -> None: ...
    def revocation_stamp(self) -> bytes: ...
    def revoke(self, grant_id: str, at: datetime) -> bool: ...
    def insert_consent(self, conn: Any, request: ConsentRequest, fingerprint: str) -> None: ...
    def answer_consent(
        self,
        conn: Any,
        consent_id: str,
        status: ConsentStatus,
        *,
        at: datetime,
        by: str | None,
        grant_id: str | None = None,
    ) -> None: ...
    def consent(self, consent_id: str, conn: Any = None) -> ConsentRequest | None: ...
    def pending_by_fingerprint(self, conn: Any, fingerprint: str) -> ConsentRequest | None: ...
    def consents(self, status: ConsentStatus | None = None) -> list[ConsentRequest]: ...
    def insert_grant(self, conn: Any, grant: Grant, fingerprint: str | None) -> None: ...
    def grant(self, grant_id: str) -> Grant | None: ...
    def grants(self) -> list[Grant]: ...
    def live_grant_for(self, fingerprint: str, now: float) -> Grant | None: ...


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


class GrantStore:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = directory / "ionwall.db"
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._revocations = SharedCounter(directory / "revocations.counter")
        # A read-only data directory: consents and grants can be listed, a
        # token checked; an approval or revocation fails (StoreError).
        self.read_only = read_only(directory) and self.path.exists()
        try:
            conn = self._conn()
            if not self.read_only:
                conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot create the grant store: {exc}") from exc

    # -- connections ---------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                if self.read_only:
                    conn = connect_read_only(self.path)
                else:
                    conn = sqlite3.connect(
                        self.path, timeout=30.0, isolation_level=None, check_same_thread=False
                    )
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                    conn.execute("PRAGMA busy_timeout=30000")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot open the grant store: {exc}") from exc
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
            self._revocations.close()
        self._local = threading.local()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken at once (``BEGIN IMMEDIATE``)."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot write the grant store: {exc}") from exc
        try:
            yield conn
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):  # a full disk, a read-only directory, ...
                raise StoreError(f"{self.path}: cannot write the grant store: {exc}") from exc
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:  # a full disk may have ended it already
                conn.execute("ROLLBACK")
            raise StoreError(f"{self.path}: cannot commit to the grant store: {exc}") from exc

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the grant store: {exc}") from exc

    # -- revocation counter --------------------------------------------------

    def revocation_stamp(self) -> bytes:
        """Changes with every revocation, in any process sharing the directory."""
        return self._revocations.stamp()

    # -- consents ------------------------------------------------------------

    def insert_consent(
        self, conn: sqlite3.Connection, request: ConsentRequest, fingerprint: str
    ) -> None:
        conn.execute(
            "INSERT INTO consents VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            _consent_row(request, fingerprint),
        )

    def answer_consent(
        self,
        conn: sqlite3.Connection,
        consent_id: str,
        status: ConsentStatus,
        *,
        at: datetime,
        by: str | None,
        grant_id: str | None = None,
    ) -> None:
        conn.execute(
            "UPDATE consents SET status=?, answered_at=?, answered_by=?, grant_id=? WHERE id=?",
            (status.value, _ts(at), by, grant_id, consent_id),
        )

    def consent(
        self, consent_id: str, conn: sqlite3.Connection | None = None
    ) -> ConsentRequest | None:
        rows = (
            (conn or self._conn())
            .execute("SELECT * FROM consents WHERE id=?", (consent_id,))
            .fetchall()
        )
        return _consent(rows[0]) if rows else None

    def pending_by_fingerprint(
        self, conn: sqlite3.Connection, fingerprint: str
    ) -> ConsentRequest | None:
        rows = conn.execute(
            "SELECT * FROM consents WHERE fingerprint=? AND status='pending'", (fingerprint,)
        ).fetchall()
        return _consent(rows[0]) if rows else None

    def consents(self, status: ConsentStatus | None = None) -> list[ConsentRequest]:
        if status is None:
            rows = self._query("SELECT * FROM consents ORDER BY created_at, id")
        else:
            rows = self._query(
                "SELECT * FROM consents WHERE status=? ORDER BY created_at, id", (status.value,)
            )
        return [_consent(r) for r in rows]

    # -- grants --------------------------------------------------------------

    def insert_grant(self, conn: sqlite3.Connection, grant: Grant, fingerprint: str | None) -> None:
        conn.execute(
            "INSERT INTO grants VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            _grant_row(grant, fingerprint),
        )

    def grant(self, grant_id: str) -> Grant | None:
        rows = self._query("SELECT * FROM grants WHERE id=?", (grant_id,))
        return _grant(rows[0]) if rows else None

    def grants(self) -> list[Grant]:
        return [_grant(r) for r in self._query("SELECT * FROM grants ORDER BY created_at, id")]

    def live_grant_for(self, fingerprint: str, now: float) -> Grant | None:
        rows = self._query(
            "SELECT * FROM grants WHERE fingerprint=? AND revoked_at IS NULL AND expires_at>? "
            "ORDER BY expires_at DESC LIMIT 1",
            (fingerprint, now),
        )
        return _grant(rows[0]) if rows else None

    def revoke(self, grant_id: str, at: datetime) -> bool:
        """Marks the grant revoked (keeping the first time); False if there is none."""
        with self.write() as conn:
            cur = conn.execute(
                "UPDATE grants SET revoked_at=COALESCE(revoked_at, ?) WHERE id=?",
                (_ts(at), grant_id),
            )
            found = cur.rowcount > 0
        if found:
            self._revocations.bump()
        return found


def _consent_row(request: ConsentRequest, fingerprint: str) -> tuple[Any, ...]:
    """A consent request as a row of the consents table, in its columns' order
    (SQLite's ``consents`` and PostgreSQL's ``ionwall_consents`` alike)."""
    return (
        request.id, fingerprint, request.subject, request.transform, request.version,
        json.dumps(list(request.scopes)), request.publisher,
        None if request.signature_valid is None else int(request.signature_valid),
        _ts(request.created_at), _ts(request.expires_at), request.status.value,
        _ts(request.answered_at), request.answered_by, request.grant_id,
    )  # fmt: skip


def _grant_row(grant: Grant, fingerprint: str | None) -> tuple[Any, ...]:
    """A grant as a row of the grants table, in its columns' order (SQLite's
    ``grants`` and PostgreSQL's ``ionwall_grants`` alike)."""
    return (
        grant.id, grant.subject, grant.transform, json.dumps(list(grant.scopes)),
        _ts(grant.created_at), _ts(grant.expires_at), grant.token, grant.kind.value,
        grant.consent_id, fingerprint, _ts(grant.revoked_at),
    )  # fmt: skip


def _consent(row: _Row) -> ConsentRequest:
    valid = row["signature_valid"]
    created = _dt(row["created_at"])
    expires = _dt(row["expires_at"])
    assert created is not None and expires is not None
    return ConsentRequest(
        id=row["id"],
        subject=row["subject"],
        transform=row["transform"],
        version=row["version"],
        scopes=tuple(json.loads(row["scopes"])),
        publisher=row["publisher"],
        signature_valid=None if valid is None else bool(valid),
        created_at=created,
        expires_at=expires,
        status=ConsentStatus(row["status"]),
        answered_at=_dt(row["answered_at"]),
        answered_by=row["answered_by"],
        grant_id=row["grant_id"],
    )


def _grant(row: _Row) -> Grant:
    created = _dt(row["created_at"])
    expires = _dt(row["expires_at"])
    assert created is not None and expires is not None
    return Grant(
        id=row["id"],
        subject=row["subject"],
        transform=row["transform"],
        scopes=tuple(json.loads(row["scopes"])),
        created_at=created,
        expires_at=expires,
        token=row["token"],
        kind=GrantKind(row["kind"]),
        consent_id=row["consent_id"],
        revoked_at=_dt(row["revoked_at"]),
    )
