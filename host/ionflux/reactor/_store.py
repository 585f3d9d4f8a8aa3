"""What the Reactor keeps besides IONPOD: names of plans, agents and their versions.

Plans and agent definitions are IONPOD objects (by CID); these tables index
them: which CID a plan name means now, each agent's status and its version
history (each deploy, update, retire and rollback, with the definition CID and
the graph CID it served), and the pending confirmations (an emergency plan
waiting for a person). They live in ``<data_dir>/reactor.sqlite3`` (the SQLite
backend, opened the way the graph repository opens its own) or, with
``state.backend: postgres``, in the cluster's shared database (migration 0005),
one body of SQL for both: an agent deployed through one host is listed, with its
history, on every host.

Two more tables let the health rules act once per cluster (``Reactor.evaluate``):
a lease (``take_lease``: the host holding it evaluates, another takes it once it
lapses; times from the database's clock on PostgreSQL) and each rule's state,
saved by compare-and-set on its fire count (``save_rule_states``), so of hosts
seeing one rule start firing, one records it and acts.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._sqlite import OwnOrShared, open_database
from ._health import RuleState

if TYPE_CHECKING:
    from ..state import PgDatabase

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reactor_plans (
    name TEXT NOT NULL,
    cid TEXT NOT NULL,
    version TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (name, cid)
);
CREATE TABLE IF NOT EXISTS reactor_agents (
    name TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    serving_seq INTEGER,
    pending_seq INTEGER,
    consent_id TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reactor_agent_versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    definition_cid TEXT NOT NULL,
    graph_cid TEXT NOT NULL,
    operation TEXT NOT NULL,
    state TEXT NOT NULL,
    consent_id TEXT,
    done_by TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reactor_agent_versions_name ON reactor_agent_versions (name, seq);
CREATE TABLE IF NOT EXISTS reactor_confirmations (
    id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    plan TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL,
    created_at REAL NOT NULL,
    answered_at REAL,
    run_id TEXT
);
CREATE TABLE IF NOT EXISTS reactor_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reactor_rule_states (
    rule TEXT PRIMARY KEY,
    since REAL,
    firing INTEGER NOT NULL,
    last_value REAL,
    fired_at REAL,
    fired INTEGER NOT NULL,
    evaluated_by TEXT NOT NULL,
    evaluated_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class AgentVersion:
    seq: int
    name: str
    version: str
    definition_cid: str
    graph_cid: str
    operation: str  # deploy | update | retire | rollback
    state: str  # serving | superseded | pending_consent | denied | retired
    consent_id: str | None
    by: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "name": self.name,
            "version": self.version,
            "definition_cid": self.definition_cid,
            "graph_cid": self.graph_cid,
            "operation": self.operation,
            "state": self.state,
            "consent_id": self.consent_id,
            "by": self.by,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class AgentRow:
    name: str
    status: str  # active | updating | retiring | retired
    serving_seq: int | None
    pending_seq: int | None
    consent_id: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class Confirmation:
    id: str
    rule: str
    plan: str
    status: str  # pending | confirmed | refused | started
    detail: str
    created_at: float
    answered_at: float | None
    run_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "plan": self.plan,
            "status": self.status,
            "detail": self.detail,
            "created_at": self.created_at,
            "answered_at": self.answered_at,
            "run_id": self.run_id,
        }


class ReactorStore(OwnOrShared):
    """The Reactor's tables: in ``path`` (SQLite), or in ``database`` (PostgreSQL,
    shared by a cluster; closed by who opened it)."""

    def __init__(self, path: Path | None, *, database: PgDatabase | None = None) -> None:
        self._db: Any
        self._shared = database
        if database is not None:
            self._db = database
            self._order = "seq"  # reactor_plans' insertion order (SQLite: rowid)
        else:
            assert path is not None
            self._db = open_database(path, _SCHEMA)
            self._order = "rowid"
        self._lock = threading.Lock()

    @property
    def shared(self) -> bool:
        """Whether the tables are the cluster's (PostgreSQL) rather than this host's."""
        return self._shared is not None

    # -- plans ---------------------------------------------------------------------

    def name_plan(self, name: str, cid: str, version: str) -> None:
        with self._lock, self._transaction() as db:
            db.execute(
                "INSERT INTO reactor_plans (name, cid, version, created_at) VALUES (?,?,?,?)"
                " ON CONFLICT (name, cid) DO NOTHING",
                (name, cid, version, time.time()),
            )

    def plan_cid(self, name: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT cid FROM reactor_plans WHERE name=?"
                f" ORDER BY created_at DESC, {self._order} DESC LIMIT 1",
                (name,),
            ).fetchone()
        return None if row is None else str(row[0])

    def plans(self) -> list[tuple[str, str, str, float]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, cid, version, created_at FROM reactor_plans"
                f" ORDER BY name, created_at, {self._order}"
            ).fetchall()
        return [(str(a), str(b), str(c), float(d)) for a, b, c, d in rows]

    # -- agents --------------------------------------------------------------------

    def agent(self, name: str) -> AgentRow | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, status, serving_seq, pending_seq, consent_id, updated_at"
                " FROM reactor_agents WHERE name=?",
                (name,),
            ).fetchone()
        return None if row is None else AgentRow(*row)

    def agents(self) -> list[AgentRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, status, serving_seq, pending_seq, consent_id, updated_at"
                " FROM reactor_agents ORDER BY name"
            ).fetchall()
        return [AgentRow(*r) for r in rows]

    def versions(self, name: str) -> list[AgentVersion]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, name, version, definition_cid, graph_cid, operation, state,"
                " consent_id, done_by, created_at FROM reactor_agent_versions WHERE name=?"
                " ORDER BY seq",
                (name,),
            ).fetchall()
        return [AgentVersion(*r) for r in rows]

    def version(self, seq: int) -> AgentVersion | None:
        with self._lock:
            row = self._db.execute(
                "SELECT seq, name, version, definition_cid, graph_cid, operation, state,"
                " consent_id, done_by, created_at FROM reactor_agent_versions WHERE seq=?",
                (seq,),
            ).fetchone()
        return None if row is None else AgentVersion(*row)

    def add_version(
        self,
        *,
        name: str,
        version: str,
        definition_cid: str,
        graph_cid: str,
        operation: str,
        state: str,
        consent_id: str | None,
        by: str,
        agent_status: str,
    ) -> AgentVersion:
        """Appends a version row and moves the agent to it (serving or pending), in
        one transaction."""
        now = time.time()
        with self._lock, self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO reactor_agent_versions (name, version, definition_cid, graph_cid,"
                " operation, state, consent_id, done_by, created_at) VALUES (?,?,?,?,?,?,?,?,?)"
                " RETURNING seq",
                (name, version, definition_cid, graph_cid, operation, state, consent_id, by, now),
            )
            seq = int(cursor.fetchone()[0])
            if state == "serving":
                db.execute(
                    "UPDATE reactor_agent_versions SET state='superseded' WHERE name=? AND seq<>?"
                    " AND state='serving'",
                    (name, seq),
                )
            serving = seq if state == "serving" else None
            pending = seq if state == "pending_consent" else None
            db.execute(
                "INSERT INTO reactor_agents VALUES (?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET"
                " status=excluded.status, serving_seq=COALESCE(excluded.serving_seq,"
                " reactor_agents.serving_seq), pending_seq=excluded.pending_seq,"
                " consent_id=excluded.consent_id, updated_at=excluded.updated_at",
                (name, agent_status, serving, pending, consent_id, now),
            )
        found = self.version(seq)
        assert found is not None
        return found

    def set_status(self, name: str, status: str, *, clear_pending: bool = False) -> None:
        with self._lock, self._transaction() as db:
            if clear_pending:
                db.execute(
                    "UPDATE reactor_agents SET status=?, pending_seq=NULL, consent_id=NULL,"
                    " updated_at=? WHERE name=?",
                    (status, time.time(), name),
                )
            else:
                db.execute(
                    "UPDATE reactor_agents SET status=?, updated_at=? WHERE name=?",
                    (status, time.time(), name),
                )

    def set_version_state(self, seq: int, state: str) -> None:
        with self._lock, self._transaction() as db:
            db.execute("UPDATE reactor_agent_versions SET state=? WHERE seq=?", (state, seq))

    def promote(self, name: str, seq: int) -> None:
        """The pending version ``seq`` serves now; the one before is superseded."""
        with self._lock, self._transaction() as db:
            db.execute(
                "UPDATE reactor_agent_versions SET state='superseded' WHERE name=? AND"
                " state='serving'",
                (name,),
            )
            db.execute("UPDATE reactor_agent_versions SET state='serving' WHERE seq=?", (seq,))
            db.execute(
                "UPDATE reactor_agents SET status='active', serving_seq=?, pending_seq=NULL,"
                " consent_id=NULL, updated_at=? WHERE name=?",
                (seq, time.time(), name),
            )

    # -- confirmations ---------------------------------------------------------------

    def add_confirmation(self, id: str, rule: str, plan: str, detail: str) -> Confirmation:
        with self._lock, self._transaction() as db:
            db.execute(
                "INSERT INTO reactor_confirmations VALUES (?,?,?,?,?,?,NULL,NULL)",
                (id, rule, plan, "pending", detail, time.time()),
            )
        found = self.confirmation(id)
        assert found is not None
        return found

    def confirmation(self, id: str) -> Confirmation | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, rule, plan, status, detail, created_at, answered_at, run_id"
                " FROM reactor_confirmations WHERE id=?",
                (id,),
            ).fetchone()
        return None if row is None else Confirmation(*row)

    def confirmations(self, status: str | None = None) -> list[Confirmation]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, rule, plan, status, detail, created_at, answered_at, run_id"
                " FROM reactor_confirmations ORDER BY created_at"
            ).fetchall()
        return [Confirmation(*r) for r in rows if status is None or r[3] == status]

    def answer_confirmation(self, id: str, status: str, run_id: str | None = None) -> bool:
        """Answers a pending confirmation; False if it was not pending."""
        with self._lock, self._transaction() as db:
            cursor = db.execute(
                "UPDATE reactor_confirmations SET status=?, answered_at=?, run_id=?"
                " WHERE id=? AND status='pending'",
                (status, time.time(), run_id, id),
            )
            return bool(cursor.rowcount == 1)

    def set_confirmation_run(self, id: str, run_id: str) -> None:
        with self._lock, self._transaction() as db:
            db.execute("UPDATE reactor_confirmations SET run_id=? WHERE id=?", (run_id, id))

    # -- health: one evaluating host, rule states by compare-and-set -------------------

    def now(self) -> float:
        """The clock leases are measured by: the database's on PostgreSQL (hosts'
        clocks may disagree), this machine's on SQLite."""
        if self._shared is None:
            return time.time()
        row = self._db.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8").fetchone()
        return float(row[0])

    def take_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Takes or renews the lease ``name`` for ``ttl_s``: True if ``holder`` holds
        it now (it held it, or nobody did, or its holder let it lapse)."""
        with self._lock:
            now = self.now()
            with self._transaction() as db:
                row = db.execute(
                    "INSERT INTO reactor_leases (name, holder, expires_at) VALUES (?,?,?)"
                    " ON CONFLICT (name) DO UPDATE SET holder=excluded.holder,"
                    " expires_at=excluded.expires_at WHERE reactor_leases.holder=excluded.holder"
                    " OR reactor_leases.expires_at < ? RETURNING holder",
                    (name, holder, now + ttl_s, now),
                ).fetchone()
        return row is not None

    def release_lease(self, name: str, holder: str) -> None:
        """Gives the lease up (a host stopping): another host takes it at once."""
        with self._lock, self._transaction() as db:
            db.execute("DELETE FROM reactor_leases WHERE name=? AND holder=?", (name, holder))

    def lease(self, name: str) -> tuple[str, float] | None:
        """(holder, expires_at) of the lease ``name``, if anyone took it."""
        with self._lock:
            row = self._db.execute(
                "SELECT holder, expires_at FROM reactor_leases WHERE name=?", (name,)
            ).fetchone()
        return None if row is None else (str(row[0]), float(row[1]))

    def rule_states(self) -> dict[str, tuple[RuleState, str, float]]:
        """Each rule's saved state, with who evaluated it last and when."""
        with self._lock:
            rows = self._db.execute(
                "SELECT rule, since, firing, last_value, fired_at, fired, evaluated_by,"
                " evaluated_at FROM reactor_rule_states"
            ).fetchall()
        return {
            str(r[0]): (
                RuleState(
                    since=r[1], firing=bool(r[2]), last_value=r[3], fired_at=r[4], fired=int(r[5])
                ),
                str(r[6]),
                float(r[7]),
            )
            for r in rows
        }

    def save_rule_states(self, states: list[tuple[str, RuleState, int]], by: str) -> set[str]:
        """Saves each (rule, state, fire count it was evaluated from) unless the
        saved fire count moved meanwhile (another host evaluated it); returns the
        rules saved. One transaction."""
        saved: set[str] = set()
        now = time.time()
        with self._lock, self._transaction() as db:
            for rule, state, expected in states:
                row = db.execute(
                    "INSERT INTO reactor_rule_states (rule, since, firing, last_value, fired_at,"
                    " fired, evaluated_by, evaluated_at) VALUES (?,?,?,?,?,?,?,?)"
                    " ON CONFLICT (rule) DO UPDATE SET since=excluded.since,"
                    " firing=excluded.firing, last_value=excluded.last_value,"
                    " fired_at=excluded.fired_at, fired=excluded.fired,"
                    " evaluated_by=excluded.evaluated_by, evaluated_at=excluded.evaluated_at"
                    " WHERE reactor_rule_states.fired = ? RETURNING rule",
                    (
                        rule,
                        state.since,
                        int(state.firing),
                        state.last_value,
                        state.fired_at,
                        state.fired,
                        by,
                        now,
                        expected,
                    ),
                ).fetchone()
                if row is not None:
                    saved.add(rule)
        return saved
