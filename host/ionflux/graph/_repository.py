"""Graph sources and deployed versions, after the seeds' ``flows`` / ``flow_versions``.

A graph version is its YAML text, addressed by CID (the same CID IONPOD
gives the bytes; they are stored in the pod when one is configured). A
deploy appends a version with a message; nothing is ever replaced, so every
earlier version stays loadable by CID or by ``name@<version field>``. A
``name@version`` is immutable, as a transform's is: deploying the same text
again changes nothing, other text under it is refused (``GraphVersionExists``). Texts
of graphs run straight from a file are kept too (``graph_sources``), so any
recorded run can be re-run from exactly the graph it ran.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ionwall import DocumentError, DocumentLimits, read_text

from .._errors import GraphNotFound, GraphProblem, GraphValidationError, GraphVersionExists
from .._sqlite import Changes, OwnOrShared, open_database
from ..store import cid_for_bytes
from ._model import FluxGraph
from ._source import default_limits, parse_yaml

if TYPE_CHECKING:
    from ..state import PgDatabase

_FILES_KEPT = 256  # graph files remembered with their stat

_SCHEMA = """
CREATE TABLE IF NOT EXISTS graph_sources (
    cid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    text TEXT NOT NULL,
    first_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS graph_versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    cid TEXT NOT NULL REFERENCES graph_sources (cid),
    version TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS graph_versions_name ON graph_versions (name, seq);
"""


class BytesPod(Protocol):
    """The part of IONPOD the repository uses."""

    def put_bytes(self, data: bytes) -> str: ...


@dataclass(frozen=True, slots=True)
class GraphVersion:
    name: str
    version: str
    cid: str
    message: str
    created_at: float
    seq: int


@dataclass(frozen=True, slots=True)
class GraphText:
    """A graph's YAML with its CID and where it came from (a file path or ``name@cid``)."""

    text: str
    cid: str
    origin: str


class GraphRepository(OwnOrShared):
    """The graph tables: in ``path`` (SQLite), or in ``database`` (PostgreSQL, shared
    by a cluster: a graph deployed on any host runs on every host)."""

    def __init__(
        self,
        path: Path | None,
        pod: BytesPod | None = None,
        document_limits: DocumentLimits | None = None,
        *,
        database: PgDatabase | None = None,
    ):
        # Graph files and stored texts are read within these (None: the defaults).
        self.document_limits = document_limits
        self._db: Any
        self._shared = database
        if database is not None:
            self._db = database
        else:
            assert path is not None
            self._db = open_database(path, _SCHEMA)
        self._lock = threading.Lock()
        self._pod = pod
        self._parsed: dict[str, FluxGraph] = {}
        self._files: dict[str, tuple[tuple[int, int, int], GraphText]] = {}
        # Names and CIDs resolved, until a commit by another connection (another
        # process deploying) moves `PRAGMA data_version` or this one writes.
        self._refs: dict[str, GraphText] = {}
        self._changes: Any
        if database is not None:
            from ..state import PgChanges

            self._changes = PgChanges(database, "graphs")
        else:
            self._changes = Changes(self._db)
        self._generation = 0  # moved by this connection's writes

    def remember(self, text: str, name: str, version: str) -> str:
        """Stores ``text`` (pod and table) and returns its CID."""
        data = text.encode("utf-8")
        cid = self._pod.put_bytes(data) if self._pod is not None else cid_for_bytes(data)
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO graph_sources VALUES (?,?,?,?,?)",
                (cid, name, version, text, time.time()),
            )
            self._refs.clear()
            self._generation += 1
        return cid

    def deploy(self, text: str, name: str, version: str, message: str) -> tuple[GraphVersion, bool]:
        """Appends a version; returns it and whether it is new. ``name@version``
        deployed with the same text is not appended twice (its first deploy
        stands); with other text it is refused (``GraphVersionExists``), before
        anything is stored."""
        with self._lock:
            row = self._db.execute(
                "SELECT cid FROM graph_versions WHERE name=? AND version=? ORDER BY seq LIMIT 1",
                (name, version),
            ).fetchone()
        if row is not None and row[0] != cid_for_bytes(text.encode("utf-8")):
            raise GraphVersionExists(name, version, row[0])
        cid = self.remember(text, name, version)
        with self._lock:
            # One transaction: two processes deploying one name@version at once
            # cannot both find it free.
            with self._transaction() as db:
                rows = db.execute(
                    "SELECT cid, seq FROM graph_versions WHERE name=? AND version=? ORDER BY seq",
                    (name, version),
                ).fetchall()
                if rows:
                    same = next((seq for found, seq in rows if found == cid), None)
                    if same is None:
                        raise GraphVersionExists(name, version, rows[0][0])
                    seq, created = same, False
                else:
                    cursor = db.execute(
                        "INSERT INTO graph_versions (name, cid, version, message, created_at)"
                        " VALUES (?,?,?,?,?) RETURNING seq",
                        (name, cid, version, message, time.time()),
                    )
                    seq, created = int(cursor.fetchone()[0]), True
            if created:
                self._refs.clear()
                self._generation += 1
        found = self._version_by_seq(seq)
        assert found is not None
        return found, created

    def reinstate(self, name: str, cid: str, message: str) -> GraphVersion:
        """Appends a version of ``name`` that is an earlier one again (same CID and
        version field): a rollback serves it as the latest. Its text must be known."""
        with self._lock:
            row = self._db.execute(
                "SELECT version FROM graph_sources WHERE cid=?", (cid,)
            ).fetchone()
            if row is None:
                raise GraphNotFound(f"no graph text {cid!r} to reinstate as {name!r}")
            with self._transaction() as db:
                cursor = db.execute(
                    "INSERT INTO graph_versions (name, cid, version, message, created_at)"
                    " VALUES (?,?,?,?,?) RETURNING seq",
                    (name, cid, str(row[0]), message, time.time()),
                )
                seq = int(cursor.fetchone()[0])
            self._refs.clear()
            self._generation += 1
        found = self._version_by_seq(seq)
        assert found is not None
        return found

    def versions(self, name: str) -> list[GraphVersion]:
        """Oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, version, cid, message, created_at, seq FROM graph_versions"
                " WHERE name=? ORDER BY seq",
                (name,),
            ).fetchall()
        return [GraphVersion(*row) for row in rows]

    def names(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT name FROM graph_versions ORDER BY name")
            return [r[0] for r in rows.fetchall()]

    def latest(self, name: str) -> GraphVersion | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def _version_by_seq(self, seq: int) -> GraphVersion | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, version, cid, message, created_at, seq FROM graph_versions"
                " WHERE seq=?",
                (seq,),
            ).fetchone()
        return None if row is None else GraphVersion(*row)

    def text(self, cid: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT text FROM graph_sources WHERE cid=?", (cid,)).fetchone()
        return None if row is None else str(row[0])

    def find(self, name: str, version: str | None = None) -> GraphText | None:
        """A deployed graph: the latest version of ``name``, or the one whose version
        field or CID is ``version``."""
        chosen: GraphVersion | None = None
        for candidate in self.versions(name):
            if version is None or version in (candidate.version, candidate.cid):
                chosen = candidate
        if chosen is None:
            return None
        text = self.text(chosen.cid)
        return None if text is None else GraphText(text, chosen.cid, f"{name}@{chosen.cid}")

    def resolve(self, ref: str) -> GraphText:
        """``ref`` is a YAML file path, a deployed name, ``name@version``, or a CID."""
        path = Path(ref)
        if ref.endswith((".yaml", ".yml")) or path.is_file():
            try:
                # A file is read again only when it changed (a stat is far cheaper
                # than an open and a read on the event loop).
                st = path.stat()
                key = (st.st_ino, st.st_size, st.st_mtime_ns)
                seen = self._files.get(ref)
                if seen is not None and seen[0] == key:
                    return seen[1]
                # Never more than the document budget read: parse_yaml refuses the rest.
                text = read_text(path, self.document_limits or default_limits())
            except OSError as exc:
                raise GraphNotFound(f"cannot read graph file {ref}: {exc.strerror}") from None
            except DocumentError as exc:
                problem = GraphProblem(exc.problem, file=ref, line=exc.line)
                raise GraphValidationError([problem], reason=exc) from None
            read = GraphText(text, cid_for_bytes(text.encode("utf-8")), str(path))
            if len(self._files) >= _FILES_KEPT:
                self._files.clear()
            self._files[ref] = (key, read)
            return read
        with self._lock:
            if self._changes.since_last():
                self._refs.clear()
            hit = self._refs.get(ref)
            generation = self._generation
        if hit is not None:
            return hit
        stored = self.text(ref)
        if stored is not None:
            found: GraphText | None = GraphText(stored, ref, ref)
        else:
            name, _, version = ref.partition("@")
            found = self.find(name, version or None)
        if found is None:
            known = ", ".join(self.names()) or "none deployed"
            raise GraphNotFound(
                f"no graph {ref!r}: not a file, a deployed graph or a known CID (graphs: {known})"
            )
        with self._lock:
            if generation == self._generation:  # no write of ours since the lookups
                if len(self._refs) >= _FILES_KEPT:
                    self._refs.clear()
                self._refs[ref] = found
        return found

    def lookup_graph(self, name: str, version: str | None) -> FluxGraph | None:
        """The ``GraphCatalog`` seam of the planner: the model of a deployed graph."""
        found = self.find(name, version)
        if found is None:
            return None
        cached = self._parsed.get(found.cid)
        if cached is None:
            try:
                cached = FluxGraph.model_validate(
                    parse_yaml(found.text, limits=self.document_limits).data
                )
            except (GraphValidationError, ValueError):
                return None
            self._parsed[found.cid] = cached
        return cached
