"""Run history in SQLite, after the seeds' ``runs`` and ``run_steps`` tables.

A run row is written when the run is accepted (status ``accepted``, before
anyone is told) or starts (``running``) and updated when it ends; a step row
when the step ends (with its real outputs, to resume from), or before it
starts for a node that is not idempotent. Each row carries a run key (unique:
a second request with it finds the run) and a lease (owner, expiry). A host
that dies mid-run leaves rows open: ``orphans()`` lists the top-level runs
nobody drives (lease run out, or owning process on this machine gone) and
``claim()`` takes one over (compare-and-set), for ``Engine.resume``;
``recover()`` (called when a history is opened) marks ``interrupted`` only the
ones that cannot be resumed (sub-runs, debugger and dry runs). An older
database gains the new columns when it is opened.

Run ids are time-sortable (ULID: 48-bit milliseconds, 80 random bits,
Crockford base32), so ``ORDER BY run_id`` is start order.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ionwall import read_only

from .._errors import DataDirError, StateConflict
from .._sqlite import Checkpointer, open_database, transaction

if TYPE_CHECKING:
    from ..state import PgDatabase

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    graph_name TEXT NOT NULL,
    graph_version TEXT NOT NULL,
    graph_cid TEXT NOT NULL,
    parent_run_id TEXT,
    parent_node_id TEXT,
    trigger_type TEXT NOT NULL,
    trigger_details_json TEXT,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL,
    input_preview TEXT,
    input_cid TEXT,
    input_json TEXT,
    output_preview TEXT,
    output_cid TEXT,
    error_details_json TEXT,
    fuel_used INTEGER NOT NULL DEFAULT 0,
    step_results_summary_cid TEXT,
    owner_host TEXT NOT NULL,
    owner_pid INTEGER NOT NULL,
    run_key TEXT,
    lease_owner TEXT,
    lease_expires REAL,
    output_json TEXT,
    wake_at REAL,
    consent_id TEXT,
    control TEXT,
    overrides_json TEXT
);
CREATE INDEX IF NOT EXISTS runs_graph ON runs (graph_name, run_id);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, run_id);
CREATE TABLE IF NOT EXISTS run_steps (
    step_run_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    node_id TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    start_time REAL,
    end_time REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    inputs_preview TEXT,
    inputs_cid TEXT,
    outputs_preview TEXT,
    outputs_cid TEXT,
    error_message TEXT,
    error_json TEXT,
    fuel_used INTEGER NOT NULL DEFAULT 0,
    child_run_id TEXT,
    outputs_json TEXT,
    cached INTEGER NOT NULL DEFAULT 0,
    cache_key TEXT
);
CREATE INDEX IF NOT EXISTS run_steps_run ON run_steps (run_id);
CREATE TABLE IF NOT EXISTS content_cache (
    seq INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    step_run_id TEXT NOT NULL
);
"""

