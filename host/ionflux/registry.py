"""The published transforms: name, version, CID, ABI and manifest.

Versions are immutable: republishing a name and version with other bytes is
refused, republishing the same bytes is a no-op. Lookups by name give the
most recently published version; ``name@version`` and CIDs are exact.

A manifest's fields are bounded (``manifest.MAX_*``), so a stored one is a few
hundred KB at most. A row stored before those bounds (a YAML alias bomb once
expanded to ~140 MB) is never parsed again: listings show it from its columns
with a note, and using it asks for a new version.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import ManifestError, UnknownTransform
from ._sqlite import Changes, OwnOrShared, open_database
from .manifest import Manifest, ModuleRef, parse_manifest

if TYPE_CHECKING:
    from .state import PgDatabase

# Past this, a stored manifest predates the field bounds: not parsed again.
MAX_STORED_MANIFEST_BYTES = 1024 * 1024
_MANIFEST = f"CASE WHEN length(manifest) > {MAX_STORED_MANIFEST_BYTES} THEN NULL ELSE manifest END"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transforms (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    cid TEXT NOT NULL,
    abi TEXT NOT NULL,
    size INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    published_at REAL NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX IF NOT EXISTS transforms_cid ON transforms (cid);
"""


@dataclass(frozen=True, slots=True)
class PublishedTransform:
    manifest: Manifest
    cid: str
    size: int
    published_at: float

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def abi(self) -> str:
        return self.manifest.abi

    @property
    def scopes(self) -> list[str]:
        return list(self.manifest.scopes)

    def summary(self) -> dict[str, Any]:
        """What listings show of it (``ionflux transforms --json``, ``GET /transforms``)."""
        return {
            "name": self.name,
            "version": self.version,
            "cid": self.cid,
            "abi": self.abi,
            "scopes": self.scopes,
            "size": self.size,
            "published_at": self.published_at,
        }


class Registry(OwnOrShared):
    """The ``transforms`` table: in ``path`` (SQLite), or in ``database`` (PostgreSQL,
    shared by a cluster: a version any host published is found on every host)."""

    def __init__(self, path: Path | None = None, *, database: PgDatabase | None = None) -> None:
        self._lock = threading.Lock()
        self._by_ref: dict[str, PublishedTransform] = {}
        self._exact: dict[str, PublishedTransform] = {}  # name@version: never changes
        self._db: Any
        self._changes: Any
        self._shared = database
        if database is not None:
            from .state import PgChanges

            self._db = database
            self._changes = PgChanges(database, "transforms")
        else:
            assert path is not None
            # FULL: a publish is rare and must survive an OS crash too.
            self._db = open_database(path, _SCHEMA, synchronous="FULL")
            self._changes = Changes(self._db)

    def add(self, manifest: Manifest, size: int) -> PublishedTransform:
        """Publishes ``manifest``. A version is immutable, its manifest as well as its
        module: publishing the same manifest again changes nothing (its first
        publication stands), another one under a published name@version is refused."""
        text = manifest.model_dump_json()
        with self._lock:
            # One transaction: two processes publishing one name@version at once
            # cannot both find it free.
            with self._transaction() as db:
                row = db.execute(
                    "SELECT cid, manifest, size, published_at FROM transforms "
                    "WHERE name=? AND version=?",
                    (manifest.name, manifest.version),
                ).fetchone()
                if row is not None:
                    _check_same(manifest, row[0], row[1])
                    return PublishedTransform(manifest, row[0], row[2], row[3])
                now = time.time()
                db.execute(
                    "INSERT INTO transforms VALUES (?,?,?,?,?,?,?)",
                    (
                        manifest.name,
                        manifest.version,
                        manifest.module.cid,
                        manifest.abi,
                        size,
                        text,
                        now,
                    ),
                )
            self._by_ref.clear()
        return PublishedTransform(manifest, manifest.module.cid, size, now)

    def get(self, ref: str) -> PublishedTransform:
        """By ``name``, ``name@version`` or module CID."""
        # A name@version is immutable once published: answered from memory without
        # asking whether anyone published since (the engine calls every node so).
        exact = self._exact.get(ref)
        if exact is not None:
            return exact
        with self._lock:
            # Another process (``ionflux publish``) may have added a version.
            if self._changes.since_last():
                self._by_ref.clear()
            cached = self._by_ref.get(ref)
        if cached is not None:
            return cached
        name, _, version = ref.partition("@")
        columns = f"{_MANIFEST}, size, published_at, name, version, cid, abi"
        with self._lock:
            if version:
                row = self._db.execute(
                    f"SELECT {columns} FROM transforms WHERE name=? AND version=?",
                    (name, version),
                ).fetchone()
            else:
                row = self._db.execute(
                    f"SELECT {columns} FROM transforms "
                    "WHERE name=? OR cid=? ORDER BY published_at DESC LIMIT 1",
                    (ref, ref),
                ).fetchone()
        if row is None:
            raise UnknownTransform(f"no published transform {ref!r} (see `ionflux transforms`)")
        if row[0] is None:
            raise ManifestError(
                f"the stored manifest of {row[3]}@{row[4]} is past "
                f"{MAX_STORED_MANIFEST_BYTES} bytes (stored before manifests were bounded); "
                "publish it again under a new version",
                field="version",
            )
        found = _published(row)
        self._by_ref[ref] = found
        if version:
            self._exact[ref] = found
        return found

    def list(self) -> list[PublishedTransform]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_MANIFEST}, size, published_at, name, version, cid, abi "
                "FROM transforms ORDER BY name, published_at"
            ).fetchall()
        return [_published(row) for row in rows]


def _published(row: tuple[Any, ...]) -> PublishedTransform:
    """A registry row (manifest or NULL, size, published_at, name, version, cid, abi)."""
    text, size, published_at, name, version, cid, abi = row
    if text is None:
        # Shown from its columns only: its stored text is never parsed again.
        manifest = Manifest.model_construct(
            name=name,
            version=version,
            abi=abi,
            description="(stored manifest past the size limit; publish a new version)",
            module=ModuleRef.model_construct(cid=cid, path=None),
        )
        return PublishedTransform(manifest, cid, size, published_at)
    data = json.loads(text)
    return PublishedTransform(
        parse_manifest(data, checked=True), data["module"]["cid"], size, published_at
    )


def _check_same(manifest: Manifest, cid: str, stored: str) -> None:
    """Refuses ``manifest`` unless it is the one published under its name@version.
    Compared as parsed manifests, so a field this code added since reads as its
    default and does not make the same manifest look new."""
    where = f"{manifest.name}@{manifest.version} is already published"
    if cid != manifest.module.cid:
        raise ManifestError(
            f"{where} with CID {cid}; versions are immutable, publish a new version",
            field="version",
        )
    if len(stored) > MAX_STORED_MANIFEST_BYTES:
        raise ManifestError(
            f"{where} with a manifest past {MAX_STORED_MANIFEST_BYTES} bytes; publish a new "
            "version",
            field="version",
        )
    before = parse_manifest(json.loads(stored), checked=True).model_dump()
    after = manifest.model_dump()
    if before != after:
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        raise ManifestError(
            f"{where} with another manifest ({', '.join(changed)} differ); versions are "
            "immutable, publish a new version",
            field="version",
        )
