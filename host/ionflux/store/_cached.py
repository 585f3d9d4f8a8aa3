"""A remote backend (Kubo) with the local store in front of it as a verified cache.

Reads try the local copy first and re-hash it; a block that does not match its
CID (tampered with, or torn by a crash) is dropped and fetched again from the
remote, which must then match too. Nothing unverified is ever cached. Writes go
to the remote first (the source of truth), then the cache; pins live remotely.
A whole file (``put_file``) streams to the remote while its blocks, computed
here, go into the cache as they pass. A file read from a remote that can
stream content (``file_leaves``) keeps each leaf once it is verified.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .._errors import NotFound
from ._backend import BlockBackend, put_all
from ._cid import Cid
from ._local import LocalBackend
from ._unixfs import Block, LeafSource

log = logging.getLogger("ionflux.store")


class CachedBackend:
    def __init__(self, remote: BlockBackend, cache: LocalBackend) -> None:
        self.remote = remote
        self.cache = cache

    def get_block(self, cid: Cid) -> bytes:
        try:
            data = self.cache.get_block(cid)
        except NotFound:
            pass
        else:
            if cid.matches(data):
                return data
            log.warning("cached block %s does not match its CID; dropped, refetching", cid)
            self.cache.delete(cid)
        data = self.remote.get_block(cid)
        cid.verify(data)
        self.cache.put_block(cid, data)
        return data

    def put_block(self, cid: Cid, data: bytes) -> None:
        cid.verify(data)
        self.remote.put_block(cid, data)
        self.cache.put_block(cid, data)

    def put_blocks(self, blocks: list[tuple[Cid, bytes]]) -> None:
        for cid, data in blocks:
            cid.verify(data)
        put_many = getattr(self.remote, "put_blocks", None)
        if put_many is not None:
            put_many(blocks)
        else:
            for cid, data in blocks:
                self.remote.put_block(cid, data)
        for cid, data in blocks:
            self.cache.put_block(cid, data)

    def put_file(self, blocks: Iterable[Block]) -> Cid:
        """A UnixFS file's blocks (``iter_file_blocks``): to the remote's ``put_file``
        where it has one, into the cache as they go by."""
        put_file: Callable[[Iterable[Block]], Cid] | None = getattr(self.remote, "put_file", None)
        if put_file is None:
            return put_all(self, blocks)

        def cached() -> Iterator[Block]:
            for cid, data in blocks:
                self.cache.put_block(cid, data)  # verifies
                yield cid, data

        return put_file(cached())

    def file_leaves(self, root: Cid) -> LeafSource | None:
        """The remote's streamed leaves of ``root``, skipping and filling the cache."""
        opener: Callable[..., Any] | None = getattr(self.remote, "file_leaves", None)
        if opener is None:
            return None
        source: LeafSource = opener(root, cache=self.cache)
        return source

    def has(self, cid: Cid) -> bool:
        return self.cache.has(cid) or self.remote.has(cid)

    def delete(self, cid: Cid) -> None:
        self.remote.delete(cid)
        self.cache.delete(cid)

    def pin(self, cid: Cid) -> None:
        self.remote.pin(cid)

    def unpin(self, cid: Cid) -> None:
        self.remote.unpin(cid)

    def pins(self) -> list[Cid]:
        return self.remote.pins()

    def close(self) -> None:
        self.remote.close()
        self.cache.close()
