"""The two multibase alphabets CIDs use: base32 lower (``b``) and base58btc (CIDv0)."""

from __future__ import annotations

import base64

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def encode_base32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def decode_base32(text: str) -> bytes:
    if text != text.lower():
        # Upper case is a different multibase prefix ('B'); refuse a mixed string.
        raise ValueError("base32 multibase must be lower case")
    if not text or any(c not in "abcdefghijklmnopqrstuvwxyz234567" for c in text):
        raise ValueError("invalid base32 character")
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        data = base64.b32decode(padded)
    except ValueError as exc:
        raise ValueError(f"invalid base32: {exc}") from exc
    if encode_base32(data) != text:
        raise ValueError("non-canonical base32")
    return data


def encode_base58btc(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def decode_base58btc(text: str) -> bytes:
    n = 0
    for c in text:
        try:
            n = n * 58 + _B58_INDEX[c]
        except KeyError:
            raise ValueError(f"invalid base58btc character {c!r}") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body