# Columns added since the first schema: an older database gains them when opened.
_ADDED = {
    "runs": (
        ("run_key", "TEXT"),
        ("lease_owner", "TEXT"),
        ("lease_expires", "REAL"),
        ("output_json", "TEXT"),
        ("wake_at", "REAL"),
        ("consent_id", "TEXT"),
        ("control", "TEXT"),
        ("overrides_json", "TEXT"),
    ),
    "run_steps": (
        ("outputs_json", "TEXT"),
        ("cached", "INTEGER NOT NULL DEFAULT 0"),
        ("cache_key", "TEXT"),
    ),
}
_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS runs_key ON runs (run_key) WHERE run_key IS NOT NULL;
"""

# Statuses of a run that has not ended: it is resumed if its driver is gone.
OPEN = ("accepted", "running")
ENDED_NOT = "status IN ('accepted','running')"
# Statuses of a run that waits, recorded, and that nobody drives meanwhile: for the
# owner's consent (``awaiting_approval``), a timer (``waiting``) or an operator
# (``paused``). ``Engine.wake`` and the operator controls reopen them.
SUSPENDED = ("awaiting_approval", "waiting", "paused")

PREVIEW_CHARS = 200
# Content-cache entries kept (``graph.content_cache_entries``); past it, the oldest go.
CONTENT_CACHE_ENTRIES = 10_000
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ulid_lock = threading.Lock()
_ulid_last = [0, 0]


def new_run_id() -> str:
    """A ULID; monotonic within this process even inside one millisecond."""
    with _ulid_lock:
        ms = int(time.time() * 1000)
        if ms <= _ulid_last[0]:
            ms = _ulid_last[0]
            rand = _ulid_last[1] + 1
        else:
            rand = secrets.randbits(80)
        _ulid_last[0], _ulid_last[1] = ms, rand
    value = (ms << 80) | (rand & ((1 << 80) - 1))
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


# Built once: ``json.dumps`` with options builds a new encoder per call.
_TEXT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)
_ASCII = json.JSONEncoder(separators=(",", ":"), default=str)


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    return _shorten(_TEXT.encode(value), limit)


def _shorten(text: str, limit: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    graph_name: str
    graph_version: str
    graph_cid: str
    parent_run_id: str | None
    parent_node_id: str | None
    trigger_type: str
    trigger_details: dict[str, Any] | None
    mode: str
    status: str
    start_time: float
    end_time: float | None
    input_preview: str | None
    input_cid: str | None
    input: Any
    output_preview: str | None
    output_cid: str | None
    error_details: list[dict[str, Any]] | None
    fuel_used: int
    step_results_summary_cid: str | None
    run_key: str | None = None
    output: Any = None  # the real output (not masked), kept for a repeated request
    lease_owner: str | None = None
    lease_expires: float | None = None
    wake_at: float | None = None  # a waiting run's timer; an awaiting one's expiry
    consent_id: str | None = None  # the consent an ``awaiting_approval`` run waits for
    control: str | None = None  # pause | cancel, asked of the host driving the run
    overrides: dict[str, Any] | None = None  # node id -> input, from a retry

    @property
    def duration_s(self) -> float | None:
        return None if self.end_time is None else self.end_time - self.start_time

    @property
    def ended(self) -> bool:
        """Not driven, and nobody takes it over (a suspended run is reopened instead)."""
        return self.status not in OPEN

    @property
    def suspended(self) -> bool:
        return self.status in SUSPENDED


@dataclass(frozen=True, slots=True)
class StepRecord:
    step_run_id: str
    run_id: str
    node_id: str
    target: str
    status: str
    start_time: float | None
    end_time: float | None
    attempts: int
    inputs_preview: str | None
    inputs_cid: str | None
    outputs_preview: str | None
    outputs_cid: str | None
    error_message: str | None
    error: dict[str, Any] | None
    fuel_used: int
    child_run_id: str | None
    outputs_json: str | None = None  # the real outputs of a done step, to resume from
    cached: bool = False  # its outputs were reused from an earlier step (``cache: content``)
    # A content-cache key (a digest): this step's outputs answer later calls with it.
    cache_key: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.start_time is None or self.end_time is None:
            return None
        return self.end_time - self.start_time


class RunHistory:
    """The ``runs`` and ``run_steps`` tables of one SQLite file; thread-safe."""

    def __init__(self, path: Path, *, recover: bool = True):
        self.path = path
        # How many content-cache entries are kept (the engine sets its config's).
        self.content_cache_entries = CONTENT_CACHE_ENTRIES
        # NORMAL: fast enough to record every step as it ends (see open_database).
        self._db = open_database(path, _SCHEMA, autocheckpoint=False)
        self.read_only = read_only(path.parent)
        if not self.read_only:
            _migrate(self._db)
        self._lock = threading.Lock()
        # On a read-only data directory (``_sqlite.read_only``) the history can
        # be listed and shown; recording a run raises ``DataDirError``.
        self._write_lock = -1
        self._checkpointer: Checkpointer | None = None
        if not self.read_only:
            # Writers of this file in other processes (the workers of `ionflux up
            # --workers`) queue on this lock file before SQLite's write lock: a
            # waiter wakes the moment the lock is free, where SQLite's own busy wait
            # sleeps 1, 2, 5, 10, 15... ms between tries (and stalls the event loop).
            lock_path = path.with_name(path.name + ".lock")
            self._write_lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._checkpointer = Checkpointer(path, lock_path=lock_path)
        self._host = socket.gethostname()
        if recover and not self.read_only:
            self.recover()

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """This process's lock, then every process's; for one write transaction."""
        if self._checkpointer is None:
            raise DataDirError(f"{self.path}: cannot record a run: the data directory is read-only")
        with self._lock:
            fcntl.flock(self._write_lock, fcntl.LOCK_EX)
            try:
                yield self._db
            finally:
                fcntl.flock(self._write_lock, fcntl.LOCK_UN)
            self._checkpointer.committed()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            os.close(self._write_lock)
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._writing() as db, transaction(db):
            yield db

    # -- writing ---------------------------------------------------------------

    def start_run(
        self,
        *,
        run_id: str,
        graph_name: str,
        graph_version: str,
        graph_cid: str,
        trigger_type: str,
        trigger_details: dict[str, Any] | None,
        mode: str,
        start_time: float,
        input: Any,
        input_cid: str | None,
        parent_run_id: str | None = None,
        parent_node_id: str | None = None,
        input_text: str | None = None,
        input_shown: str | None = None,
        write: bool = True,
        run_key: str | None = None,
        lease: tuple[str, float] | None = None,
        status: str = "running",
    ) -> RunRow:
        """Writes the run's row (status ``running``), committed before it returns.
        With ``write=False`` only returns the row, for ``finish_run(start=...)`` (a
        short run's rows are written in one transaction).

        ``input_text``: ``input`` already encoded as compact JSON with
        ``ensure_ascii=False`` (the recorder's ``json_text``), so it is not encoded
        again. ``input_shown``: the masked text the preview is cut from (default:
        ``input_text``). The stored input itself is kept unmasked, in the owner's
        data directory, so that ``ionflux runs rerun`` replays the real input.
        """
        if input_text is None:
            input_json = _dump(input)
            input_preview = _shorten(input_shown) if input_shown is not None else preview(input)
        else:
            input_preview = _shorten(input_shown if input_shown is not None else input_text)
            # The stored JSON is ASCII-escaped (``_dump``): the same text when it is ASCII.
            input_json = input_text if input_text.isascii() else _dump(input)
        row = (
            run_id,
            graph_name,
            graph_version,
            graph_cid,
            parent_run_id,
            parent_node_id,
            trigger_type,
            _dump(trigger_details),
            mode,
            start_time,
            input_preview,
            input_cid,
            input_json,
            self._host,
            os.getpid(),
            run_key,
            lease[0] if lease else None,
            lease[1] if lease else None,
            status,
        )
        if write:
            self.write_start(row)
        return row

    def write_start(self, row: RunRow) -> None:
        """Writes a run's row made by ``start_run(write=False)``. One statement in
        autocommit mode is its own transaction, without an explicit BEGIN/COMMIT."""
        with self._writing() as db:
            _insert_run(db, row)

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        end_time: float,
        output_preview: str | None,
        output_cid: str | None,
        error_details: list[dict[str, Any]] | None,
        fuel_used: int,
        step_results_summary_cid: str | None,
        steps: Sequence[StepRecord] = (),
        start: RunRow | None = None,
        output: Any = None,
        forget_key: bool = False,
    ) -> bool:
        """Closes the run, writing its last ``steps`` in the same transaction;
        ``start``: the run's row from ``start_run(write=False)``, not written yet.
        A run is closed once: False when it had ended already (another host that
        took it over closed it), and nothing is written. ``forget_key``: the run
        does not hold its run key any more (a later request with it starts anew)."""
        try:
            with self._tx() as db:
                self._close_run(
                    db,
                    run_id,
                    start,
                    steps,
                    self.content_cache_entries,
                    (
                        status,
                        end_time,
                        output_preview,
                        output_cid,
                        _dump(error_details),
                        fuel_used,
                        step_results_summary_cid,
                        None if output is None else _dump(output),
                        int(forget_key),
                        run_id,
                    ),
                )
        except _Closed:
            return False
        return True

    @staticmethod
    def _close_run(
        db: Any,
        run_id: str,
        start: RunRow | None,
        steps: Sequence[StepRecord],
        cap: int,
        values: tuple[Any, ...],
    ) -> None:
        if start is not None and not values[8] and start[_STATUS] in ("accepted", "running"):
            # A short run, never written: its row goes in closed, one statement
            # rather than an insert and the update below (which would match it).
            _insert_closed_run(db, start, values)
            _insert_steps(db, steps, cap)
            return
        if start is not None:
            _insert_run(db, start)
        _insert_steps(db, steps, cap)
        cursor = db.execute(
            "UPDATE runs SET status=?, end_time=?, output_preview=?, output_cid=?,"
            " error_details_json=?, fuel_used=?, step_results_summary_cid=?, output_json=?,"
            " run_key=CASE WHEN ? THEN NULL ELSE run_key END,"
            f" lease_expires=NULL WHERE run_id=? AND {ENDED_NOT}",
            values,
        )
        if cursor.rowcount == 0:
            raise _Closed(run_id)  # rolls the transaction back

    def record_steps(self, steps: Sequence[StepRecord]) -> None:
        with self._tx() as db:
            _insert_steps(db, steps, self.content_cache_entries)

    # -- durable runs ------------------------------------------------------------

    def accept(self, row: RunRow) -> RunRecord | None:
        """Writes a run's row (made by ``start_run(write=False, status="accepted")``),
        committed before it returns. None when written; the run already recorded
        under the same run key when there is one (nothing is written)."""
        try:
            self.write_start(row)
        except (sqlite3.IntegrityError, StateConflict):
            key = row[_KEY]
            found = self.find_key(key) if key is not None else None
            if found is None:
                raise
            return found
        return None

    def find_key(self, run_key: str) -> RunRecord | None:
        with self._lock:
            found = self._db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_key=?", (run_key,)
            ).fetchone()
        return None if found is None else _run(found)

    def claim(self, run_id: str, owner: str, expires: float, *, now: float) -> bool:
        """Takes over the lease of a run that has not ended if its lease ran out, its
        owning process on this machine is gone, or it is ``owner``'s already.
        Compare-and-set: of hosts claiming together exactly one wins."""
        record = self.get(run_id)
        if record is None or record.ended:
            return False
        if not self.orphaned(record, now=now) and record.lease_owner != owner:
            return False
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE runs SET lease_owner=?, lease_expires=?, owner_host=?, owner_pid=?"
                f" WHERE run_id=? AND lease_owner IS ? AND {ENDED_NOT}",
                (owner, expires, self._host, os.getpid(), run_id, record.lease_owner),
            )
            return cursor.rowcount == 1

    def orphaned(self, record: RunRecord, *, now: float) -> bool:
        """Whether nobody drives ``record`` any more (see ``claim``)."""
        if record.ended:
            return False
        if record.lease_expires is not None and record.lease_expires < now:
            return True
        with self._lock:
            found = self._db.execute(
                "SELECT owner_host, owner_pid FROM runs WHERE run_id=?", (record.run_id,)
            ).fetchone()
        return found is not None and found[0] == self._host and not _alive(int(found[1]))

    def renew(self, run_ids: Sequence[str], owner: str, expires: float) -> None:
        """Pushes the lease of the runs ``owner`` drives to ``expires``."""
        if not run_ids:
            return
        with self._tx() as db:
            db.executemany(
                f"UPDATE runs SET lease_expires=? WHERE run_id=? AND lease_owner=? AND {ENDED_NOT}",
                [(expires, run_id, owner) for run_id in run_ids],
            )

    def release(self, run_ids: Sequence[str], owner: str) -> None:
        """Gives the runs back (a graceful stop): the next host resumes them at once."""
        if not run_ids:
            return
        with self._tx() as db:
            db.executemany(
                f"UPDATE runs SET lease_expires=0 WHERE run_id=? AND lease_owner=? AND {ENDED_NOT}",
                [(run_id, owner) for run_id in run_ids],
            )

    def release_owner(self, owner: str) -> None:
        """Gives back every open run ``owner`` holds (a graceful stop's end)."""
        with self._tx() as db:
            db.execute(
                f"UPDATE runs SET lease_expires=0 WHERE lease_owner=? AND {ENDED_NOT}", (owner,)
            )

    def mark_running(self, run_id: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET status='running' WHERE run_id=? AND status='accepted'", (run_id,)
            )

    def orphans(self, *, now: float) -> list[RunRecord]:
        """Top-level runs that have not ended and that nobody drives, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE {ENDED_NOT} AND parent_run_id IS NULL"
                " AND mode='run_all' ORDER BY run_id"
            ).fetchall()
        return [r for r in map(_run, rows) if self.orphaned(r, now=now)]

    def recover(self) -> list[str]:
        """Marks ``interrupted`` the runs left open by a process that is gone and that
        cannot be resumed: sub-runs (their parent's node runs again) and runs of the
        debugger or of a dry run. Top-level ``run_all`` runs stay open: the next host
        that looks (``Engine.resume_orphans``) resumes them."""
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, owner_host, owner_pid, parent_run_id, mode FROM runs"
                f" WHERE {ENDED_NOT}"
            ).fetchall()
        dead = [
            run_id
            for run_id, owner_host, pid, parent, mode in rows
            if owner_host == self._host
            and not _alive(int(pid))
            and (parent is not None or mode != "run_all")
        ]
        if dead:
            with self._tx() as db:
                db.executemany(
                    "UPDATE runs SET status='interrupted', error_details_json=? "
                    f"WHERE run_id=? AND {ENDED_NOT}",
                    [(_dump([_interrupted()]), run_id) for run_id in dead],
                )
        return dead

    # -- waiting runs and operator controls ---------------------------------------

    def suspend(
        self,
        run_id: str,
        *,
        status: str,
        error_details: list[dict[str, Any]] | None,
        wake_at: float | None,
        consent_id: str | None = None,
        steps: Sequence[StepRecord] = (),
        start: RunRow | None = None,
    ) -> bool:
        """Records a driven run as waiting (``SUSPENDED``), its lease released and its
        run key kept, with the steps it ended so far; one transaction. False when
        it was not driven any more (another host closed it)."""
        try:
            with self._tx() as db:
                if start is not None:
                    _insert_run(db, start)
                _insert_steps(db, steps, self.content_cache_entries)
                cursor = db.execute(
                    "UPDATE runs SET status=?, error_details_json=?, wake_at=?, consent_id=?,"
                    " control=NULL, lease_owner=NULL, lease_expires=NULL"
                    f" WHERE run_id=? AND {ENDED_NOT}",
                    (status, _dump(error_details), wake_at, consent_id, run_id),
                )
                if cursor.rowcount == 0:
                    raise _Closed(run_id)
        except _Closed:
            return False
        return True

    def waiting(self) -> list[RunRecord]:
        """Top-level runs waiting for a consent or a timer, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE status IN ('awaiting_approval','waiting')"
                " AND parent_run_id IS NULL ORDER BY run_id"
            ).fetchall()
        return [_run(r) for r in rows]

    def reopen(
        self,
        run_id: str,
        statuses: Sequence[str],
        *,
        redo: Sequence[str] = (),
        overrides: dict[str, Any] | None = None,
    ) -> bool:
        """Compare-and-set from one of ``statuses`` back to ``accepted``, given back
        (lease run out): the next host that looks resumes it from its first step not
        done. Steps not done (failed, cancelled, in flight) and the ``redo`` nodes
        are marked ``retried``: they run again, and a non-idempotent one in flight
        no longer stops the run. ``overrides``: node id -> the input it runs with."""
        marks = ",".join("?" for _ in statuses)
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE runs SET status='accepted', end_time=NULL, error_details_json=NULL,"
                " wake_at=NULL, consent_id=NULL, control=NULL, lease_owner=NULL,"
                " lease_expires=0, overrides_json=COALESCE(?, overrides_json)"
                f" WHERE run_id=? AND status IN ({marks})",
                (_dump(overrides), run_id, *statuses),
            )
            if cursor.rowcount == 0:
                return False
            db.execute(
                "UPDATE run_steps SET status='retried' WHERE run_id=?"
                " AND status NOT IN ('success','skipped','waiting')",
                (run_id,),
            )
            db.executemany(
                "UPDATE run_steps SET status='retried' WHERE run_id=? AND node_id=?",
                [(run_id, node) for node in redo],
            )
        return True

    def end(
        self,
        run_id: str,
        statuses: Sequence[str],
        status: str,
        error_details: list[dict[str, Any]] | None,
        *,
        now: float,
    ) -> bool:
        """Compare-and-set: ends a run that nobody drives (waiting, paused, ...)."""
        marks = ",".join("?" for _ in statuses)
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE runs SET status=?, end_time=?, error_details_json=?, wake_at=NULL,"
                " control=NULL, lease_expires=NULL"
                f" WHERE run_id=? AND status IN ({marks})",
                (status, now, _dump(error_details), run_id, *statuses),
            )
            return cursor.rowcount == 1

    def request_control(self, run_id: str, action: str) -> bool:
        """Asks the host driving ``run_id`` to pause or cancel it (it reads this
        when it renews its leases). False when the run is not driven."""
        with self._tx() as db:
            cursor = db.execute(
                f"UPDATE runs SET control=? WHERE run_id=? AND {ENDED_NOT}", (action, run_id)
            )
            return cursor.rowcount == 1

    def controls(self, owner: str) -> list[tuple[str, str]]:
        """(run id, action) asked of the runs ``owner`` drives."""
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, control FROM runs WHERE lease_owner=? AND control IS NOT NULL"
                f" AND {ENDED_NOT}",
                (owner,),
            ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    # -- reading ---------------------------------------------------------------

    def cached_outputs(self, key: str) -> str | None:
        """The real outputs (JSON text) of the step recorded under content-cache ``key``,
        if it is still there with that key (a row rewritten since has another)."""
        with self._lock:
            found = self._db.execute(
                "SELECT s.outputs_json FROM content_cache c JOIN run_steps s"
                " ON s.step_run_id = c.step_run_id AND s.cache_key = c.key"
                " WHERE c.key=? AND s.outputs_json IS NOT NULL",
                (key,),
            ).fetchone()
        return None if found is None else str(found[0])

    def get(self, run_id: str) -> RunRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id=?", (run_id,))
            found = row.fetchone()
        return None if found is None else _run(found)

    def find(self, prefix: str) -> RunRecord | None:
        """A run by its id or an unambiguous prefix of it."""
        exact = self.get(prefix)
        if exact is not None or len(prefix) < 4:
            return exact
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id LIKE ? LIMIT 2", (prefix + "%",)
            ).fetchall()
        return _run(rows[0]) if len(rows) == 1 else None

    def list_runs(
        self,
        *,
        graph: str | None = None,
        status: str | None = None,
        limit: int = 50,
        include_children: bool = True,
    ) -> list[RunRecord]:
        """Newest first."""
        where, args = [], []
        if graph:
            where.append("graph_name=?")
            args.append(graph)
        if status:
            where.append("status=?")
            args.append(status)
        if not include_children:
            where.append("parent_run_id IS NULL")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs {clause} ORDER BY run_id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [_run(r) for r in rows]

    def steps(self, run_id: str) -> list[StepRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM run_steps WHERE run_id=? ORDER BY start_time IS NULL, start_time,"
                " step_run_id",
                (run_id,),
            ).fetchall()
        return [_step(r) for r in rows]


