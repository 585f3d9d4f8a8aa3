"""Signed checkpoints of the audit chain: what makes a re-hashed chain fail ``verify``.

The hash chain alone shows that an entry was altered, inserted, removed or
reordered, unless whoever altered it also re-hashes every entry after it and
rewrites ``audit.head``: nothing in those files needs a secret. So every
``every`` entries (and when a log is closed, and after a quiet moment) a
writer signs the chain's state with IONWALL's Ed25519 key and appends it to
``audit.checkpoints``, one JSON object per line::

    {"count":512,"every":256,"hash":"…","kid":"…","sig":"…","time":"2026-…Z"}

``count`` entries were in the log and ``hash`` was the last one's hash;
``sig`` is the base64url Ed25519 signature of ``_DOMAIN`` + the canonical
JSON of the other fields. A signed checkpoint covers every entry before
``count``: each one's hash goes into the next one's, so changing any of them
changes ``hash``. Entries after the last checkpoint are only hash-chained.

Writers sign under the head's lock, so several processes sharing the log
append one ordered list of checkpoints; after any completed write fewer than
``every`` entries are left unsigned (a writer that dies between its entries
and its checkpoint leaves the next writer to sign). ``verify`` therefore also
refuses a log whose unsigned tail is longer than ``every`` plus one batch:
the checkpoints after it were removed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._keys import key_id

CHECKPOINTS_FILE = "audit.checkpoints"
_DOMAIN = b"ionwall-audit-checkpoint/1\n"  # a signature over one thing is never valid for another
_FIELDS = frozenset({"count", "every", "hash", "kid", "sig", "time"})


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """``count`` entries, the last one's ``hash``, signed at ``time``."""

    count: int
    hash: str
    time: str
    every: int
    kid: str
    sig: str

    def _body(self) -> bytes:
        body = {
            "count": self.count,
            "every": self.every,
            "hash": self.hash,
            "kid": self.kid,
            "time": self.time,
        }
        return _DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def line(self) -> bytes:
        obj = {
            "count": self.count,
            "every": self.every,
            "hash": self.hash,
            "kid": self.kid,
            "sig": self.sig,
            "time": self.time,
        }
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    def valid(self, key: Ed25519PublicKey) -> bool:
        try:
            key.verify(_unb64(self.sig), self._body())
        except (InvalidSignature, ValueError):
            return False
        return True


def sign(
    key: Ed25519PrivateKey, count: int, last: str, time: str, every: int, kid: str | None = None
) -> Checkpoint:
    """``kid``: ``key``'s id, if the caller has it at hand (it costs a hash to compute)."""
    unsigned = Checkpoint(count, last, time, every, kid or key_id(key.public_key()), "")
    sig = base64.urlsafe_b64encode(key.sign(unsigned._body())).rstrip(b"=").decode("ascii")
    return Checkpoint(count, last, time, every, unsigned.kid, sig)


def parse(raw: bytes) -> Checkpoint | None:
    """The checkpoint on one line, or None if the line is not one."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict) or set(obj) != _FIELDS:
        return None
    values: dict[str, Any] = obj
    count, every = values["count"], values["every"]
    texts = (values["hash"], values["time"], values["kid"], values["sig"])
    if not (isinstance(count, int) and isinstance(every, int) and count >= 0 and every > 0):
        return None
    if not all(isinstance(t, str) for t in texts):
        return None
    return Checkpoint(count, *texts[:2], every, *texts[2:])


def read_all(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of every checkpoint in ``path``, oldest first."""
    try:
        with path.open("rb") as f:
            yield from enumerate(f)
    except FileNotFoundError:
        return


def last_count(fd: int) -> int | None:
    """The ``count`` of the last checkpoint in the file open as ``fd`` (None: none
    or unreadable). Writers only need the count: ``verify`` checks signatures."""
    found = last(fd)
    return None if found is None else found.count


def last(fd: int) -> Checkpoint | None:
    """The last checkpoint in the file open as ``fd``, unchecked (None: none or
    unreadable)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    start = max(0, size - 512)  # a line is about 250 bytes
    data = os.pread(fd, size - start, start)
    lines = data.rstrip(b"\n").rsplit(b"\n", 1)
    return parse(lines[-1])


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64url: {text!r}") from exc
