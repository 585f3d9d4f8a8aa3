"""The audit log: every gate decision, append-only and hash-chained, and in the
same chain every decision of the owner (``OWNER_DECISIONS``: consent requests,
approvals, denials, revocations, caller tokens; an approval that cannot be
recorded is not taken).

``audit.jsonl`` holds one JSON object per line::

    {"decision":"allow","grant_id":"g-…","hash":"…","index":0,"node_id":null,
     "prev":"000…0","reason":"…","run_id":null,"scope":"read_pod_data:reports/01.json",
     "subject":"bafk…","time":"2026-…Z","transform":"digest"}

``hash`` is the sha256 (hex) of the canonical JSON (sorted keys, no spaces,
UTF-8) of the entry without ``hash``; ``prev`` is the previous entry's hash
(64 zeros for the first) and ``index`` its position. So altering, inserting,
removing or reordering an entry breaks the chain at that entry. Cutting
entries off the end does not break a chain, so ``audit.head`` records the
count and last hash after every append; ``verify`` compares the log with it.

Neither file needs a secret, so whoever can write both could re-hash a
history. ``audit.checkpoints`` holds the chain's state signed with IONWALL's
Ed25519 key every ``CHECKPOINT_EVERY`` entries, ``CHECKPOINT_AFTER_S`` after
an append left entries unsigned, and at close (see ``_checkpoint``): a
re-hashed chain no longer matches them, and ``verify`` names the first entry
after the last checkpoint that still holds. What comes after the last
checkpoint is only hash-chained, and ``verify`` says so. (Whoever can read
the key can still forge: it lives beside the log. Verify a copy of the log
elsewhere with ``--public-key`` if that matters.)

Appends take ``audit.head`` as an ``fcntl.flock`` lock (processes) and a
thread lock (threads), and re-read the log's end when another writer moved
it, so several threads and processes append one consistent chain. Every
process maps ``audit.head`` into memory (``_shared``): an append reads it to
learn whether another writer moved the log since its own last append, and
writes it, with no system call but the lock's and the log's ``write``. The
head is written before the log: a writer that dies between the two leaves a
head that no longer matches what the others remember, so the next writer
re-reads the log's true end. Strings are
masked (``Masker``) before they are written. Appends are not fsync'ed: a
crash may lose the last entries, and ``verify`` then names them.

A write that fails part way (a full disk, a writer killed mid-write) leaves a
torn last line. The next append, in whichever process, cuts it under the
locks: back to the last entry that verifies (its hash, the chain before it and
the last signed checkpoint), keeping the cut bytes in ``audit.jsonl.torn-<time>``
and recording the cut as a ``TORN_TAIL_CUT`` entry, which ``verify`` lists. A
failed write marks the head so that every writer sees it. Only a torn *last*
line is cut: damage anywhere else is still reported by ``verify``, and a
torn line after entries that do not verify is left for it too. Reading
(``verify``, ``tail``) never changes the log.

Entries of write-behind gates (see ``Ionwall.gate``) are queued in memory and
written in one batch (one ``write``, one head update) by the run's barrier or
by the next immediate append, whichever comes first. The masked, encoded
fields of an entry are kept per call context, so an entry costs a few joins,
one sha256 and the system calls. (A writer thread was measured and dropped:
on CPython its hand-offs of the GIL cost more than the writes it took over.)
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from json.encoder import encode_basestring as _encode_str  # what json.dumps uses
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import _checkpoint
from ._errors import AuditError
from ._keys import key_id, load_or_create_key
from ._mask import Masker
from ._shared import READ_ONLY_ERRNOS, SharedFile

log = logging.getLogger("ionwall.audit")

GENESIS = "0" * 64

# What the owner (or the owner's policy) decided, recorded in the same chain as
# the gate's decisions: a consent request made, approved or denied, a grant
# revoked, a caller token issued. One entry per scope concerned.
CONSENT_REQUESTED = "consent-requested"
CONSENT_APPROVED = "consent-approved"
CONSENT_DENIED = "consent-denied"
GRANT_REVOKED = "grant-revoked"
TOKEN_ISSUED = "token-issued"
# What IONWALL itself did to the log: a torn last line (a write that failed part
# way, on a full disk or in a writer killed mid-write) was cut, its bytes kept
# in a side file (``_cut_torn_tail``).
TORN_TAIL_CUT = "torn-tail-cut"
OWNER_DECISIONS = (CONSENT_REQUESTED, CONSENT_APPROVED, CONSENT_DENIED, GRANT_REVOKED, TOKEN_ISSUED)
_FIELDS = (
    "index", "time", "subject", "transform", "run_id", "node_id",
    "scope", "decision", "reason", "grant_id", "prev",
)  # fmt: skip
# "%020d %s %020d\n" % (count, last hash, count the last checkpoint covers); the
# third field only tells writers when to sign: ``verify`` never trusts it.
_HEAD_SIZE = 107
# The third field of a head left by a write that failed part way: no writer
# remembers this head, so the next one (in any process) re-reads the log's
# end and cuts the torn line.
_TORN_MARK = b"torn-tail".rjust(20, b"-")
CHECKPOINT_EVERY = 256
"""Entries between two signed checkpoints: one Ed25519 signature (about 30 µs)
per this many gate decisions."""
CHECKPOINT_AFTER_S = 2.0
"""A log left with unsigned entries is signed this long after the first of them."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    index: int
    time: str
    subject: str
    transform: str
    run_id: str | None
    node_id: str | None
    scope: str
    decision: str  # "allow" | "deny" (the gate), or one of OWNER_DECISIONS
    reason: str
    grant_id: str | None
    prev: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The outcome of ``AuditLog.verify``: ``index`` is the first bad entry.

    ``signed``: how many entries (from the first) the last valid signed
    checkpoint covers (before the damage, if any), ``signed_at`` when it was
    signed and ``key_id`` the key it was checked against. Entries from
    ``signed`` on are only hash-chained. ``repairs``: the entries that record a
    torn last line cut by a writer (``TORN_TAIL_CUT``).

    On a cluster (state in PostgreSQL) every host appends to its own chain,
    named by its key id (``chain``) and host name (``host``); the report of
    all of them holds one report per chain in ``chains``, is ok only when
    every one is, and otherwise says which chain is damaged first."""

    ok: bool
    entries: int
    index: int | None = None
    problem: str | None = None
    signed: int = 0
    signed_at: str | None = None
    key_id: str | None = None
    repairs: tuple[int, ...] = ()
    chain: str | None = None
    host: str | None = None
    chains: tuple[AuditReport, ...] = ()

    @classmethod
    def of_chains(cls, reports: Sequence[AuditReport]) -> AuditReport:
        """One report over every host's chain."""
        total = sum(r.entries for r in reports)
        bad = next((r for r in reports if not r.ok), None)
        if bad is None:
            return cls(True, total, signed=sum(r.signed for r in reports), chains=tuple(reports))
        return cls(
            False, total, bad.index, bad.problem, bad.signed, bad.signed_at, bad.key_id,
            bad.repairs, bad.chain, bad.host, tuple(reports),
        )  # fmt: skip

    def _named(self) -> str:
        return f"chain {self.chain} (host {self.host or 'unknown'})"

    def __str__(self) -> str:
        if self.chains:
            if self.ok:
                return (
                    f"audit log intact: {len(self.chains)} chain(s), one per host, "
                    f"{self.entries} entries, chains and heads verified; "
                    + "; ".join(
                        f"{c._named()}: {c.entries} entries, {c.coverage()}{c._repairs()}"
                        for c in self.chains
                    )
                )
            return f"audit log damaged in {self._named()}: {self.problem}; {self.coverage()}"
        if self.ok:
            return (
                f"audit log intact: {self.entries} entries, chain and head verified; "
                + self.coverage()
                + self._repairs()
            )
        return f"audit log damaged: {self.problem}; {self.coverage()}"

    def _repairs(self) -> str:
        if not self.repairs:
            return ""
        which = ", ".join(str(i) for i in self.repairs[:10])
        more = f" and {len(self.repairs) - 10} more" if len(self.repairs) > 10 else ""
        return (
            f"; {len(self.repairs)} torn last line(s) were cut by a writer, as entries "
            f"{which}{more} record (`ionflux audit tail` shows their reasons)"
        )

    def coverage(self) -> str:
        """What a signature vouches for, and what only the hash chain does."""
        if not self.ok:
            if self.signed == 0:
                return "no valid signed checkpoint precedes the damage"
            return (
                f"the last valid signed checkpoint before it covers entries 0-{self.signed - 1} "
                f"(signed {self.signed_at}, key {self.key_id})"
            )
        if self.signed == 0:
            covered = "no entry is covered by a signed checkpoint yet"
        else:
            covered = (
                f"entries 0-{self.signed - 1} are covered by the signed checkpoint of "
                f"{self.signed_at} (key {self.key_id})"
            )
        if self.signed == self.entries:
            return covered
        return (
            f"{covered}; entries {self.signed}-{self.entries - 1} are only hash-chained "
            "(signed at the next checkpoint)"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _fast_canonical(body: dict[str, Any]) -> bytes:
    """``_canonical(body)`` for an entry body, built by hand: a third of the cost.

    ``body``'s keys are already in sorted order; a test pins the equality.
    """
    parts = []
    for key, value in body.items():
        if value is None:
            encoded = "null"
        elif isinstance(value, int):
            encoded = str(value)
        else:
            encoded = _encode_str(value)
        parts.append(f'"{key}":{encoded}')
    return ("{" + ",".join(parts) + "}").encode()


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(obj)).hexdigest()


