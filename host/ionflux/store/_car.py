"""CARv1 archives: ``varint(len) header`` then ``varint(len) cid block`` sections.

The header is the dag-cbor map ``{"roots": [CID…], "version": 1}``. Only that
much CBOR is needed here, so a small encoder/decoder for exactly that subset
lives in this module rather than a CBOR dependency.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, Any

from .._errors import StoreError
from ._cid import Cid
from ._varint import encode_uvarint

# A section bigger than this is refused before it is read: Kubo's own block
# limit is 2 MiB, so a larger "block" is a broken or hostile archive.
MAX_SECTION = 4 * 1024 * 1024
_MAX_HEADER = 1024 * 1024


# -- the CBOR subset of a CAR header ---------------------------------------------


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes((major << 5 | n,))
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes((major << 5 | extra,)) + n.to_bytes(size, "big")
    raise ValueError("integer too large for CBOR")


def _cbor(value: Any) -> bytes:
    if isinstance(value, bool) or value is None:
        raise ValueError("not in the CAR header subset")
    if isinstance(value, int):
        return _head(0, value)
    if isinstance(value, str):
        raw = value.encode()
        return _head(3, len(raw)) + raw
    if isinstance(value, Cid):
        raw = b"\0" + value.to_bytes()
        return b"\xd8\x2a" + _head(2, len(raw)) + raw
    if isinstance(value, list):
        return _head(4, len(value)) + b"".join(_cbor(v) for v in value)
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return _head(5, len(keys)) + b"".join(_cbor(k) + _cbor(value[k]) for k in keys)
    raise ValueError(f"not in the CAR header subset: {type(value).__name__}")


def _uncbor(buf: bytes, pos: int) -> tuple[Any, int]:
    first = buf[pos]
    major, info = first >> 5, first & 31
    pos += 1
    if info < 24:
        n = info
    elif 24 <= info <= 27:
        size = 1 << (info - 24)
        n = int.from_bytes(buf[pos : pos + size], "big")
        pos += size
    else:
        raise ValueError("indefinite lengths are not dag-cbor")
    if major == 0:
        return n, pos
    if major in (2, 3):
        raw = buf[pos : pos + n]
        if len(raw) != n:
            raise ValueError("truncated")
        return (raw if major == 2 else raw.decode()), pos + n
    if major == 4:
        items = []
        for _ in range(n):
            item, pos = _uncbor(buf, pos)
            items.append(item)
        return items, pos
    if major == 5:
        out: dict[str, Any] = {}
        for _ in range(n):
            key, pos = _uncbor(buf, pos)
            out[key], pos = _uncbor(buf, pos)
        return out, pos
    if major == 6 and n == 42:
        raw, pos = _uncbor(buf, pos)
        if not isinstance(raw, bytes) or raw[:1] != b"\0":
            raise ValueError("bad CID tag")
        cid, end = Cid.from_bytes(raw, 1)
        if end != len(raw):
            raise ValueError("trailing bytes in CID")
        return cid, pos
    raise ValueError(f"unsupported CBOR major type {major}")


def encode_header(roots: list[Cid]) -> bytes:
    return _cbor({"roots": roots, "version": 1})


def parse_header(buf: bytes) -> list[Cid]:
    try:
        header, end = _uncbor(buf, 0)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise StoreError(f"malformed CAR header: {exc}") from None
    if end != len(buf) or not isinstance(header, dict):
        raise StoreError("malformed CAR header")
    if header.get("version") != 1:
        raise StoreError(f"unsupported CAR version {header.get('version')!r} (only CARv1)")
    roots = header.get("roots")
    if not isinstance(roots, list) or not all(isinstance(r, Cid) for r in roots):
        raise StoreError("malformed CAR header: roots")
    return roots


# -- sections --------------------------------------------------------------------


def write_car(out: IO[bytes], roots: list[Cid], blocks: Iterable[tuple[Cid, bytes]]) -> None:
    header = encode_header(roots)
    out.write(encode_uvarint(len(header)) + header)
    for cid, data in blocks:
        raw = cid.to_bytes()
        out.write(encode_uvarint(len(raw) + len(data)))
        out.write(raw)
        out.write(data)


def _read_varint(stream: IO[bytes]) -> int | None:
    value = shift = 0
    for i in range(9):
        b = stream.read(1)
        if not b:
            if i == 0:
                return None
            raise StoreError("truncated CAR: varint cut short")
        value |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return value
        shift += 7
    raise StoreError("malformed CAR: varint too long")


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
