"""The audit log in PostgreSQL: one hash chain per host, verified together.

Each host appends to its own chain, named by its signing key's id (the
``kid`` it publishes in ``ionwall_keys``): entries in ``ionwall_audit``
(the JSON line exactly as hashed, as in ``audit.jsonl``), signed checkpoints
in ``ionwall_audit_checkpoints`` (the lines of ``audit.checkpoints``) and the
head (count, last hash) in ``ionwall_audit_heads``. Hosts never contend for
one chain's end; processes of one host (one data directory, one key) share
its chain.

An append is one statement, one round trip: it moves the head from the
(count, last hash) this process last saw to the new one and inserts the
entries, only if the head was where it thought (``WITH moved AS (UPDATE …)
INSERT … WHERE EXISTS (SELECT 1 FROM moved)``). When another process of the
host moved it, nothing is written; the head is read and the batch chained
again. Write-behind gates queue entries as with files and their barrier
writes the queue in one such statement.

``verify`` checks every chain in the database: each one's entries, its
checkpoints against the key its host published (this host's own against the
key in its data directory, or the one given), and its head; the report names
the first damaged chain and entry. A chain of a host whose key is not
published, or whose head is gone, is damage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import _checkpoint
from ._audit import (
    CHECKPOINT_AFTER_S,
    CHECKPOINT_EVERY,
    GENESIS,
    AuditEntry,
    AuditLog,
    AuditReport,
    _against_head,
    _chain,
    _now_text,
    _parse_entries,
    _Pending,
    _Verifier,
)
from ._errors import AuditError, StoreError
from ._keys import key_id
from ._mask import Masker
from ._pg import Database

log = logging.getLogger("ionwall.audit")

_APPEND = """
WITH moved AS (
    UPDATE ionwall_audit_heads SET count = %(count)s, last = %(last)s
    WHERE chain = %(chain)s AND count = %(was_count)s AND last = %(was_last)s
    RETURNING 1
)
INSERT INTO ionwall_audit (chain, idx, at, line)
SELECT %(chain)s, %(was_count)s + e.n - 1, e.at, e.line
FROM unnest(string_to_array(%(ats)s, E'\n'), string_to_array(%(lines)s, E'\n'))
    WITH ORDINALITY AS e(at, line, n)