class SharedRunHistory(RunHistory):
    """The run history in a PostgreSQL database every host of a cluster shares
    (``state.backend: postgres``): the same tables and SQL as the SQLite file
    (``ionflux.state`` runs it there), so a run any host recorded is listed, shown,
    resumed and re-run on every host. Leases and compare-and-set claims work as
    they do between the workers of one machine; a run whose owner died on another
    machine is taken over when its lease runs out."""

    def __init__(self, database: PgDatabase, *, recover: bool = True) -> None:
        self.path = Path(database.url.rsplit("/", 1)[-1] or "state")
        self.content_cache_entries = CONTENT_CACHE_ENTRIES
        self._db = database  # type: ignore[assignment]
        self._shared = database
        self.read_only = False
        self._lock = threading.Lock()
        self._write_lock = -1
        self._checkpointer = None
        self._host = _machine()
        if recover:
            self.recover()

    @contextmanager
    def _writing(self) -> Iterator[Any]:
        yield self._shared  # one statement: its own transaction (autocommit)

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._shared.transaction() as tx:
            yield tx

    def close(self) -> None:
        """The database is the host's (``Host.close`` closes it)."""


_RUN_COLUMNS = (
    "run_id, graph_name, graph_version, graph_cid, parent_run_id, parent_node_id, trigger_type,"
    " trigger_details_json, mode, status, start_time, end_time, input_preview, input_cid,"
    " input_json, output_preview, output_cid, error_details_json, fuel_used,"
    " step_results_summary_cid, run_key, output_json, lease_owner, lease_expires,"
    " wake_at, consent_id, control, overrides_json"
)


