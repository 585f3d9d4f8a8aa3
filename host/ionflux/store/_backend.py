"""The one seam between IONPOD and where blocks live.

A backend stores opaque blocks by CID and a set of pinned roots. It does not
interpret blocks and returns them as stored: checking that a block hashes to
its CID is the reader's job (:class:`~ionflux.store.Pod` re-hashes every block
on every read, whatever the backend). A backend does refuse to *store* a block
whose bytes do not match the CID it is stored under.

The API is synchronous on purpose: it is called from sandbox worker threads,
where a blocking call is the simple, correct thing, and every implementation
must be safe to call from several threads at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from ._cid import Cid


@runtime_checkable
class BlockBackend(Protocol):
    def get_block(self, cid: Cid) -> bytes:
        """The stored bytes (unverified); :class:`NotFound` if absent."""
        ...

    def put_block(self, cid: Cid, data: bytes) -> None:
        """Store ``data`` under ``cid``; :class:`CidMismatch` if it does not hash to it."""
        ...

    def has(self, cid: Cid) -> bool: ...

    def delete(self, cid: Cid) -> None:
        """Drop the block if present (no error if absent)."""
        ...

    def pin(self, cid: Cid) -> None:
        """Keep ``cid`` (recursively, where the backend collects garbage)."""
        ...

    def unpin(self, cid: Cid) -> None:
        """:class:`NotFound` if ``cid`` is not pinned."""
        ...

    def pins(self) -> list[Cid]:
        """The pinned roots, sorted by their string form."""
        ...

    def close(self) -> None: ...


def put_all(backend: BlockBackend, blocks: Iterable[tuple[Cid, bytes]]) -> Cid:
    """Store ``blocks`` (a file's, root last) through ``put_blocks`` in batches where the
    backend has it, else one by one; return the last CID."""
    root: Cid | None = None
    put_many: Callable[[list[tuple[Cid, bytes]]], None] | None
    put_many = getattr(backend, "put_blocks", None)
    batch: list[tuple[Cid, bytes]] = []
    for cid, data in blocks:
        root = cid
        if put_many is None:
            backend.put_block(cid, data)
            continue
        batch.append((cid, data))
        if len(batch) >= 16:
            put_many(batch)
            batch = []
    if batch and put_many is not None:
        put_many(batch)
    assert root is not None
    return root