WHERE EXISTS (SELECT 1 FROM moved)
"""
# The batch goes as two texts, one entry a line (an entry's JSON holds no raw
# newline): one parameter each instead of arrays of hundreds, which psycopg
# would adapt element by element.
_MAX_RETRIES = 64  # other processes of this host moving the head between our tries


class PgAuditLog(AuditLog):
    """This host's chain in PostgreSQL (see the module docstring); the public
    face is ``AuditLog``'s."""

    def __init__(
        self,
        directory: Path,
        db: Database,
        masker: Masker | None = None,
        *,
        key: Ed25519PrivateKey,
        published: Callable[[str], Ed25519PublicKey | None],
        hosts: Callable[[], dict[str, str]],
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_after_s: float = CHECKPOINT_AFTER_S,
    ) -> None:
        """``published(kid)``: the key a host published; ``hosts()``: kid -> host name."""
        # ``path`` names the data directory (the host's disk probe watches it);
        # nothing of the audit log is kept there.
        self.path = directory
        self.head_path = self.checkpoints_path = directory
        self._db = db
        self._published = published
        self._hosts = hosts
        self._init_state(key, masker, checkpoint_every, checkpoint_after_s)
        self._chain_id = self._kid
        self._closed = f"the audit chain {self._kid} in {db.where} is closed"
        self._log_fd = self._ckpt_fd = 0  # open (-1 once closed, as AuditLog tests)
        with self._db.connection("cannot open the audit chain") as conn:
            conn.execute(
                "INSERT INTO ionwall_audit_heads (chain, count, last, signed) "
                "VALUES (%s, 0, %s, 0) ON CONFLICT (chain) DO NOTHING",
                (self._chain_id, GENESIS),
            )
        self._read_head()

    def _where(self) -> str:
        return f"audit chain {self._chain_id} in {self._db.where}"

    def _read_head(self) -> None:
        with self._db.connection("cannot read the audit head") as conn:
            row = conn.execute(
                "SELECT count, last, signed FROM ionwall_audit_heads WHERE chain=%s",
                (self._chain_id,),
            ).fetchone()
        if row is None:
            raise AuditError(
                f"{self._where()}: its head record is gone; run `ionflux audit verify`"
            )
        self._count, self._last, self._signed = int(row[0]), str(row[1]), int(row[2])

    def close(self) -> None:
        with self._lock:
            self._drain()
            if self._log_fd >= 0:
                self._sign_quietly(0, logging.DEBUG)
            self._log_fd = self._ckpt_fd = -1
        self._wake.set()  # the signer sees the log closed and ends

    # -- writing -------------------------------------------------------------

    def _write(self, batch: Sequence[_Pending]) -> None:
        if self._log_fd < 0:
            raise AuditError(self._closed)
        try:
            for _ in range(_MAX_RETRIES):
                was_count, was_last = self._count, self._last
                lines, count, last = _chain(batch, was_count, was_last)
                with self._db.connection("cannot append to the audit log") as conn:
                    written = conn.execute(
                        _APPEND,
                        {
                            "count": count, "last": last, "chain": self._chain_id,
                            "was_count": was_count, "was_last": was_last,
                            "ats": "\n".join(p.time for p in batch),
                            "lines": b"".join(lines)[:-1].decode(),
                        },
                    ).rowcount  # fmt: skip
                if written == len(batch):
                    break
                self._read_head()  # another process of this host moved it
            else:
                raise AuditError(f"{self._where()}: the head kept moving; try again")
        except StoreError as exc:
            error = AuditError(f"{self._where()}: cannot append to the audit log: {exc}")
            error.__cause__ = exc
            self._note_write(error)
            raise error from exc
        except AuditError as exc:
            self._note_write(exc)
            raise
        if self._failing:
            self._note_write(None)
        self._count, self._last = count, last
        if count - self._signed >= self._every:
            self._sign_quietly(len(batch))
        elif not self._armed:
            self._arm()

    # -- signed checkpoints --------------------------------------------------

    def checkpoint(self) -> None:
        with self._lock:
            self._drain()
            if self._log_fd >= 0:
                try:
                    self._read_head()
                except (AuditError, StoreError) as exc:
                    log.warning("%s: cannot sign an audit checkpoint: %s", self._where(), exc)
                    return
                self._sign_quietly()

    def _sign_quietly(self, batch: int = 0, level: int = logging.WARNING) -> None:
        try:
            self._sign(batch)
        except (StoreError, AuditError) as exc:
            log.log(level, "%s: cannot sign an audit checkpoint: %s", self._where(), exc)

    def _sign(self, batch: int = 0) -> None:
        count, last = self._count, self._last
        if count == 0 or count <= self._signed:
            return
        signed = _checkpoint.sign(self._key, count, last, _now_text(), self._every, self._kid)
        with self._db.connection("cannot sign an audit checkpoint") as conn:
            conn.execute(
                "INSERT INTO ionwall_audit_checkpoints (chain, count, line) VALUES (%s, %s, %s) "
                "ON CONFLICT (chain, count) DO NOTHING",
                (self._chain_id, count, signed.line()[:-1].decode()),
            )
            conn.execute(
                "UPDATE ionwall_audit_heads SET signed = GREATEST(signed, %s) WHERE chain=%s",
                (count, self._chain_id),
            )
        self._signed = count

    # -- reading -------------------------------------------------------------

    def tail(self, n: int = 20) -> list[AuditEntry]:
        """The last ``n`` entries of every host's chain, by time, oldest first."""
        if n <= 0:
            return []
        self.flush()
        with self._db.connection("cannot read the audit log") as conn:
            rows = conn.execute(
                "SELECT line FROM ionwall_audit ORDER BY at DESC, chain, idx DESC LIMIT %s", (n,)
            ).fetchall()
        return _parse_entries((line for (line,) in reversed(rows)), self._where())

    def verify(self, public_key: Ed25519PublicKey | None = None) -> AuditReport:
        """Every host's chain checked (see the module docstring); ``public_key``
        replaces this host's own key for its own chain."""
        self.flush()
        with self._db.connection("cannot read the audit log") as conn:
            chains = [
                str(r[0])
                for r in conn.execute(
                    "SELECT chain FROM ionwall_audit_heads UNION SELECT chain FROM ionwall_audit "
                    "UNION SELECT chain FROM ionwall_audit_checkpoints ORDER BY 1"
                ).fetchall()
            ]
        hosts = self._hosts()
        reports = []
        for chain in chains:
            if chain == self._chain_id:
                key = public_key or self._key.public_key()
            else:
                found = self._published(chain)
                if found is None or key_id(found) != chain:
                    problem = (
                        f"no key is published for chain {chain} (ionwall_keys): its "
                        "checkpoints cannot be checked; the key was removed or replaced"
                    )
                    reports.append(
                        AuditReport(False, 0, 0, problem, chain=chain, host=hosts.get(chain))
                    )
                    continue
                key = found
            report = _PgVerifier(self, key, chain).run()
            reports.append(_named(report, chain, hosts.get(chain)))
        return AuditReport.of_chains(reports)


def _named(report: AuditReport, chain: str, host: str | None) -> AuditReport:
    return AuditReport(
        report.ok, report.entries, report.index, report.problem, report.signed,
        report.signed_at, report.key_id, report.repairs, chain, host,
    )  # fmt: skip


class _PgVerifier(_Verifier):
    """``_Verifier`` over one chain's rows."""

    def __init__(self, audit: PgAuditLog, key: Ed25519PublicKey, chain: str) -> None:
        super().__init__(audit, key)
        self.db = audit._db
        self.chain = chain
        self.checkpoints_name = f"the checkpoints of chain {chain}"

    def _rows(self, sql: str) -> Iterator[tuple[Any, ...]]:
        with self.db.connection("cannot read the audit log") as conn:
            with conn.transaction(), conn.cursor(name="ionwall_verify") as cur:
                cur.itersize = 2000
                cur.execute(sql, (self.chain,))
                yield from cur

    def checkpoint_lines(self) -> Iterator[tuple[int, bytes]]:
        rows = self._rows(
            "SELECT line FROM ionwall_audit_checkpoints WHERE chain=%s ORDER BY count"
        )
        for n, (line,) in enumerate(rows):
            yield n, str(line).encode() + b"\n"

    def entry_lines(self) -> Iterator[bytes]:
        # By index: a gap, a duplicate or a reordering shows as a broken chain.
        for (line,) in self._rows("SELECT line FROM ionwall_audit WHERE chain=%s ORDER BY idx"):
            yield str(line).encode() + b"\n"

    def check_head(self, count: int, last: str) -> tuple[int | None, str] | None:
        with self.db.connection("cannot read the audit head") as conn:
            row = conn.execute(
                "SELECT count, last FROM ionwall_audit_heads WHERE chain=%s", (self.chain,)
            ).fetchone()
        if row is None:
            return None if count == 0 else (0, "the chain's head record is missing")
        written, head_hash = int(row[0]), str(row[1])
        return _against_head(count, last, written, head_hash, "chain")
