"""UnixFS files: the same blocks Kubo writes for ``ipfs add --cid-version=1 --raw-leaves``.

Import (Kubo's defaults, boxo ``importer/balanced``):

- fixed-size chunks of 256 KiB (``size-262144``), each a raw block (codec 0x55);
- one chunk (or an empty file) is the whole file: its CID is the raw leaf's;
- more chunks hang under dag-pb nodes with at most 174 links, filled depth first:
  the first full node of depth ``d`` becomes the first child of a node of depth
  ``d+1``, which is then filled with further nodes of depth ``d``;
- a node's UnixFS Data is ``Type=File, filesize, blocksizes[]`` (no inline data),
  and each link carries ``Name=""`` and ``Tsize``: the child's cumulative size
  (a raw leaf's length; a node's encoded length plus its links' Tsizes).

Reading accepts any UnixFS file (raw leaves or dag-pb leaves with inline data)
and checks the tree's sizes against what it claims.

UnixFS has no maintained Python library; its Data protobuf is written and read
here, with the varints of ``_dagpb`` (which says why they are read by hand).
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import BinaryIO, Final, Protocol

from multiformats.varint import encode as encode_uvarint

from .._errors import StoreError, TooLarge
from ._cid import DAG_PB, RAW, Cid
from ._dagpb import PBLink, PBNode, decode_uvarint, encode_pbnode, parse_pbnode

CHUNK_SIZE: Final = 262144
MAX_LINKS: Final = 174

# UnixFS Data.Type
T_RAW: Final = 0
T_DIRECTORY: Final = 1
T_FILE: Final = 2
T_METADATA: Final = 3
T_SYMLINK: Final = 4
T_HAMT_SHARD: Final = 5

Block = tuple[Cid, bytes]


@dataclass(frozen=True, slots=True)
class UnixfsData:
    """The protobuf in a UnixFS dag-pb node's Data field (fields we use)."""

    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = field(default=())


def encode_unixfs_data(d: UnixfsData) -> bytes:
    out = bytearray(b"\x08" + encode_uvarint(d.type))
    if d.data is not None:
        out += b"\x12" + encode_uvarint(len(d.data)) + d.data
    if d.filesize is not None:
        out += b"\x18" + encode_uvarint(d.filesize)
    for size in d.blocksizes:  # proto2 repeated scalars are not packed
        out += b"\x20" + encode_uvarint(size)
    return bytes(out)


