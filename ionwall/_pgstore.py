"""The consent and grant store on PostgreSQL, shared by every host of a cluster,
and the revocation feed that keeps each host's gate current from memory.

``PgGrantStore`` answers what ``GrantStore`` (SQLite) answers, over the tables
of ``migrations/0001_ionwall.sql``. Every write transaction first takes one
advisory lock (``pg_advisory_xact_lock``): writes from every host serialise
as ``BEGIN IMMEDIATE`` serialises them on one machine, so an approval races
no other approval, and ``authorize`` reuses a grant another host just made.

Revocations: ``revoke`` marks the grant, appends a row to
``ionwall_revocations`` (its ``seq`` orders all revocations of the cluster)
and sends ``NOTIFY ionwall_revocations, '<seq>'``, delivered at commit to
every host. Each host process's ``RevocationFeed`` holds one connection that
``LISTEN``s, and moves the host's revocation stamp (a value in memory that
the gate compares on every call, as it compares the shared counter file on
one machine) on every notice; then, as on every heartbeat and reconnect, it
reads the revocations after the last seq it has seen and records in its row
of ``ionwall_feeds`` how far it has read, and when (the database's clock).
``revoke`` returns once every other feed has read it, or has been silent
past its own bound: so when it returns no host lets the grant through.

A host whose feed has not answered for longer than ``bound`` seconds no
longer knows what was revoked: its gate denies every call, naming the reason
(``RevocationFeedLost``), until the feed caught up again.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg.rows import dict_row, tuple_row

from ._consent import ConsentRequest, ConsentStatus
from ._errors import RevocationFeedLost, StoreError
from ._grants import Grant
from ._keys import decode_public_key, encode_public_key, key_id
from ._pg import CONNECT_TIMEOUT_S, WRITE_LOCK, Database, translate
from ._store import _consent, _consent_row, _grant, _grant_row, _ts

log = logging.getLogger("ionwall.feed")

CHANNEL = "ionwall_revocations"
_DB_NOW = "extract(epoch from clock_timestamp())"  # the database's clock: one for all hosts
_FEEDS_PRUNED_AFTER_S = 3600  # a crashed host's row, long past any bound
DEFAULT_FEED_BOUND_S = 5.0
"""How long a host goes on trusting what it knows of revocations without hearing
from the feed (``state.revocation_feed_bound`` in the host's config)."""


class PgGrantStore:
    """Consents, grants, revocations and published keys in PostgreSQL."""

    read_only = False

    def __init__(
        self,
        db: Database,
        *,
        feed_bound: float = DEFAULT_FEED_BOUND_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.path = db.where  # named in messages, as GrantStore's file is
        self._local = threading.local()
        self.feed = RevocationFeed(db, bound=feed_bound, monotonic=monotonic)

    def close(self) -> None:
        self.feed.close()

    # -- connections ---------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[psycopg.Connection[Any]]:
        """A write transaction holding IONWALL's write lock (every host's writes serialise)."""
        with self.db.connection("cannot write the grant store") as conn:
            conn.row_factory = dict_row
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                    self._local.tx = conn
                    try:
                        yield conn
                    finally:
                        self._local.tx = None
            finally:
                conn.row_factory = tuple_row  # back to the pool

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        tx = getattr(self._local, "tx", None)
        if tx is not None:  # inside write(): read what the transaction sees
            with translate(f"{self.db.where}: cannot read the grant store"):
                return list(tx.execute(sql, args).fetchall())
        with self.db.connection("cannot read the grant store") as conn:
            with conn.cursor(row_factory=dict_row) as cur:
                return list(cur.execute(sql, args).fetchall())

    # -- revocations ---------------------------------------------------------

    def revocation_stamp(self) -> bytes:
        """Changes with every revocation the feed saw (from memory)."""
        return self.feed.stamp

    def revoke(self, grant_id: str, at: datetime) -> bool:
        """Marks the grant revoked (keeping the first time) and tells every host;
        False if there is none.

        Returns once every other host's feed has applied it, or has been silent
        past its bound (its host denies everything): at most the bound."""
        seq: int | None = None
        with self.write() as conn:
            found = conn.execute(
                "UPDATE ionwall_grants SET revoked_at=COALESCE(revoked_at, %s) WHERE id=%s",
                (_ts(at), grant_id),
            ).rowcount
            if found:
                row = conn.execute(
                    "INSERT INTO ionwall_revocations (grant_id, revoked_at) VALUES (%s, %s) "
                    "RETURNING seq",
                    (grant_id, _ts(at)),
                ).fetchone()
                assert row is not None
                seq = int(row["seq"])
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(seq)))
        if seq is None:
            return False
        self.feed.bump()  # this host at once, without waiting for its own notice
        behind = self.feed.await_hosts(seq, self.feed.bound)
        if behind:
            log.warning(
                "revocation of %s: feeds %s did not confirm it within %g s",
                grant_id, ", ".join(behind), self.feed.bound,
            )  # fmt: skip
        return True

    # -- consents ------------------------------------------------------------

    def insert_consent(
        self, conn: psycopg.Connection[Any], request: ConsentRequest, fingerprint: str
    ) -> None:
        conn.execute(
            "INSERT INTO ionwall_consents VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            _consent_row(request, fingerprint),
        )

    def answer_consent(
        self,
        conn: psycopg.Connection[Any],
        consent_id: str,
        status: ConsentStatus,
        *,
        at: datetime,
        by: str | None,
        grant_id: str | None = None,
    ) -> None:
        conn.execute(
            "UPDATE ionwall_consents SET status=%s, answered_at=%s, answered_by=%s, grant_id=%s "
            "WHERE id=%s",
            (status.value, _ts(at), by, grant_id, consent_id),
        )

    def consent(
        self, consent_id: str, conn: psycopg.Connection[Any] | None = None
    ) -> ConsentRequest | None:
        rows = self._query("SELECT * FROM ionwall_consents WHERE id=%s", (consent_id,))
        return _consent(rows[0]) if rows else None

    def pending_by_fingerprint(
        self, conn: psycopg.Connection[Any], fingerprint: str
    ) -> ConsentRequest | None:
        rows = self._query(
            "SELECT * FROM ionwall_consents WHERE fingerprint=%s AND status='pending'",
            (fingerprint,),
        )
        return _consent(rows[0]) if rows else None

    def consents(self, status: ConsentStatus | None = None) -> list[ConsentRequest]:
        if status is None:
            rows = self._query("SELECT * FROM ionwall_consents ORDER BY created_at, id")
        else:
            rows = self._query(
                "SELECT * FROM ionwall_consents WHERE status=%s ORDER BY created_at, id",
                (status.value,),
            )
        return [_consent(r) for r in rows]

    # -- grants --------------------------------------------------------------

    def insert_grant(
        self, conn: psycopg.Connection[Any], grant: Grant, fingerprint: str | None
    ) -> None:
        conn.execute(
            "INSERT INTO ionwall_grants VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            _grant_row(grant, fingerprint),
        )

    def grant(self, grant_id: str) -> Grant | None:
        rows = self._query("SELECT * FROM ionwall_grants WHERE id=%s", (grant_id,))
        return _grant(rows[0]) if rows else None

    def grants(self) -> list[Grant]:
        rows = self._query("SELECT * FROM ionwall_grants ORDER BY created_at, id")
        return [_grant(r) for r in rows]

    def live_grant_for(self, fingerprint: str, now: float) -> Grant | None:
        rows = self._query(
            "SELECT * FROM ionwall_grants WHERE fingerprint=%s AND revoked_at IS NULL "
            "AND expires_at>%s ORDER BY expires_at DESC LIMIT 1",
            (fingerprint, now),
        )
        return _grant(rows[0]) if rows else None

    # -- published keys ------------------------------------------------------

    def publish_key(self, key: Ed25519PublicKey) -> None:
        """Publishes this host's public key (its tokens and checkpoints carry its kid).

        A kid already published under another key is refused: someone
        replaced it, and tokens and audit chains signed by this host would
        then be checked against the wrong key."""
        kid, text = key_id(key), encode_public_key(key)
        rows = self._query(
            "INSERT INTO ionwall_keys (kid, public_key, host, published_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (kid) DO UPDATE SET kid=EXCLUDED.kid "
            "RETURNING public_key",
            (kid, text, socket.gethostname(), time.time()),
        )
        if rows and rows[0]["public_key"] != text:
            raise StoreError(
                f"{self.db.where}: the key published for kid {kid} is not this host's "
                f"({rows[0]['public_key']} instead of {text}): it was replaced; "
                "restore it in ionwall_keys"
            )

    def public_key(self, kid: str) -> Ed25519PublicKey | None:
        """The key a host published under ``kid`` (None: no such host)."""
        rows = self._query("SELECT public_key FROM ionwall_keys WHERE kid=%s", (kid,))
        if not rows:
            return None
        try:
            return decode_public_key(rows[0]["public_key"])
        except ValueError:
            return None

    def hosts(self) -> dict[str, str]:
        """kid -> host name of every published key."""
        return {r["kid"]: r["host"] for r in self._query("SELECT kid, host FROM ionwall_keys")}