def _run(row: tuple[Any, ...]) -> RunRecord:
    values = list(row)
    for index in (7, 14, 17, 21, 27):
        values[index] = json.loads(values[index]) if values[index] is not None else None
    return RunRecord(*values)


# The columns of a run's row as start_run writes it (status ``running``).
RunRow = tuple[Any, ...]


def _insert_run(db: Any, row: RunRow) -> None:
    db.execute(
        "INSERT INTO runs (run_id, graph_name, graph_version, graph_cid, parent_run_id,"
        " parent_node_id, trigger_type, trigger_details_json, mode, start_time,"
        " input_preview, input_cid, input_json, owner_host, owner_pid, run_key, lease_owner,"
        " lease_expires, status)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        row,
    )


def _insert_closed_run(db: Any, start: RunRow, values: tuple[Any, ...]) -> None:
    """``start``'s row as ``_close_run``'s update (``values``, the run key kept)
    leaves it: lease ended, closing status and outcome."""
    status, end_time, output_preview, output_cid, errors, fuel, summary, output = values[:8]
    db.execute(
        "INSERT INTO runs (run_id, graph_name, graph_version, graph_cid, parent_run_id,"
        " parent_node_id, trigger_type, trigger_details_json, mode, start_time,"
        " input_preview, input_cid, input_json, owner_host, owner_pid, run_key, lease_owner,"
        " lease_expires, status, end_time, output_preview, output_cid, error_details_json,"
        " fuel_used, step_results_summary_cid, output_json)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            *start[:_LEASE_EXPIRES],
            None,
            status,
            end_time,
            output_preview,
            output_cid,
            errors,
            fuel,
            summary,
            output,
        ),
    )