def parse_unixfs_data(buf: bytes) -> UnixfsData:
    pos = 0
    type_: int | None = None
    data: bytes | None = None
    filesize: int | None = None
    sizes: list[int] = []
    try:
        while pos < len(buf):
            key, pos = decode_uvarint(buf, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = decode_uvarint(buf, pos)
                if number == 1:
                    type_ = value
                elif number == 3:
                    filesize = value
                elif number == 4:
                    sizes.append(value)
                # 5 hashType, 6 fanout, 7 mode: not needed to read a file
            elif wire == 2:
                n, pos = decode_uvarint(buf, pos)
                if pos + n > len(buf):
                    raise ValueError("length past end")
                chunk = buf[pos : pos + n]
                pos += n
                if number == 2:
                    data = chunk
                elif number == 4:  # tolerate packed blocksizes
                    p = 0
                    while p < len(chunk):
                        value, p = decode_uvarint(chunk, p)
                        sizes.append(value)
                # 8 mtime: ignored
            else:
                raise ValueError(f"unexpected wire type {wire}")
    except ValueError as exc:
        raise StoreError(f"malformed UnixFS data: {exc}") from None
    if type_ is None:
        raise StoreError("malformed UnixFS data: no Type")
    return UnixfsData(type_, data, filesize, tuple(sizes))


# -- import -------------------------------------------------------------------


def iter_chunks(source: bytes | BinaryIO, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Fixed-size chunks, every one full except the last (Kubo's ``size-N`` splitter)."""
    stream: BinaryIO = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    pending = b""
    while True:
        piece = stream.read(size - len(pending))
        if not piece:
            if pending:
                yield pending
            return
        pending += piece
        if len(pending) == size:
            yield pending
            pending = b""


@dataclass(frozen=True, slots=True)
class _Child:
    cid: Cid
    filesize: int  # bytes of file content under it
    tsize: int  # cumulative block bytes under it (the link's Tsize)


class _Chunks:
    """A peekable chunk iterator: ``done()`` is boxo's ``DagBuilderHelper.Done``."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._next: bytes | None = next(self._it, None)

    def done(self) -> bool:
        return self._next is None

    def take(self) -> bytes:
        assert self._next is not None
        chunk, self._next = self._next, next(self._it, None)
        return chunk


def _leaf(chunk: bytes) -> tuple[Block, _Child]:
    cid = Cid.for_block(RAW, chunk)
    return (cid, chunk), _Child(cid, len(chunk), len(chunk))


def _node(children: list[_Child]) -> tuple[Block, _Child]:
    data = UnixfsData(
        T_FILE,
        filesize=sum(c.filesize for c in children),
        blocksizes=tuple(c.filesize for c in children),
    )
    block = encode_pbnode(
        PBNode(tuple(PBLink(c.cid, "", c.tsize) for c in children), encode_unixfs_data(data))
    )
    cid = Cid.for_block(DAG_PB, block)
    tsize = len(block) + sum(c.tsize for c in children)
    return (cid, block), _Child(cid, data.filesize or 0, tsize)


def _fill(chunks: _Chunks, depth: int, first: _Child | None) -> Generator[Block, None, _Child]:
    children = [first] if first is not None else []
    while len(children) < MAX_LINKS and not chunks.done():
        if depth == 1:
            block, child = _leaf(chunks.take())
            yield block
        else:
            child = yield from _fill(chunks, depth - 1, None)
        children.append(child)
    block, node = _node(children)
    yield block
    return node


def iter_file_blocks(chunks: Iterable[bytes]) -> Iterator[Block]:
    """Every block of the UnixFS file made of ``chunks``, children first; the root is last."""
    it = _Chunks(chunks)
    if it.done():
        yield _leaf(b"")[0]
        return
    block, root = _leaf(it.take())
    yield block
    depth = 1
    while not it.done():
        root = yield from _fill(it, depth, root)
        depth += 1


def cid_for_bytes(data: bytes) -> str:
    """The CID Kubo prints for ``ipfs add --cid-version=1 --raw-leaves`` of a file of ``data``."""
    if len(data) <= CHUNK_SIZE:  # one chunk: the file is its raw leaf (most run values)
        return str(Cid.for_block(RAW, data))
    # Keep only the last block (the root), not the whole file, in memory.
    ((root, _),) = deque(iter_file_blocks(iter_chunks(data)), maxlen=1)
    return str(root)


# -- read ---------------------------------------------------------------------


class LeafSource(Protocol):
    """Raw leaves of one file read in content order from a stream (Kubo's ``cat``),
    instead of one block request per leaf. It hands out only verified bytes."""

    def wants(self, cid: Cid) -> bool:
        """Whether to read this leaf from the stream (False: fetch it as a block)."""
        ...

    def read(self, cid: Cid, offset: int, size: int) -> bytes:
        """The ``size`` bytes at ``offset`` of the file, verified to hash to ``cid``
        (:class:`CidMismatch` naming ``cid`` otherwise)."""
        ...

    def close(self) -> None: ...


def file_size(root: Cid, block: bytes) -> int | None:
    """The size a root block says its file has, without fetching anything else."""
    if root.codec == RAW:
        return len(block)
    if root.codec != DAG_PB:
        return None
    node = parse_pbnode(block)
    if node.data is None:
        return None
    meta = parse_unixfs_data(node.data)
    if meta.type == T_FILE or meta.type == T_RAW:
        if meta.filesize is not None:
            return meta.filesize
        if not node.links:
            return len(meta.data or b"")
    return None


def iter_file(
    fetch: Callable[[Cid], bytes],
    root: Cid,
    max_size: int | None = None,
    *,
    prefetch: int = 0,
    leaves: LeafSource | None = None,
) -> Iterator[bytes]:
    """Stream a UnixFS file's content, fetching (already verified) blocks through ``fetch``.

    Raises :class:`TooLarge` as soon as the root claims, or the content reaches,
    more than ``max_size`` bytes; :class:`StoreError` if the tree contradicts itself.
    With ``prefetch > 0``, up to that many of a node's children are fetched
    ahead on worker threads (for a remote backend, where each block is a round
    trip); content still comes out strictly in order. With ``leaves``, raw
    leaves it ``wants`` are read from it in order instead of fetched (one stream
    rather than a request per leaf); it is closed when the walk ends.
    """
    total = 0
    pool = ThreadPoolExecutor(prefetch, thread_name_prefix="ionpod-fetch") if prefetch else None

    def emit(chunk: bytes) -> bytes:
        nonlocal total
        total += len(chunk)
        if max_size is not None and total > max_size:
            raise TooLarge(f"{root} is larger than the limit of {max_size} bytes")
        return chunk

    first = fetch(root)
    claimed = file_size(root, first)
    if max_size is not None and claimed is not None and claimed > max_size:
        raise TooLarge(f"{root} is {claimed} bytes, past the limit of {max_size} bytes")

    def walk(cid: Cid, block: bytes, expect: int | None) -> Iterator[bytes]:
        if cid.codec == RAW:
            if expect is not None and len(block) != expect:
                raise StoreError(f"UnixFS file {root}: leaf {cid} is not the size its parent says")
            yield emit(block)
            return
        if cid.codec != DAG_PB:
            raise StoreError(f"{cid} is {cid.codec_name}, not a UnixFS file")
        node = parse_pbnode(block)
        if node.data is None:
            raise StoreError(f"{cid} is dag-pb without UnixFS data")
        meta = parse_unixfs_data(node.data)
        if meta.type == T_DIRECTORY or meta.type == T_HAMT_SHARD:
            raise StoreError(f"{cid} is a UnixFS directory, not a file")
        if meta.type not in (T_FILE, T_RAW):
            raise StoreError(f"{cid} is a UnixFS node of type {meta.type}, not a file")
        if node.links and len(meta.blocksizes) != len(node.links):
            raise StoreError(f"UnixFS file {root}: {cid} has links and blocksizes that disagree")
        inline = meta.data or b""
        size = len(inline) + sum(meta.blocksizes)
        if meta.filesize is not None and meta.filesize != size:
            raise StoreError(
                f"UnixFS file {root}: {cid} claims {meta.filesize} bytes, holds {size}"
            )
        if expect is not None and size != expect:
            raise StoreError(f"UnixFS file {root}: {cid} is not the size its parent says")
        if inline:
            yield emit(inline)
        children = iter(zip(node.links, meta.blocksizes, strict=False))

        def from_stream(child: Cid) -> bool:
            return leaves is not None and child.codec == RAW and leaves.wants(child)

        def read(child: Cid, child_size: int) -> bytes:
            assert leaves is not None
            return leaves.read(child, total, child_size)  # ``total``: the file offset reached

        if pool is None:
            for link, child_size in children:
                block = read(link.hash, child_size) if from_stream(link.hash) else fetch(link.hash)
                yield from walk(link.hash, block, child_size)
            return
        submit = pool.submit
        # A leaf to stream is read when its turn comes (None); anything else is fetched ahead.
        ahead: deque[tuple[Cid, int, Future[bytes] | None]] = deque()

        def queue(child: Cid, child_size: int) -> None:
            future = None if from_stream(child) else submit(fetch, child)
            ahead.append((child, child_size, future))

        for link, child_size in islice(children, prefetch):
            queue(link.hash, child_size)
        while ahead:
            cid, child_size, future = ahead.popleft()
            for link, next_size in islice(children, 1):
                queue(link.hash, next_size)
            block = read(cid, child_size) if future is None else future.result()
            yield from walk(cid, block, child_size)

    try:
        yield from walk(root, first, claimed if root.codec == DAG_PB else None)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if leaves is not None:
            leaves.close()
