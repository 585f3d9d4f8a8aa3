"""CIDs: the content identifiers of IONPOD, as IPFS/Kubo writes them.

A CID names a block by ``(version, codec, multihash)``. IONFLUX writes CIDv1 in
base32 lower (``bafy…``, ``bafk…``) and reads CIDv0 (``Qm…``, always dag-pb) too.
Only sha2-256 is accepted, and only the codecs the store can interpret: raw,
dag-pb, dag-cbor and dag-json. Anything else is :class:`InvalidCid`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from .._errors import CidMismatch, InvalidCid
from ._multibase import decode_base32, decode_base58btc, encode_base32, encode_base58btc
from ._varint import decode_uvarint, encode_uvarint

RAW: Final = 0x55
DAG_PB: Final = 0x70
DAG_CBOR: Final = 0x71
DAG_JSON: Final = 0x0129

CODEC_NAMES: Final[dict[int, str]] = {
    RAW: "raw",
    DAG_PB: "dag-pb",
    DAG_CBOR: "dag-cbor",
    DAG_JSON: "dag-json",
}

SHA2_256: Final = 0x12
_DIGEST_LEN: Final = 32


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
                raw = decode_base58btc(text)
            except ValueError as exc:
                raise InvalidCid(f"invalid CIDv0 {value!r}: {exc}") from None
            return cls._from_multihash(0, DAG_PB, raw, value)
        if not text.startswith("b"):
            raise InvalidCid(
                f"invalid CID {value!r}: expected a base32 CIDv1 ('b…') or a CIDv0 ('Qm…')"
            )
        try:
            raw = decode_base32(text[1:])
        except ValueError as exc:
            raise InvalidCid(f"invalid CID {value!r}: {exc}") from None
        cid, end = cls._decode_binary(raw, value)
        if end != len(raw):
            raise InvalidCid(f"invalid CID {value!r}: trailing bytes")
        return cid

    @classmethod
    def from_bytes(cls, buf: bytes | memoryview, pos: int = 0) -> tuple[Cid, int]:
        """Decode a binary CID at ``buf[pos:]``; return it and the position after it."""
        return cls._decode_binary(buf, None, pos)

    @classmethod
    def _decode_binary(
        cls, buf: bytes | memoryview, text: str | None, pos: int = 0
    ) -> tuple[Cid, int]:
        label = repr(text) if text is not None else "(binary)"
        try:
            if buf[pos : pos + 2] == b"\x12\x20":  # a bare multihash is a CIDv0
                return cls._from_multihash(0, DAG_PB, bytes(buf[pos : pos + 34]), text), pos + 34
            version, pos = decode_uvarint(buf, pos)
            if version != 1:
                raise InvalidCid(f"invalid CID {label}: unsupported version {version}")
            codec, pos = decode_uvarint(buf, pos)
            if codec not in CODEC_NAMES:
                raise InvalidCid(f"unsupported CID codec 0x{codec:x} in {label}")
            code, pos = decode_uvarint(buf, pos)
            length, pos = decode_uvarint(buf, pos)
        except ValueError as exc:
            raise InvalidCid(f"invalid CID {label}: {exc}") from None
        if code != SHA2_256:
            raise InvalidCid(f"unsupported multihash 0x{code:x} in {label}: only sha2-256")
        if length != _DIGEST_LEN or pos + length > len(buf):
            raise InvalidCid(f"invalid CID {label}: bad sha2-256 digest length")
        return cls(1, codec, bytes(buf[pos : pos + length])), pos + length

    @classmethod
    def _from_multihash(cls, version: int, codec: int, mh: bytes, text: str | None) -> Cid:
        if len(mh) != 34 or mh[0] != SHA2_256 or mh[1] != _DIGEST_LEN:
            raise InvalidCid(f"invalid CIDv0 {text!r}: not a sha2-256 multihash")
        return cls(version, codec, mh[2:])

    # -- encoding -----------------------------------------------------------

    @property
    def multihash(self) -> bytes:
        return bytes((SHA2_256, _DIGEST_LEN)) + self.digest

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES[self.codec]

    def to_bytes(self) -> bytes:
        if self.version == 0:
            return self.multihash
        return b"\x01" + encode_uvarint(self.codec) + self.multihash

    def to_v1(self) -> Cid:
        return self if self.version == 1 else Cid(1, self.codec, self.digest)

    def __str__(self) -> str:
        if self.version == 0:
            return encode_base58btc(self.multihash)
        return "b" + encode_base32(self.to_bytes())

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
