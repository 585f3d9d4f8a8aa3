"""The audit log: every gate decision, append-only and hash-chained.

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
(This makes tampering evident, not impossible: whoever can rewrite both files
can forge a history. Ship the head elsewhere if that matters.)

Appends take ``audit.head`` as an ``fcntl.flock`` lock (processes) and a
thread lock (threads), and re-read the log's end when another writer moved
it, so several threads and processes append one consistent chain. Strings are
masked (``Masker``) before they are written. Appends are not fsync'ed: a
crash may lose the last entries, and ``verify`` then names them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring as _encode_str  # what json.dumps uses
from pathlib import Path
from typing import Any

from ._errors import AuditError
from ._mask import Masker

GENESIS = "0" * 64
_FIELDS = (
    "index", "time", "subject", "transform", "run_id", "node_id",
    "scope", "decision", "reason", "grant_id", "prev",
)  # fmt: skip
_HEAD_SIZE = 86  # "%020d %s\n" % (count, sha256 hex)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    index: int
    time: str
    subject: str
    transform: str
    run_id: str | None
    node_id: str | None
    scope: str
    decision: str  # "allow" | "deny"
    reason: str
    grant_id: str | None
    prev: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The outcome of ``AuditLog.verify``: ``index`` is the first bad entry."""

    ok: bool
    entries: int
    index: int | None = None
    problem: str | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"audit log intact: {self.entries} entries, chain and head verified"
        return f"audit log damaged: {self.problem}"

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


class AuditLog:
    """An append-only, hash-chained log in ``directory``."""

    def __init__(self, directory: Path, masker: Masker | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = directory / "audit.jsonl"
        self.head_path = directory / "audit.head"
        self._masker = masker or Masker()
        self._lock = threading.Lock()
        flags = os.O_CREAT | os.O_CLOEXEC
        self._log_fd = os.open(self.path, flags | os.O_WRONLY | os.O_APPEND, 0o600)
        self._head_fd = os.open(self.head_path, flags | os.O_RDWR, 0o600)
        self._size = -1  # unknown: read the end of the log on the first append
        self._count = 0
        self._last = GENESIS

    def close(self) -> None:
        with self._lock:
            for fd in (self._log_fd, self._head_fd):
                if fd >= 0:
                    os.close(fd)
            self._log_fd = self._head_fd = -1

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
    ) -> AuditEntry:
        """Writes one decision (masked) and returns it as written."""
        mask = self._masker.text
        body: dict[str, Any] = {
            "decision": "allow" if allowed else "deny",
            "grant_id": grant_id,
            "index": 0,
            "node_id": None if node_id is None else mask(node_id),
            "prev": GENESIS,
            "reason": mask(reason),
            "run_id": None if run_id is None else mask(run_id),
            "scope": mask(scope),
            "subject": mask(subject),
            "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "transform": mask(transform),
        }
        with self._lock:
            if self._log_fd < 0:
                raise AuditError(f"{self.path}: the audit log is closed")
            fcntl.flock(self._head_fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(self._log_fd).st_size
                if size != self._size:
                    self._count, self._last = self._read_end(size)
                body["index"] = self._count
                body["prev"] = self._last
                canonical = _fast_canonical(body)
                digest = hashlib.sha256(canonical).hexdigest()
                # Key order in the line does not matter (verify re-canonicalises),
                # so the hash is spliced in instead of encoding the entry twice.
                line = b'%s,"hash":"%s"}\n' % (canonical[:-1], digest.encode())
                os.write(self._log_fd, line)
                self._size = size + len(line)
                self._count += 1
                self._last = digest
                os.pwrite(self._head_fd, f"{self._count:020d} {digest}\n".encode(), 0)
            except OSError as exc:
                self._size = -1
                raise AuditError(f"{self.path}: cannot append to the audit log: {exc}") from exc
            finally:
                fcntl.flock(self._head_fd, fcntl.LOCK_UN)
        return AuditEntry(hash=digest, **body)

    def _read_end(self, size: int) -> tuple[int, str]:
        """(entry count, last hash) from the last line of the log."""
        if size == 0:
            return 0, GENESIS
        lines = _last_lines(self.path, 1)
        try:
            last = json.loads(lines[-1])
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
        out: list[AuditEntry] = []
        for raw in _last_lines(self.path, n):
            try:
                obj = json.loads(raw)
                out.append(AuditEntry(**{k: obj[k] for k in (*_FIELDS, "hash")}))
            except (ValueError, KeyError, TypeError) as exc:
                raise AuditError(
                    f"{self.path}: an entry does not parse; run `ionflux audit verify`"
                ) from exc
        return out

    def verify(self) -> AuditReport:
        """Checks every entry and the head; names the first bad entry."""
        prev = GENESIS
        count = 0
        for i, raw in enumerate(_lines(self.path)):
            count = i + 1
            problem = _check_line(i, raw, prev)
            if problem is not None:
                return AuditReport(False, i, i, problem)
            prev = json.loads(raw)["hash"]
        return self._check_head(count, prev)

    def _check_head(self, count: int, last: str) -> AuditReport:
        try:
            head = self.head_path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            head = ""
        if not head:
            if count == 0:
                return AuditReport(True, 0)
            return AuditReport(False, count, 0, "the head record (audit.head) is missing or empty")
        try:
            written_s, head_hash = head[:_HEAD_SIZE].split()
            written = int(written_s)
        except ValueError:
            return AuditReport(False, count, 0, "the head record (audit.head) does not parse")
        if count < written:
            return AuditReport(
                False,
                count,
                count,
                f"the log is truncated: entry {count} is missing "
                f"({written} entries were written, {count} remain)",
            )
        if count > written:
            return AuditReport(
                False,
                count,
                written,
                f"entry {written} was appended outside IONWALL "
                f"(the head record counts {written} entries, the log has {count})",
            )
        if last != head_hash:
            return AuditReport(
                False,
                count,
                max(0, count - 1),
                f"entry {count - 1} does not match the head record (the log's end was rewritten)",
            )
        return AuditReport(True, count)


def _check_line(i: int, raw: bytes, prev: str) -> str | None:
    if not raw.endswith(b"\n"):
        return f"entry {i} is truncated: the log ends in the middle of it"
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


def _lines(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as f:
            yield from f
    except FileNotFoundError:
        return


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