_KEY = 15  # the run key's place in a ``RunRow``
_LEASE_EXPIRES = 17
_STATUS = 18


class _Closed(Exception):
    """The run had ended already: its closing transaction is rolled back."""


def _migrate(db: sqlite3.Connection) -> None:
    """Adds the columns an older database lacks, then the indexes over them."""
    for table, columns in _ADDED.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns:
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
    db.executescript(_INDEXES)


def _insert_steps(db: Any, steps: Sequence[StepRecord], cap: int = CONTENT_CACHE_ENTRIES) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO run_steps (step_run_id, run_id, node_id, target, status,"
        " start_time, end_time, attempts, inputs_preview, inputs_cid, outputs_preview,"
        " outputs_cid, error_message, error_json, fuel_used, child_run_id, outputs_json,"
        " cached, cache_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            (
                s.step_run_id,
                s.run_id,
                s.node_id,
                s.target,
                s.status,
                s.start_time,
                s.end_time,
                s.attempts,
                s.inputs_preview,
                s.inputs_cid,
                s.outputs_preview,
                s.outputs_cid,
                s.error_message,
                _dump(s.error),
                s.fuel_used,
                s.child_run_id,
                s.outputs_json,
                int(s.cached),
                s.cache_key,
            )
            for s in steps
        ],
    )
    entries = [
        (s.cache_key, s.step_run_id)
        for s in steps
        if s.cache_key is not None and s.status == "success" and s.outputs_json is not None
    ]
    if entries:
        _insert_cached(db, entries, cap)