class AuditTicket:
    """The entries of one run that were queued rather than written.

    ``AuditLog._wait(ticket)`` returns once all of them are on disk, or
    raises ``AuditError`` if any of them could not be written. A ticket
    belongs to one run (a write-behind gate).
    """

    __slots__ = ("error", "pending")

    def __init__(self) -> None:
        self.pending = 0  # queued, not yet written (or failed)
        self.error: AuditError | None = None


class _Template:
    """The canonical encoding of an entry around its ``index``, ``prev`` and ``time``.

    The masked, JSON-encoded fields that stay the same from one call of a
    run to the next are encoded once; an entry is then five joins and one
    sha256. Keys in canonical (sorted) order: decision, grant_id, index,
    node_id, prev, reason, run_id, scope, subject, time, transform.
    """

    __slots__ = ("before_index", "before_prev", "before_time", "end", "fields")

    def __init__(self, fields: dict[str, Any]) -> None:
        enc = {k: "null" if v is None else _encode_str(v) for k, v in fields.items()}
        self.fields = fields
        self.before_index = f'{{"decision":{enc["decision"]},"grant_id":{enc["grant_id"]},"index":'
        self.before_prev = f',"node_id":{enc["node_id"]},"prev":"'
        self.before_time = (
            f'","reason":{enc["reason"]},"run_id":{enc["run_id"]},"scope":{enc["scope"]},'
            f'"subject":{enc["subject"]},"time":"'
        )
        self.end = f'","transform":{enc["transform"]}}}'


