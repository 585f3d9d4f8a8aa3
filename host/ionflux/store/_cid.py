"""CIDs: the content identifiers of IONPOD, as IPFS/Kubo writes them.

A CID names a block by ``(version, codec, multihash)``. IONFLUX writes CIDv1 in
base32 lower (``bafy…``, ``bafk…``) and reads CIDv0 (``Qm…``, always dag-pb) too.
Only sha2-256 is accepted, and only the codecs the store can interpret: raw,
dag-pb, dag-cbor and dag-json. Anything else is :class:`InvalidCid`.

The formats are ``multiformats``' (varints, multihash, multibase, multicodec
codes). One operation does not go through it on every call: with one hash and
four codecs, every CID IONPOD accepts is one of four fixed byte prefixes
followed by the 32-byte digest, so the prefixes are built once with
``multiformats`` and a CIDv1 is then parsed or printed by a table lookup and the
standard library's base32 (RFC 4648, which multibase ``b`` is, in lower case
without padding). ``multiformats`` validates every argument at run time:
its ``CID.decode`` of a base32 CIDv1 takes about 100 µs and ``str(CID)`` about
105 µs (x86_64, Python 3.11), against about 5 µs and 3 µs here (a binary CID:
1 µs), and CIDs are parsed and printed on every pod read and write. Whatever
the lookup does not match, CIDv0 (base58btc) and refusals, goes through
``multiformats``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Final

from multiformats import multibase, multicodec, multihash, varint

from .._errors import CidMismatch, InvalidCid

RAW: Final = 0x55
DAG_PB: Final = 0x70
DAG_CBOR: Final = 0x71
DAG_JSON: Final = 0x0129

CODEC_NAMES: Final[dict[int, str]] = {
    code: multicodec.get(code=code).name for code in (RAW, DAG_PB, DAG_CBOR, DAG_JSON)
}

SHA2_256: Final = multihash.get("sha2-256").code
_DIGEST_LEN: Final = 32
# A sha2-256 multihash without its digest: <code><length>.
_MH_PREFIX: Final = varint.encode(SHA2_256) + varint.encode(_DIGEST_LEN)
# Every CIDv1 accepted is <version 1><codec><sha2-256 prefix><32-byte digest>.
_V1_PREFIX: Final[dict[int, bytes]] = {
    codec: varint.encode(1) + varint.encode(codec) + _MH_PREFIX for codec in CODEC_NAMES
}
_V1_CODEC: Final[dict[bytes, int]] = {prefix: codec for codec, prefix in _V1_PREFIX.items()}
_PREFIX_LENS: Final = sorted({len(p) for p in _V1_PREFIX.values()})
_B32_VALUE: Final = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz234567")}
_BASE32: Final = multibase.get("base32")  # ``b``: RFC 4648, lower case, no padding
_BASE58BTC: Final = multibase.get("base58btc")  # a CIDv0 is a bare base58btc multihash


@dataclass(frozen=True, slots=True)
class Cid:
    """A parsed, supported CID. Immutable and hashable; ``str(cid)`` is its text form."""

    version: int
    codec: int
    digest: bytes  # the sha2-256 digest (the multihash without its 2-byte prefix)

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise InvalidCid(f"unsupported CID version {self.version}")
        if self.codec not in CODEC_NAMES:
            raise InvalidCid(f"unsupported CID codec 0x{self.codec:x}")
        if self.version == 0 and self.codec != DAG_PB:
            raise InvalidCid("a CIDv0 is always dag-pb")
        if len(self.digest) != _DIGEST_LEN:
            raise InvalidCid("a sha2-256 digest is 32 bytes")

    # -- constructing -------------------------------------------------------

    @classmethod
    def for_block(cls, codec: int, data: bytes | memoryview) -> Cid:
        """The CIDv1 of ``data`` as a block of ``codec``."""
        return cls(1, codec, hashlib.sha256(data).digest())

    @classmethod
    def parse(cls, value: str | Cid) -> Cid:
        """Parse a CID string (``b…`` base32 CIDv1 or ``Qm…`` CIDv0)."""
        if isinstance(value, Cid):
            return value
        if not isinstance(value, str):
            raise InvalidCid(f"a CID must be a string, not {type(value).__name__}")
        text = value.strip()
        if len(text) == 46 and text.startswith("Qm"):
            try:
                raw = _BASE58BTC.raw_decoder(text)
            except ValueError as exc:
                raise InvalidCid(f"invalid CIDv0 {value!r}: {exc}") from None
            return cls._from_multihash(raw, value)
        if not text.startswith("b"):
            raise InvalidCid(
                f"invalid CID {value!r}: expected a base32 CIDv1 ('b…') or a CIDv0 ('Qm…')"
            )
        body = text[1:]
        # The fast path: a canonical base32 lower string of a known prefix and a digest.
        # ASCII first: the dotless i (U+0131) is lower case and its upper case is "I".
        if body.isascii() and body.islower():
            try:
                raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
            except ValueError:  # binascii.Error
                raw = b""
            codec = _V1_CODEC.get(raw[:-_DIGEST_LEN]) if len(raw) > _DIGEST_LEN else None
            # Canonical: the bits of the last character past the last byte are zero.
            spare = len(body) * 5 - len(raw) * 8
            if codec is not None and not _B32_VALUE[body[-1]] & ((1 << spare) - 1):
                return cls(1, codec, raw[-_DIGEST_LEN:])
        return cls._refuse_text(value, body)

    @classmethod
    def _refuse_text(cls, value: str, body: str) -> Cid:
        """A ``b…`` string the fast path did not accept: decode it with ``multiformats``
        to say what is wrong (a string it accepts here is parsed all the same)."""
        if body != body.lower():
            # Upper case is a different multibase prefix ('B'); refuse a mixed string.
            raise InvalidCid(f"invalid CID {value!r}: base32 multibase must be lower case")
        try:
            raw = _BASE32.raw_decoder(body)
        except ValueError as exc:
            raise InvalidCid(f"invalid CID {value!r}: {exc}") from None
        if _b32(raw) != body:
            raise InvalidCid(f"invalid CID {value!r}: non-canonical base32")
        cid, end = cls._decode_binary(raw, 0, repr(value))
        if end != len(raw):
            raise InvalidCid(f"invalid CID {value!r}: trailing bytes")
        return cid

    @classmethod
    def from_bytes(cls, buf: bytes | memoryview, pos: int = 0) -> tuple[Cid, int]:
        """Decode a binary CID at ``buf[pos:]``; return it and the position after it."""
        for n in _PREFIX_LENS:
            codec = _V1_CODEC.get(bytes(buf[pos : pos + n]))
            if codec is not None and len(buf) >= pos + n + _DIGEST_LEN:
                end = pos + n + _DIGEST_LEN
                return cls(1, codec, bytes(buf[pos + n : end])), end
        return cls._decode_binary(buf, pos, "(binary)")

    @classmethod
    def _decode_binary(cls, buf: bytes | memoryview, pos: int, label: str) -> tuple[Cid, int]:
        """The general binary decoder (``multiformats`` varints): a CIDv0 multihash, or
        a CIDv1 of any prefix, refused with the reason unless it is supported."""
        if bytes(buf[pos : pos + 2]) == _MH_PREFIX:  # a bare multihash is a CIDv0
            return cls._from_multihash(bytes(buf[pos : pos + 34]), None), pos + 34
        view = memoryview(buf)[pos:]
        try:
            version, n, view = varint.decode_raw(view)
            pos += n
            if version != 1:
                raise InvalidCid(f"invalid CID {label}: unsupported version {version}")
            codec, n, view = varint.decode_raw(view)
            pos += n
            if codec not in CODEC_NAMES:
                raise InvalidCid(f"unsupported CID codec 0x{codec:x} in {label}")
            code, n, view = varint.decode_raw(view)
            pos += n
            length, n, view = varint.decode_raw(view)
            pos += n
        except ValueError as exc:
            raise InvalidCid(f"invalid CID {label}: {exc}") from None
        if code != SHA2_256:
            raise InvalidCid(f"unsupported multihash 0x{code:x} in {label}: only sha2-256")
        if length != _DIGEST_LEN or len(view) < length:
            raise InvalidCid(f"invalid CID {label}: bad sha2-256 digest length")
        return cls(1, codec, bytes(view[:length])), pos + length

    @classmethod
    def _from_multihash(cls, mh: bytes, text: str | None) -> Cid:
        if len(mh) != 34 or mh[:2] != _MH_PREFIX:
            raise InvalidCid(f"invalid CIDv0 {text!r}: not a sha2-256 multihash")
        return cls(0, DAG_PB, mh[2:])

    # -- encoding -----------------------------------------------------------

    @property
    def multihash(self) -> bytes:
        return _MH_PREFIX + self.digest

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES[self.codec]

    def to_bytes(self) -> bytes:
        if self.version == 0:
            return self.multihash
        return _V1_PREFIX[self.codec] + self.digest

    def to_v1(self) -> Cid:
        return self if self.version == 1 else Cid(1, self.codec, self.digest)

    def __str__(self) -> str:
        if self.version == 0:
            return str(_BASE58BTC.raw_encoder(self.multihash))
        return "b" + _b32(self.to_bytes())

    def __repr__(self) -> str:
        return f"Cid({str(self)!r})"

    # -- checking -----------------------------------------------------------

    def matches(self, data: bytes | memoryview) -> bool:
        return hashlib.sha256(data).digest() == self.digest

    def verify(self, data: bytes | memoryview) -> None:
        """Raise :class:`CidMismatch` unless ``data`` hashes to this CID."""
        if not self.matches(data):
            actual = Cid(self.version, self.codec, hashlib.sha256(data).digest())
            raise CidMismatch(str(self), str(actual))


def _b32(data: bytes) -> str:
    """Multibase ``b`` without its prefix (the stdlib encoder; see the module docstring)."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()