def _insert_cached(db: Any, entries: list[tuple[str, str]], cap: int) -> None:
    """Content-cache entries (key, step) in the transaction of their steps' rows; past
    ``cap`` entries, the oldest go."""
    db.executemany("INSERT OR REPLACE INTO content_cache (key, step_run_id) VALUES (?,?)", entries)
    db.execute(
        "DELETE FROM content_cache WHERE seq <= (SELECT MAX(seq) FROM content_cache) - ?",
        (cap,),
    )


def _step(r: tuple[Any, ...]) -> StepRecord:
    return StepRecord(
        step_run_id=r[0],
        run_id=r[1],
        node_id=r[2],
        target=r[3],
        status=r[4],
        start_time=r[5],
        end_time=r[6],
        attempts=r[7],
        inputs_preview=r[8],
        inputs_cid=r[9],
        outputs_preview=r[10],
        outputs_cid=r[11],
        error_message=r[12],
        error=json.loads(r[13]) if r[13] else None,
        fuel_used=r[14],
        child_run_id=r[15],
        outputs_json=r[16] if len(r) > 16 else None,
        cached=bool(r[17]) if len(r) > 17 else False,
        cache_key=r[18] if len(r) > 18 else None,
    )


def _dump(value: Any) -> str | None:
    return None if value is None else _ASCII.encode(value)


def _machine() -> str:
    """Who this process's PIDs mean something to, for hosts sharing one database: the
    host name, the machine id and the PID namespace. A run whose owner is "on this
    machine" is judged by its PID (gone: taken over at once); two containers with
    one host name but separate PID namespaces must not judge each other's PIDs."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/etc/machine-id").read_text().strip()[:12])
    except OSError:
        pass
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return "/".join(parts)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _interrupted() -> dict[str, Any]:
    return {
        "kind": "interrupted",
        "message": "the host stopped while this run was running; re-run it with "
        "`ionflux runs rerun RUN_ID`",
    }
