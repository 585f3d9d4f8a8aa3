"""Unsigned LEB128 varints, as multiformats and protobuf write them."""

from __future__ import annotations

# Multiformats caps varints at 9 bytes (63 bits); protobuf allows 10. Nine is
# plenty for every length and size we read, and refuses absurd input early.
_MAX_BYTES = 9


def encode_uvarint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_uvarint(buf: bytes | memoryview, pos: int = 0) -> tuple[int, int]:
    """Return ``(value, next_pos)``; ValueError on truncated or non-minimal input."""
    value = 0
    shift = 0
    for i in range(_MAX_BYTES):
        if pos + i >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise ValueError("non-minimal varint")
            return value, pos + i + 1
        shift += 7
    raise ValueError("varint too long")
