"""CARv1 archives: ``varint(len) header`` then ``varint(len) cid block`` sections.

The header is the dag-cbor map ``{"roots": [CID…], "version": 1}``, written and
read with ``dag-cbor`` (strict: a header that is not canonical dag-cbor is
refused); varints are ``multiformats``'.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, Any

import dag_cbor
from dag_cbor.encoding.err import CBORError
from multiformats import CID, varint

from .._errors import StoreError
from ._cid import Cid

# A section bigger than this is refused before it is read: Kubo's own block
# limit is 2 MiB, so a larger "block" is a broken or hostile archive.
MAX_SECTION = 4 * 1024 * 1024
_MAX_HEADER = 1024 * 1024
_MAX_VARINT = 9  # bytes, as multiformats.varint allows


# -- the header --------------------------------------------------------------------


def encode_header(roots: list[Cid]) -> bytes:
    header: dict[str, Any] = {
        "roots": [CID.decode(root.to_bytes()) for root in roots],
        "version": 1,
    }
    return dag_cbor.encode(header)


def parse_header(buf: bytes) -> list[Cid]:
    try:
        header = dag_cbor.decode(buf)
    except (CBORError, ValueError, LookupError, RecursionError) as exc:
        # RecursionError: a header of deeply nested lists (it is at most 1 MiB).
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreError(f"malformed CAR header: {reason}") from None
    if not isinstance(header, dict):
        raise StoreError("malformed CAR header")
    if header.get("version") != 1:
        raise StoreError(f"unsupported CAR version {header.get('version')!r} (only CARv1)")
    roots = header.get("roots")
    if not isinstance(roots, list):
        raise StoreError("malformed CAR header: roots")
    out: list[Cid] = []
    for root in roots:
        if not isinstance(root, CID):
            raise StoreError("malformed CAR header: roots")
        raw = bytes(root)
        cid, end = Cid.from_bytes(raw)  # InvalidCid (a StoreError) if IONPOD cannot hold it
        if end != len(raw):
            raise StoreError("malformed CAR header: trailing bytes in a root CID")
        out.append(cid)
    return out


# -- sections --------------------------------------------------------------------


def write_car(out: IO[bytes], roots: list[Cid], blocks: Iterable[tuple[Cid, bytes]]) -> None:
    header = encode_header(roots)
    out.write(varint.encode(len(header)) + header)
    for cid, data in blocks:
        raw = cid.to_bytes()
        out.write(varint.encode(len(raw) + len(data)))
        out.write(raw)
        out.write(data)


def _read_varint(stream: IO[bytes]) -> int | None:
    """The next varint, or None at the end of the stream (before its first byte)."""
    head = stream.read(1)
    if not head:
        return None
    raw = bytearray(head)
    while raw[-1] & 0x80 and len(raw) < _MAX_VARINT:  # read up to its last byte
        more = stream.read(1)
        if not more:
            raise StoreError("truncated CAR: varint cut short")
        raw += more
    try:
        return varint.decode(raw)
    except ValueError as exc:
        raise StoreError(f"malformed CAR: {exc}") from None


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise StoreError("truncated CAR: section cut short")
    return data


def read_car(stream: IO[bytes]) -> tuple[list[Cid], Iterator[tuple[Cid, bytes]]]:
    """Read the header now; return the roots and a lazy iterator of unverified sections."""
    n = _read_varint(stream)
    if n is None or n > _MAX_HEADER:
        raise StoreError("malformed CAR: no header")
    roots = parse_header(_read_exact(stream, n))

    def sections() -> Iterator[tuple[Cid, bytes]]:
        while (size := _read_varint(stream)) is not None:
            if size > MAX_SECTION:
                raise StoreError(f"CAR section of {size} bytes is past the {MAX_SECTION} limit")
            section = _read_exact(stream, size)
            cid, pos = Cid.from_bytes(section)
            yield cid, section[pos:]

    return roots, sections()