class _Pending:
    """One decision waiting for its place in the chain (and, once written, its hash)."""

    __slots__ = ("error", "hash", "index", "prev", "template", "ticket", "time")

    def __init__(self, template: _Template, time: str, ticket: AuditTicket | None) -> None:
        self.template = template
        self.time = time
        self.ticket = ticket
        self.index = -1
        self.prev = self.hash = ""
        self.error: AuditError | None = None


_TEMPLATES_MAX = 4096  # scopes come from guest arguments: keep the cache bounded
_QUEUE_MAX = 256  # queued entries written at once, barrier or not
_seconds: tuple[int, str] = (-1, "")


def _now_text() -> str:
    """``datetime.now(UTC)`` as ISO 8601 with microseconds and ``Z``, cheaply."""
    global _seconds
    sec, ns = divmod(time.time_ns(), 1_000_000_000)
    cached = _seconds
    if cached[0] != sec:
        cached = _seconds = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{cached[1]}.{ns // 1000:06d}Z"


class AuditLog:
    """An append-only, hash-chained log in ``directory``.

    ``append`` writes the entry before it returns. Write-behind gates only
    queue theirs, on an ``AuditTicket`` (``_record``); ``_wait(ticket)`` is
    the barrier that writes everything queued with one ``write`` and one
    head update (the chain is computed then, under the locks). Entries reach the log in
    the order they were queued or appended in this process: an ``append``
    first writes everything queued before it; ``flush``, ``close`` and exit
    write the rest.
    """

    def __init__(
        self,
        directory: Path,
        masker: Masker | None = None,
        *,
        key: Ed25519PrivateKey | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_after_s: float = CHECKPOINT_AFTER_S,
    ) -> None:
        """``key`` signs the checkpoints (default: IONWALL's key in ``directory``)."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = directory / "audit.jsonl"
        self.head_path = directory / "audit.head"
        self.checkpoints_path = directory / _checkpoint.CHECKPOINTS_FILE
        self._init_state(
            key or load_or_create_key(directory), masker, checkpoint_every, checkpoint_after_s
        )
        flags = os.O_CREAT | os.O_CLOEXEC
        try:
            self._log_fd = os.open(self.path, flags | os.O_WRONLY | os.O_APPEND, 0o600)
        except OSError as exc:
            if exc.errno not in READ_ONLY_ERRNOS:
                raise
            # A read-only data directory: the log can be read and verified; an
            # append raises AuditError (so the gate denies: nothing unrecorded runs).
            self._closed = f"{self.path}: cannot append to the audit log: {exc.strerror}"
            self._log_fd = self._ckpt_fd = -1
        try:
            if self._log_fd >= 0:
                self._ckpt_fd = os.open(
                    self.checkpoints_path, flags | os.O_RDWR | os.O_APPEND, 0o600
                )
            self._head = SharedFile(self.head_path, _HEAD_SIZE)
        except BaseException:
            for fd in (self._log_fd, self._ckpt_fd):
                if fd >= 0:
                    os.close(fd)
            raise

    def _init_state(
        self, key: Ed25519PrivateKey, masker: Masker | None, every: int, after_s: float
    ) -> None:
        """The state in memory, whatever holds the chain (files here, PostgreSQL
        in ``_pgaudit``)."""
        self._key = key
        self._kid = key_id(self._key.public_key())
        self._every = every
        self._after_s = after_s
        self._masker = masker or Masker()
        self._lock = threading.Lock()  # held while writing; guards the chain state
        self._closed = f"{self.path}: the audit log is closed"  # why appends fail
        # The head as this process last wrote it; another value means another
        # writer moved the log (or nothing is known yet): read its end first.
        self._head_seen = b""
        self._count = 0
        self._last = GENESIS
        self._signed = 0  # entries the last checkpoint covers, as the head says
        self._templates: dict[tuple[Any, ...], _Template] = {}
        self._queue: deque[_Pending] = deque()
        # The signer thread: started by the first append that leaves entries
        # unsigned, woken (once) per unsigned stretch, signs ``_after_s`` later.
        self._armed = False
        self._wake = threading.Event()
        self._signer: threading.Thread | None = None
        self._signer_pid = 0
        self._failing = False  # the last write failed (see ``watch_writes``)
        self._on_write: Callable[[AuditError | None], None] | None = None
        _open_logs.add(self)

    def watch_writes(self, listener: Callable[[AuditError | None], None]) -> None:
        """Calls ``listener(error)`` when an append fails, ``listener(None)`` when
        one succeeds again: for a health check. The error's ``__cause__`` is an
        ``OSError`` when the disk failed (full, read-only), something else when
        the log is damaged (which no free space mends). Called under the log's locks: it
        must be quick and must not append."""
        self._on_write = listener

    def close(self) -> None:
        """Writes what is queued, signs a checkpoint over it and closes the files."""
        with self._lock:
            self._drain()
            if self._log_fd >= 0:
                # Quietly: a command that only read (`ionflux audit verify` of a
                # damaged log) should not add a warning to what it reports.
                self._checkpoint_locked(logging.DEBUG)
                os.close(self._log_fd)
                os.close(self._ckpt_fd)
            self._head.close()
            self._log_fd = self._ckpt_fd = -1
            self._closed = f"{self.path}: the audit log is closed"
        self._wake.set()  # the signer sees the log closed and ends

    def append(
        self,
        *,
        subject: str,
        transform: str,
        scope: str,
        allowed: bool,
        reason: str,
        run_id: str | None = None,
        node_id: str | None = None,
        grant_id: str | None = None,
        decision: str | None = None,
    ) -> AuditEntry:
        """Writes one decision (masked), after anything queued before it, and
        returns it as written. Raises ``AuditError`` if it cannot be written.
        ``decision``: one of ``OWNER_DECISIONS`` (default: the gate's "allow" or
        "deny", from ``allowed``)."""
        pending = self._record(
            subject=subject, transform=transform, scope=scope, allowed=allowed, reason=reason,
            run_id=run_id, node_id=node_id, grant_id=grant_id, decision=decision,
        )  # fmt: skip
        return AuditEntry(
            index=pending.index, time=pending.time, prev=pending.prev, hash=pending.hash,
            **pending.template.fields,
        )  # fmt: skip

    def _record(
        self,
        *,
        subject: str,
        transform: str,
        scope: str,
        allowed: bool,
        reason: str,
        run_id: str | None = None,
        node_id: str | None = None,
        grant_id: str | None = None,
        ticket: AuditTicket | None = None,
        decision: str | None = None,
    ) -> _Pending:
        """``append`` without building the returned entry (the gate's path);
        with ``ticket``, only queues the entry (see ``wait``)."""
        key = (subject, transform, scope, allowed, reason, run_id, node_id, grant_id, decision)
        template = self._templates.get(key) or self._template(key)
        pending = _Pending(template, _now_text(), ticket)
        with self._lock:
            queue = self._queue
            if ticket is not None:
                if self._log_fd < 0:
                    raise AuditError(self._closed)
                ticket.pending += 1
                queue.append(pending)
                if len(queue) >= _QUEUE_MAX:  # a guest calling in a loop: bound the memory
                    self._drain()
            elif queue:
                queue.append(pending)
                self._drain()
                if pending.error is not None:
                    raise pending.error
            else:
                try:
                    self._write((pending,))
                except AuditError:
                    self._head_seen = b""
                    raise
        return pending

    def _wait(self, ticket: AuditTicket) -> None:
        """Returns once every entry queued on ``ticket`` is on disk, writing
        what is queued. Raises ``AuditError`` if any of them could not be
        written; the ticket is then cleared for reuse."""
        if ticket.pending:
            with self._lock:
                self._drain()
        error = ticket.error
        if error is not None:
            ticket.error = None
            raise error

    def flush(self) -> None:
        """Writes everything queued so far (failures go to the entries' tickets)."""
        with self._lock:
            self._drain()

    def _template(self, key: tuple[Any, ...]) -> _Template:
        subject, transform, scope, allowed, reason, run_id, node_id, grant_id, decision = key
        template = self._templates.get(key)
        if template is None:
            mask = self._masker.text
            template = _Template(
                {
                    "decision": decision or ("allow" if allowed else "deny"),
                    "grant_id": grant_id,
                    "node_id": None if node_id is None else mask(node_id),
                    "reason": mask(reason),
                    "run_id": None if run_id is None else mask(run_id),
                    "scope": mask(scope),
                    "subject": mask(subject),
                    "transform": mask(transform),
                }
            )
            if len(self._templates) >= _TEMPLATES_MAX:
                self._templates = {}
            self._templates[key] = template
        return template

    def _drain(self) -> None:
        """Writes every queued entry: one write, one head update. Caller holds ``_lock``."""
        queue = self._queue
        if not queue:
            return
        batch: list[_Pending] = []
        while queue:
            batch.append(queue.popleft())
        try:
            self._write(batch)
        except AuditError as exc:
            self._head_seen = b""
            for pending in batch:
                pending.error = exc
                if pending.ticket is not None:
                    pending.ticket.error = exc
        finally:
            for pending in batch:
                if pending.ticket is not None:
                    pending.ticket.pending -= 1

    def _write(self, batch: Sequence[_Pending]) -> None:
        if self._log_fd < 0:
            raise AuditError(self._closed)
        head = self._head
        head.lock()
        try:
            seen = head.read()
            if seen != self._head_seen:
                repaired = self._refresh(seen, repair=True)
                if repaired is not None:
                    batch = [repaired, *batch]
            lines, count, last = _chain(batch, self._count, self._last)
            data = lines[0] if len(lines) == 1 else b"".join(lines)
            new_head = b"%020d %s %020d\n" % (count, last.encode(), self._signed)
            head.write(new_head)  # first: see the module's docstring
            written = 0
            try:
                written = os.write(self._log_fd, data)
                if written != len(data):
                    raise OSError(
                        errno.ENOSPC,
                        f"short write ({written} of {len(data)} bytes): no space left on device?",
                    )
            except OSError:
                # The log did not take the entries: neither does the head. If part
                # of them landed, the log ends in a torn line: mark the head so the
                # next writer, in any process, cuts it (``_cut_torn_tail``).
                before = b"%020d %s " % (self._count, self._last.encode())
                head.write(before + _TORN_MARK + b"\n" if written else seen)
                raise
            if self._failing:
                self._note_write(None)
            self._count, self._last = count, last
            self._head_seen = new_head
            if count - self._signed >= self._every:
                self._sign_quietly(len(batch))
            elif not self._armed:
                self._arm()
        except OSError as exc:
            error = AuditError(f"{self.path}: cannot append to the audit log: {exc}")
            error.__cause__ = exc
            self._note_write(error)
            raise error from exc
        except AuditError as exc:  # the log's end is damaged
            self._note_write(exc)
            raise
        finally:
            head.unlock()

    def _note_write(self, failure: AuditError | None) -> None:
        self._failing = failure is not None
        if self._on_write is not None:
            try:
                self._on_write(failure)
            except Exception:  # a health check must not turn a write into a failure
                log.exception("%s: the write listener failed", self.path)

    def _refresh(self, seen: bytes, *, repair: bool = False) -> _Pending | None:
        """Another writer moved the log: its end from the log, the head's hint.

        With ``repair``, a torn last line is cut (``_cut_torn_tail``) and the
        entry that says so is returned, to be written first."""
        size = os.fstat(self._log_fd).st_size
        repaired = None
        end = _tail_bytes(self.path, size, 1)[1] if size else b""
        if repair and end and not end.endswith(b"\n"):
            self._count, self._last, repaired = self._cut_torn_tail(size)
        else:
            self._count, self._last = self._read_end(end)
        try:
            self._signed = min(int(seen[86:106]), self._count)
        except ValueError:  # no hint (an older head, none yet, a torn tail): sign soon
            self._signed = 0
        return repaired

    def _cut_torn_tail(self, size: int) -> tuple[int, str, _Pending]:
        """Cuts the log back to its last verified entry, keeping the cut bytes in
        a side file; returns the log's end and the entry that records the cut.

        Only a torn last line (bytes after the last newline: a write that failed
        part way) is cut. The complete entries before it must verify: each one's
        hash, the chain between them and the last signed checkpoint, if it falls
        among them (the stretch read is as long as writers may leave unsigned).
        Anything else is damage ``verify`` must report, not something a writer
        mends. Caller holds ``_lock`` and the head's lock."""
        window = unsigned_max(self._every) + 1
        start, data = _tail_bytes(self.path, size, window)
        cut = data.rindex(b"\n") + 1 if b"\n" in data else 0
        fragment = data[cut:]
        complete = data[:cut].splitlines(keepends=True)
        if start > 0 and complete:
            complete = complete[1:]  # the first line read may be cut
        try:
            count, last = _verify_run(complete, whole=start == 0)
            checkpoint = _checkpoint.last(self._ckpt_fd)
            if checkpoint is not None:
                first = count - len(complete)
                if checkpoint.count > count:
                    raise ValueError(
                        f"the last signed checkpoint covers {checkpoint.count} entries, "
                        f"only {count} precede the torn line"
                    )
                if checkpoint.count > first and not (
                    _hash_at(complete, checkpoint.count - 1 - first) == checkpoint.hash
                    and checkpoint.valid(self._key.public_key())
                ):
                    raise ValueError(
                        f"entry {checkpoint.count - 1} is not the one the last signed "
                        "checkpoint covers"
                    )
        except ValueError as exc:
            raise AuditError(
                f"{self.path}: the log ends in a torn line, but the entries before it do not "
                f"verify ({exc}): not repaired; run `ionflux audit verify`"
            ) from exc
        at = start + cut
        side = _keep_torn(self.path, fragment)
        os.ftruncate(self._log_fd, at)
        log.warning(
            "%s: cut a torn last line of %d bytes after entry %d; kept in %s",
            self.path, len(fragment), count - 1, side.name,
        )  # fmt: skip
        template = self._template(
            (
                "ionwall", "ionwall", "audit:repair", True,
                f"a torn last line of {len(fragment)} bytes (a write that failed part way: "
                f"a full disk or a writer killed mid-write) was cut after entry {count - 1} "
                f"at byte {at}; the cut bytes are kept in {side.name}",
                None, None, None, TORN_TAIL_CUT,
            )
        )  # fmt: skip
        return count, last, _Pending(template, _now_text(), None)

    # -- signed checkpoints (see ``_checkpoint``) ------------------------------

    def checkpoint(self) -> None:
        """Writes what is queued and signs the chain as it stands now."""
        with self._lock:
            self._drain()
            if self._log_fd >= 0:
                self._checkpoint_locked()

    def _checkpoint_locked(self, level: int = logging.WARNING) -> None:
        self._head.lock()
        try:
            seen = self._head.read()
            if seen != self._head_seen:
                self._refresh(seen)
            self._sign_quietly(0, level)
        except (OSError, AuditError) as exc:
            log.log(level, "%s: cannot sign an audit checkpoint: %s", self.checkpoints_path, exc)
        finally:
            self._head.unlock()

    def _sign_quietly(self, batch: int = 0, level: int = logging.WARNING) -> None:
        """``_sign``; a failure is logged, and ``verify`` reports the unsigned entries."""
        try:
            self._sign(batch)
        except (OSError, AuditError) as exc:
            log.log(level, "%s: cannot sign an audit checkpoint: %s", self.checkpoints_path, exc)

    def _sign(self, batch: int = 0) -> None:
        """Signs (count, last hash) unless nothing is unsigned. Caller holds
        ``_lock`` and the head's lock, with ``_count``/``_last`` current, and
        has just written ``batch`` entries.

        Where the last checkpoint is comes from the checkpoints file, not from
        the head: a writer never signs a stretch of entries longer than
        writers leave unsigned, which is what a chain re-hashed after its
        checkpoints were cut off looks like (``verify`` then names it)."""
        count, last = self._count, self._last
        if count == 0 or count <= self._signed:
            return
        before = _checkpoint.last_count(self._ckpt_fd) or 0
        unsigned = count - before
        if unsigned <= 0:  # signed by another writer already (or the log was cut back)
            self._set_signed(count if unsigned == 0 else self._signed)
            return
        if unsigned - batch > unsigned_max(self._every):
            self._set_signed(count)  # back off: try again ``every`` entries later
            raise AuditError(
                f"{count - before} entries follow the last signed checkpoint, more than "
                "writers leave unsigned: checkpoints were removed or the log rewritten; "
                "run `ionflux audit verify`"
            )
        signed = _checkpoint.sign(self._key, count, last, _now_text(), self._every, self._kid)
        data = signed.line()
        if os.write(self._ckpt_fd, data) != len(data):
            raise OSError(errno.EIO, f"{self.checkpoints_path}: short write")
        self._set_signed(count)

    def _set_signed(self, signed: int) -> None:
        self._signed = signed
        self._head_seen = b"%020d %s %020d\n" % (self._count, self._last.encode(), signed)
        self._head.write(self._head_seen)

    def _arm(self) -> None:
        """Wakes the signer: it signs what is unsigned ``_after_s`` from now."""
        self._armed = True
        if self._signer is None or self._signer_pid != os.getpid():  # none yet, or forked
            self._signer_pid = os.getpid()
            self._signer = threading.Thread(
                target=self._sign_later, name="ionwall-audit-signer", daemon=True
            )
            self._signer.start()
        self._wake.set()

    def _sign_later(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._log_fd < 0:
                return
            time.sleep(self._after_s)  # a batching delay, not a synchronisation
            self._armed = False  # appends from now on wake it again
            self.checkpoint()

    def _read_end(self, end: bytes) -> tuple[int, str]:
        """(entry count, last hash) from the last line of the log, in ``end``
        (the log's last bytes, holding its last line whole; empty: no entry)."""
        if not end:
            return 0, GENESIS
        try:
            last = json.loads(end.splitlines()[-1])
            return int(last["index"]) + 1, str(last["hash"])
        except (IndexError, ValueError, KeyError, TypeError) as exc:
            raise AuditError(
                f"{self.path}: the last entry is damaged, so nothing can be chained to it; "
                "run `ionflux audit verify`"
            ) from exc

    def tail(self, n: int = 20) -> list[AuditEntry]:
        """The last ``n`` entries, oldest first."""
        if n <= 0:
            return []
        self.flush()  # what this process has queued comes first
        return _parse_entries(_last_lines(self.path, n), self.path)

    def verify(self, public_key: Ed25519PublicKey | None = None) -> AuditReport:
        """Checks every entry, the signed checkpoints (against ``public_key``,
        default IONWALL's own) and the head; names the first bad entry."""
        self.flush()
        key = public_key or self._key.public_key()
        return _Verifier(self, key).run()

    def _check_head(self, count: int, last: str) -> tuple[int | None, str] | None:
        try:
            # zero bytes: the head is mapped at its full size before the first append
            head = self.head_path.read_text(encoding="ascii").strip("\0")
        except (OSError, UnicodeDecodeError):
            head = ""
        if not head:
            if count == 0:
                return None
            return 0, "the head record (audit.head) is missing or empty"
        try:
            written_s, head_hash = head[:_HEAD_SIZE].split()[:2]
            written = int(written_s)
        except ValueError:
            return 0, "the head record (audit.head) does not parse"
        return _against_head(count, last, written, head_hash, "log")


def _against_head(
    count: int, last: str, written: int, head_hash: str, what: str
) -> tuple[int | None, str] | None:
    """``count`` entries ending in ``last`` against a head record of ``written``
    entries ending in ``head_hash``: None when they agree, else (the first bad
    entry, why), naming ``what`` was read (the file's "log", PostgreSQL's "chain")."""
    if count < written:
        return count, (
            f"the {what} is truncated: entry {count} is missing "
            f"({written} entries were written, {count} remain)"
        )
    if count > written:
        return written, (
            f"entry {written} was appended outside IONWALL "
            f"(the head record counts {written} entries, the {what} has {count})"
        )
    if last != head_hash:
        return max(0, count - 1), (
            f"entry {count - 1} does not match the head record (the {what}'s end was rewritten)"
        )
    return None


def _chain(batch: Sequence[_Pending], count: int, last: str) -> tuple[list[bytes], int, str]:
    """The lines (each ending in a newline) of ``batch`` chained after ``count``
    entries ending with ``last``, and the chain's new (count, last hash); each
    pending entry learns its index, prev and hash."""
    lines = []
    for pending in batch:
        t = pending.template
        canonical = (
            f"{t.before_index}{count}{t.before_prev}{last}{t.before_time}{pending.time}{t.end}"
        ).encode()
        digest = hashlib.sha256(canonical).hexdigest()
        # Key order in the line does not matter (verify re-canonicalises),
        # so the hash is spliced in instead of encoding the entry twice.
        lines.append(b'%s,"hash":"%s"}\n' % (canonical[:-1], digest.encode()))
        pending.index, pending.prev, pending.hash = count, last, digest
        count += 1
        last = digest
    return lines, count, last


def unsigned_max(every: int) -> int:
    """The most entries a log may hold after its last signed checkpoint: writers
    sign once ``every`` are unsigned; one that died before signing leaves up to
    one batch more for the next one to sign."""
    return every + _QUEUE_MAX + 1


class _Verifier:
    """One pass over the log, the checkpoints and the head (``AuditLog.verify``)."""

    def __init__(self, audit: AuditLog, key: Ed25519PublicKey) -> None:
        self.audit = audit
        self.key = key
        self.kid = key_id(key)
        self.signed = 0
        self.signed_at: str | None = None
        self.every = audit._every
        self.repairs: list[int] = []

    checkpoints_name = _checkpoint.CHECKPOINTS_FILE

    def checkpoint_lines(self) -> Iterator[tuple[int, bytes]]:
        """(line number, raw line) of every checkpoint, oldest first."""
        return _checkpoint.read_all(self.audit.checkpoints_path)

    def entry_lines(self) -> Iterator[bytes]:
        """Every entry, oldest first, each ending in a newline."""
        return _lines(self.audit.path)

    def check_head(self, count: int, last: str) -> tuple[int | None, str] | None:
        """Whether the head record counts ``count`` entries ending with ``last``:
        None, or (the bad entry's index, the problem)."""
        return self.audit._check_head(count, last)

    def report(
        self, entries: int, index: int | None = None, problem: str | None = None
    ) -> AuditReport:
        return AuditReport(
            problem is None, entries, index, problem, self.signed, self.signed_at, self.kid,
            tuple(self.repairs),
        )  # fmt: skip

    def run(self) -> AuditReport:
        checkpoints: list[_checkpoint.Checkpoint] = []
        name = self.checkpoints_name
        for n, raw in self.checkpoint_lines():
            found = _checkpoint.parse(raw)
            if found is None:
                return self.report(
                    0, 0, f"line {n + 1} of {name} is not a checkpoint: it was edited"
                )
            if not found.valid(self.key):
                return self.report(
                    0, 0,
                    f"the checkpoint on line {n + 1} of {name} does not carry a valid signature "
                    f"by key {self.kid}: it was forged or edited",
                )  # fmt: skip
            if checkpoints and found.count < checkpoints[-1].count:
                return self.report(
                    0, 0, f"the checkpoints on lines {n} and {n + 1} of {name} are out of order"
                )
            checkpoints.append(found)
        pending = deque(checkpoints)
        prev = GENESIS
        count = 0
        for i, raw in enumerate(self.entry_lines()):
            mismatch = self._reach(pending, i, prev)
            if mismatch is not None:
                return mismatch
            problem = _check_line(i, raw, prev)
            if problem is not None:
                return self.report(i, i, problem)
            entry = json.loads(raw)
            prev = entry["hash"]
            if entry["decision"] == TORN_TAIL_CUT:
                self.repairs.append(i)
            count = i + 1
        mismatch = self._reach(pending, count, prev)
        if mismatch is not None:
            return mismatch
        if pending:
            beyond = pending[-1]
            return self.report(
                count,
                count,
                f"the log is truncated: entry {count} is missing (the checkpoint signed at "
                f"{beyond.time} covers {beyond.count} entries, {count} remain)",
            )
        limit = unsigned_max(self.every)
        if count - self.signed > limit:
            return self.report(
                count,
                self.signed,
                f"entries {self.signed}-{count - 1} follow the last signed checkpoint, more than "
                f"the {limit} writers may leave unsigned: the checkpoints after entry "
                f"{self.signed - 1 if self.signed else 0} were removed and the chain rewritten "
                f"(entry {self.signed} is the first not covered by a signature)",
            )
        head = self.check_head(count, prev)
        if head is not None:
            return self.report(count, *head)
        return self.report(count)

    def _reach(
        self, pending: deque[_checkpoint.Checkpoint], count: int, last: str
    ) -> AuditReport | None:
        """Checks the checkpoints taken at ``count`` entries against ``last``."""
        while pending and pending[0].count == count:
            c = pending.popleft()
            if c.hash != last:
                return self.report(
                    count,
                    self.signed,
                    f"entries {self.signed}-{count - 1} are not the ones the checkpoint signed "
                    f"at {c.time} covers: one of them was altered and the chain re-hashed "
                    f"(entry {self.signed} is the first after the last valid signed checkpoint)",
                )
            self.signed, self.signed_at, self.every = count, c.time, c.every
        return None


_open_logs: weakref.WeakSet[AuditLog] = weakref.WeakSet()


@atexit.register
def _flush_open_logs() -> None:
    """Entries still queued when the interpreter exits are written (and signed) here."""
    for audit in list(_open_logs):
        audit.checkpoint()


def _check_line(i: int, raw: bytes, prev: str) -> str | None:
    if not raw.endswith(b"\n"):
        return (
            f"entry {i} is truncated: the log ends in the middle of it (a write that failed "
            "part way; the next append cuts it, keeping the bytes in a side file)"
        )
    try:
        obj = json.loads(raw)
    except ValueError:
        return f"entry {i} is not valid JSON: it was edited or damaged"
    if not isinstance(obj, dict) or set(obj) != {*_FIELDS, "hash"}:
        return f"entry {i} does not have the fields of an audit entry: it was edited"
    claimed = obj.pop("hash")
    if _digest(obj) != claimed:
        return f"entry {i} was altered: its content does not match its hash"
    index = obj["index"]
    if index != i:
        if isinstance(index, int) and index > i:
            return f"entry {i} is missing: entry {index} stands in its place (entries removed)"
        return f"entry {i} is out of place: it carries index {index} (inserted or reordered)"
    if obj["prev"] != prev:
        return (
            f"entry {i} does not follow entry {i - 1}: the previous entry was altered "
            "and re-hashed, or entries were inserted, removed or reordered"
        )
    return None


def _tail_bytes(path: Path, size: int, lines: int) -> tuple[int, bytes]:
    """(offset, bytes) of the end of ``path`` up to ``size``: at least ``lines``
    whole lines before the last newline, or the whole file."""
    with path.open("rb") as f:
        chunk = 8192
        start = size
        data = b""
        while start > 0 and data.count(b"\n") <= lines:
            start = max(0, start - chunk)
            f.seek(start)
            data = f.read(size - start)
            chunk *= 2
    return start, data


def _verify_run(lines: Sequence[bytes], *, whole: bool) -> tuple[int, str]:
    """(count, last hash) of the chain ending with ``lines``, each an entry that
    verifies and follows the one before; ``whole``: they start the log. Raises
    ``ValueError`` naming what does not verify."""
    if not lines:
        if whole:
            return 0, GENESIS
        raise ValueError("no whole entry precedes it")
    prev: str | None = GENESIS if whole else None
    index = 0
    for raw in lines:
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or set(obj) != {*_FIELDS, "hash"}:
            raise ValueError("a line before it is not an audit entry")
        if prev is None:  # the first line read: its own hash and index are what there is
            prev, index = obj["prev"], obj["index"]
        problem = _check_line(index, raw, str(prev))
        if problem is not None:
            raise ValueError(problem)
        prev = obj["hash"]
        index += 1
    return index, str(prev)


def _hash_at(lines: Sequence[bytes], i: int) -> str | None:
    if not 0 <= i < len(lines):
        return None
    return str(json.loads(lines[i])["hash"])


def _keep_torn(path: Path, fragment: bytes) -> Path:
    """Writes ``fragment`` to ``<log>.torn-<time>`` (new, 0600, synced) for forensics."""
    stamp = _now_text().replace("-", "").replace(":", "")
    for n in range(100):
        side = path.with_name(f"{path.name}.torn-{stamp}" + (f"-{n}" if n else ""))
        try:
            fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        try:
            view = memoryview(fragment)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            side.unlink(missing_ok=True)
            raise
        os.close(fd)
        return side
    raise OSError(errno.EEXIST, f"{path}.torn-{stamp}: 100 side files of that time exist")


def _lines(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as f:
            yield from f
    except FileNotFoundError:
        return


def _parse_entries(lines: Iterable[str | bytes], where: object) -> list[AuditEntry]:
    """Stored lines as entries, in order (the file's and PostgreSQL's ``tail``);
    a line that does not parse is an ``AuditError`` naming ``where``."""
    out: list[AuditEntry] = []
    for line in lines:
        try:
            obj = json.loads(line)
            out.append(AuditEntry(**{k: obj[k] for k in (*_FIELDS, "hash")}))
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditError(
                f"{where}: an entry does not parse; run `ionflux audit verify`"
            ) from exc
    return out


def _last_lines(path: Path, n: int) -> list[bytes]:
    """The last ``n`` lines of ``path`` without reading all of it."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return []
    with f:
        end = f.seek(0, os.SEEK_END)
        chunk = 8192
        start = end
        data = b""
        while start > 0 and data.count(b"\n") <= n:
            start = max(0, start - chunk)
            f.seek(start)
            data = f.read(end - start)
            chunk *= 2
        lines = data.splitlines()
        if start > 0:
            lines = lines[1:]  # the first one may be cut
        return lines[-n:]