class RevocationFeed:
    """One host's view of the cluster's revocations: LISTEN, catch up, heartbeat.

    ``stamp`` is read by the gate on every call; ``lost()`` says (from memory)
    whether the feed has been silent for longer than ``bound``. The thread
    that follows the feed is the only writer of both."""

    def __init__(
        self,
        db: Database,
        *,
        bound: float = DEFAULT_FEED_BOUND_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if bound <= 0:
            raise ValueError(f"the revocation feed's bound must be positive, not {bound}")
        self._db = db
        self.bound = bound
        self._monotonic = monotonic
        self._heartbeat = min(1.0, bound / 4)
        self._retry = min(0.5, bound / 4)
        self.stamp = b"\0"
        self._generation = 0
        self.seen = 0  # the last revocation seq applied
        self._deadline = float("-inf")
        self._lost_at: float | None = None
        self.problem = "the revocation feed has not connected yet"
        self.connected = False
        self._changed = threading.Condition()
        self._closed = False
        self.id = f"{socket.gethostname()}-{secrets.token_hex(6)}"  # its row in ionwall_feeds
        # close() wakes the thread with a notice on a channel only it listens to
        self._wake_channel = f"ionwall_feed_{secrets.token_hex(8)}"
        self._conn = self._connect()  # the first catch-up: open, or StoreError
        self._thread = threading.Thread(
            target=self._follow, name="ionwall-revocations", daemon=True
        )
        self._thread.start()

    # -- the hot path --------------------------------------------------------

    def lost(self) -> RevocationFeedLost | None:
        """None while the feed is current; else why the host must deny."""
        now = self._monotonic()
        if now < self._deadline:
            return None
        since = self._lost_at if self._lost_at is not None else self._deadline - self.bound
        return RevocationFeedLost(self.bound, max(0.0, now - since), self.problem)

    # -- what the thread does ------------------------------------------------

    def bump(self) -> None:
        with self._changed:
            self._generation += 1
            self.stamp = self._generation.to_bytes(8, "little")
            self._changed.notify_all()

    def _connect(self, *, again: bool = False) -> psycopg.Connection[Any]:
        """A connection LISTENing, caught up; ``again``: after a loss, when the
        stamp moves whatever the rows say (see ``_catch_up``)."""
        with translate(f"{self._db.where}: cannot follow the revocation feed"):
            conn = psycopg.connect(
                self._db.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                # a half-open connection (a cut cable) fails in about the bound
                tcp_user_timeout=max(1000, int(self.bound * 1000)),
                keepalives=1,
                keepalives_idle=max(1, int(self.bound)),
                keepalives_interval=1,
                keepalives_count=2,
            )
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                conn.execute(f"LISTEN {self._wake_channel}")
                conn.execute(
                    f"DELETE FROM ionwall_feeds WHERE beat < {_DB_NOW} - %s",
                    (_FEEDS_PRUNED_AFTER_S,),
                )
                conn.execute(
                    "INSERT INTO ionwall_feeds (id, host, seen, beat, bound) "
                    f"VALUES (%s, %s, 0, {_DB_NOW}, %s) ON CONFLICT (id) DO NOTHING",
                    (self.id, socket.gethostname(), self.bound),
                )
                self._catch_up(conn, moved=again)  # after LISTEN: nothing falls between
            except BaseException:
                conn.close()
                raise
        return conn

    def _catch_up(self, conn: psycopg.Connection[Any], *, moved: bool = False) -> None:
        """Reads the revocations after ``seen``: the stamp moves if there are any
        (or if ``moved``), and the feed is current again.

        ``seen`` comes from rows only, never from a notice's payload: anyone who
        can log in to the database can send a notice. A notice only moves the
        stamp, which makes the gate read grants afresh: what it reads is the
        truth, whoever sent the notice."""
        rows = conn.execute(
            "SELECT seq FROM ionwall_revocations WHERE seq > %s ORDER BY seq", (self.seen,)
        ).fetchall()
        with self._changed:
            if rows:
                self.seen = max(self.seen, int(rows[-1][0]))
            if rows or moved:
                self._generation += 1
                self.stamp = self._generation.to_bytes(8, "little")
            seen = self.seen
            fresh = self._monotonic()
        # Applied: say so (a revoke waits for it). The beat is taken after the
        # host's own clock started its bound: the database never thinks a host
        # current that its own clock already holds to be silent.
        conn.execute(
            f"UPDATE ionwall_feeds SET seen=%s, beat={_DB_NOW} WHERE id=%s", (seen, self.id)
        )
        with self._changed:
            self._deadline = fresh + self.bound
            self._lost_at = None
            self.connected = True
            self.problem = ""
            self._changed.notify_all()

    def _follow(self) -> None:
        conn: psycopg.Connection[Any] | None = self._conn
        while not self._closed:
            if conn is None:
                try:
                    # Whatever cut the feed may have cut the pool's idle connections
                    # too: drop the broken ones before the host is current again,
                    # rather than fail a caller later.
                    with contextlib.suppress(psycopg.Error):
                        self._db.pool.check()
                    conn = self._connect(again=True)
                    log.info("revocation feed: caught up again at seq %d", self.seen)
                except StoreError as exc:
                    self._down(str(exc.__cause__ or exc))
                    with self._changed:
                        self._changed.wait(self._retry)
                    continue
            try:
                for note in conn.notifies(timeout=self._heartbeat, stop_after=1):
                    if self._closed:
                        return self._end(conn)
                    if note.channel == CHANNEL:
                        # Sent at commit: the gate's next read sees the revocation.
                        self.bump()
                self._catch_up(conn)  # after a notice, or as the heartbeat
            except psycopg.Error as exc:
                if self._closed:
                    break
                self._down(f"the connection to {self._db.where} failed: {exc}")
                log.warning("revocation feed lost: %s", exc)
                conn.close()
                conn = None
        self._end(conn)

    def _end(self, conn: psycopg.Connection[Any] | None) -> None:
        if conn is not None:
            conn.close()

    def _down(self, problem: str) -> None:
        with self._changed:
            if self.connected:
                self._lost_at = self._monotonic()
            self.connected = False
            self.problem = problem
            self._changed.notify_all()

    # -- for tests, benchmarks and shutdown ----------------------------------

    def wait(self, condition: Callable[[RevocationFeed], bool], timeout: float) -> bool:
        """Waits until ``condition(self)`` holds (checked whenever the feed changes)."""
        with self._changed:
            return self._changed.wait_for(lambda: condition(self), timeout)

    def await_hosts(self, seq: int, timeout: float) -> list[str]:
        """Waits until every other feed has seen revocation ``seq`` or has been
        silent past its own bound (so its host denies everything); returns
        the ids of feeds that did neither within ``timeout``.

        Polled (a revocation is rare, its wait short): at 1 ms, then less often."""
        until = time.monotonic() + timeout
        pause = 0.001
        while True:
            with self._db.connection("cannot read the hosts' feeds") as conn:
                behind = [
                    str(r[0])
                    for r in conn.execute(
                        "SELECT id FROM ionwall_feeds WHERE id <> %s AND seen < %s "
                        f"AND beat > {_DB_NOW} - bound",
                        (self.id, seq),
                    )
                ]
            if not behind or time.monotonic() >= until:
                return behind
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def latest(self) -> int:
        """The last revocation seq in the database (a query, not the hot path)."""
        with self._db.connection("cannot read the revocations") as conn:
            row = conn.execute("SELECT coalesce(max(seq), 0) FROM ionwall_revocations").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._closed = True
        with self._changed:
            self._changed.notify_all()
        try:
            with self._db.connection("cannot wake the revocation feed") as conn:
                conn.execute("DELETE FROM ionwall_feeds WHERE id=%s", (self.id,))
                conn.execute("SELECT pg_notify(%s, '')", (self._wake_channel,))
        except StoreError:
            pass  # the database is gone: the thread ends at its next heartbeat
        self._thread.join(timeout=self._heartbeat + CONNECT_TIMEOUT_S)
