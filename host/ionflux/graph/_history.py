"""Run history in SQLite, after the seeds' ``runs`` and ``run_steps`` tables.

A run row is written when the run starts (status ``running``) and updated
when it ends; a step row when the step ends. A host that dies mid-run leaves
rows ``running``: ``recover()`` (called when a history is opened) marks the
ones whose owning process is gone as ``interrupted``; ``Engine.rerun`` starts
them again from their recorded graph version and input.

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
from typing import Any

from .._errors import DataDirError
from .._sqlite import Checkpointer, open_database, read_only, transaction

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
    owner_pid INTEGER NOT NULL
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
    child_run_id TEXT
);
CREATE INDEX IF NOT EXISTS run_steps_run ON run_steps (run_id);
"""

PREVIEW_CHARS = 200
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

    @property
    def duration_s(self) -> float | None:
        return None if self.end_time is None else self.end_time - self.start_time


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

    @property
    def duration_s(self) -> float | None:
        if self.start_time is None or self.end_time is None:
            return None
        return self.end_time - self.start_time


class RunHistory:
    """The ``runs`` and ``run_steps`` tables of one SQLite file; thread-safe."""

    def __init__(self, path: Path, *, recover: bool = True):
        self.path = path
        # NORMAL: fast enough to record every step as it ends (see open_database).
        self._db = open_database(path, _SCHEMA, autocheckpoint=False)
        self._lock = threading.Lock()
        # On a read-only data directory (``_sqlite.read_only``) the history can
        # be listed and shown; recording a run raises ``DataDirError``.
        self.read_only = read_only(path.parent)
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
    ) -> None:
        """Closes the run, writing its last ``steps`` in the same transaction;
        ``start``: the run's row from ``start_run(write=False)``, not written yet."""
        with self._tx() as db:
            if start is not None:
                _insert_run(db, start)
            _insert_steps(db, steps)
            db.execute(
                "UPDATE runs SET status=?, end_time=?, output_preview=?, output_cid=?,"
                " error_details_json=?, fuel_used=?, step_results_summary_cid=? WHERE run_id=?",
                (
                    status,
                    end_time,
                    output_preview,
                    output_cid,
                    _dump(error_details),
                    fuel_used,
                    step_results_summary_cid,
                    run_id,
                ),
            )

    def record_steps(self, steps: Sequence[StepRecord]) -> None:
        with self._tx() as db:
            _insert_steps(db, steps)

    def recover(self) -> list[str]:
        """Marks ``interrupted`` the runs left ``running`` by a process that is gone."""
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, owner_host, owner_pid FROM runs WHERE status='running'"
            ).fetchall()
        dead = [
            run_id
            for run_id, owner_host, pid in rows
            if owner_host == self._host and not _alive(int(pid))
        ]
        if dead:
            with self._tx() as db:
                db.executemany(
                    "UPDATE runs SET status='interrupted', error_details_json=? "
                    "WHERE run_id=? AND status='running'",
                    [(_dump([_interrupted()]), run_id) for run_id in dead],
                )
        return dead

    # -- reading ---------------------------------------------------------------

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


_RUN_COLUMNS = (
    "run_id, graph_name, graph_version, graph_cid, parent_run_id, parent_node_id, trigger_type,"
    " trigger_details_json, mode, status, start_time, end_time, input_preview, input_cid,"
    " input_json, output_preview, output_cid, error_details_json, fuel_used,"
    " step_results_summary_cid"
)


def _run(row: tuple[Any, ...]) -> RunRecord:
    values = list(row)
    for index in (7, 14, 17):
        values[index] = json.loads(values[index]) if values[index] is not None else None
    return RunRecord(*values)


# The columns of a run's row as start_run writes it (status ``running``).
RunRow = tuple[Any, ...]


def _insert_run(db: sqlite3.Connection, row: RunRow) -> None:
    db.execute(
        "INSERT INTO runs (run_id, graph_name, graph_version, graph_cid, parent_run_id,"
        " parent_node_id, trigger_type, trigger_details_json, mode, status, start_time,"
        " input_preview, input_cid, input_json, owner_host, owner_pid)"
        " VALUES (?,?,?,?,?,?,?,?,?,'running',?,?,?,?,?,?)",
        row,
    )


def _insert_steps(db: sqlite3.Connection, steps: Sequence[StepRecord]) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO run_steps VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
            )
            for s in steps
        ],
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
    )


def _dump(value: Any) -> str | None:
    return None if value is None else _ASCII.encode(value)


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
