"""CIDs: parsing, encoding, and what is refused."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ionflux import CidMismatch, InvalidCid
from ionflux.store import DAG_CBOR, DAG_JSON, DAG_PB, RAW, Cid
from ionflux.store._dagpb import decode_uvarint
from multiformats import CID, multibase, multihash, varint

EMPTY_RAW = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
# The well-known CIDv0 of the empty UnixFS directory, and its CIDv1 form.
EMPTY_DIR_V0 = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
EMPTY_DIR_V1 = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"


def test_raw_cid_of_empty_bytes() -> None:
    cid = Cid.for_block(RAW, b"")
    assert str(cid) == EMPTY_RAW
    assert Cid.parse(EMPTY_RAW) == cid
    assert cid.codec_name == "raw" and cid.version == 1


def test_v0_parses_and_converts() -> None:
    v0 = Cid.parse(EMPTY_DIR_V0)
    assert v0.version == 0 and v0.codec == DAG_PB
    assert str(v0) == EMPTY_DIR_V0
    assert str(v0.to_v1()) == EMPTY_DIR_V1
    assert v0.to_bytes() == v0.multihash
    assert Cid.from_bytes(v0.to_bytes()) == (v0, 34)


@pytest.mark.parametrize("codec", [RAW, DAG_PB, DAG_CBOR, DAG_JSON])
def test_round_trip_every_codec(codec: int) -> None:
    cid = Cid.for_block(codec, b"x")
    assert Cid.parse(str(cid)) == cid
    assert Cid.from_bytes(cid.to_bytes()) == (cid, len(cid.to_bytes()))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk",  # truncated
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku1",  # bad char
        "BAFKREIHDWDCEFGH4DQKJV67UZCMW7OJEE6XEDZDETOJUZJEVTENXQUVYKU",  # upper multibase
        "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA",  # base58 CIDv1
        "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3N0",  # '0' is not base58
        "Qm" + "1" * 44,
        "bafkreé",  # not ASCII
        EMPTY_RAW.replace("i", "\u0131"),  # dotless i: its upper case is "I"
        "b",
    ],
)
def test_unparseable_strings_are_invalid(text: str) -> None:
    with pytest.raises(InvalidCid):
        Cid.parse(text)


def _v1(codec: int, mh_code: int, digest: bytes) -> str:
    raw = b"\x01" + varint.encode(codec) + varint.encode(mh_code) + bytes([len(digest)]) + digest
    return str(multibase.encode(raw, "base32"))


def test_unsupported_codec_is_invalid() -> None:
    git_raw = _v1(0x78, 0x12, hashlib.sha256(b"x").digest())
    with pytest.raises(InvalidCid, match="codec 0x78"):
        Cid.parse(git_raw)


def test_unsupported_hash_is_invalid() -> None:
    blake3 = _v1(RAW, 0x1E, hashlib.blake2s(b"x").digest())
    with pytest.raises(InvalidCid, match="only sha2-256"):
        Cid.parse(blake3)
    identity = _v1(RAW, 0x00, b"abc")
    with pytest.raises(InvalidCid):
        Cid.parse(identity)


def test_v0_must_be_dag_pb() -> None:
    with pytest.raises(InvalidCid):
        Cid(0, RAW, bytes(32))


def test_non_string_is_invalid() -> None:
    with pytest.raises(InvalidCid):
        Cid.parse(123)  # type: ignore[arg-type]


def test_verify_names_the_cid() -> None:
    cid = Cid.for_block(RAW, b"right")
    cid.verify(b"right")
    with pytest.raises(CidMismatch) as info:
        cid.verify(b"wrong")
    assert info.value.expected == str(cid)
    assert str(cid) in str(info.value)


@given(st.binary(max_size=256), st.sampled_from([RAW, DAG_PB, DAG_CBOR, DAG_JSON]))
def test_cid_always_verifies_its_bytes(data: bytes, codec: int) -> None:
    cid = Cid.for_block(codec, data)
    assert cid.matches(data)
    assert Cid.parse(str(cid)) == cid


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_varint_reader_agrees_with_multiformats(n: int) -> None:
    # dag-pb's varint reader is ours (speed); it must read what multiformats writes.
    raw = varint.encode(n)
    assert decode_uvarint(raw) == (n, len(raw))


@pytest.mark.parametrize("raw", [b"", b"\x80", b"\x80\x00", b"\xff" * 9 + b"\x01"])
def test_varint_reader_refuses_what_multiformats_refuses(raw: bytes) -> None:
    with pytest.raises(ValueError):
        varint.decode(raw)
    with pytest.raises(ValueError):
        decode_uvarint(raw)


@given(st.binary(max_size=64), st.sampled_from([RAW, DAG_PB, DAG_CBOR, DAG_JSON]))
def test_fast_path_agrees_with_multiformats(data: bytes, codec: int) -> None:
    # Cid parses and prints CIDv1 through a prefix table (speed): the same text and
    # bytes as multiformats' own CID, both ways.
    ours = Cid.for_block(codec, data)
    theirs = CID("base32", 1, codec, multihash.digest(data, "sha2-256"))
    assert str(ours) == str(theirs)
    assert ours.to_bytes() == bytes(theirs)
    assert Cid.parse(str(theirs)) == ours
    assert Cid.from_bytes(bytes(theirs)) == (ours, len(bytes(theirs)))


def test_v0_agrees_with_multiformats() -> None:
    theirs = CID.decode(EMPTY_DIR_V0)
    assert bytes(Cid.parse(EMPTY_DIR_V0).to_bytes()) == bytes(theirs)
    assert str(Cid.parse(EMPTY_DIR_V0).to_v1()) == str(theirs.set(version=1, base="base32"))


def test_non_canonical_base32_is_invalid() -> None:
    # The last character of a 36-byte CID carries 2 spare bits, which must be zero.
    spare_bits_set = EMPTY_RAW[:-1] + "v"  # 'u' is 20, 'v' is 21: the low bit set
    with pytest.raises(InvalidCid):
        Cid.parse(spare_bits_set)


def test_public_api_is_pinned() -> None:
    import ionflux.store

    assert ionflux.store.__all__ == sorted(ionflux.store.__all__, key=lambda n: (n.upper() != n, n))
    assert set(ionflux.store.__all__) == {
        "CHUNK_SIZE",
        "DAG_CBOR",
        "DAG_JSON",
        "DAG_PB",
        "MAX_LINKS",
        "RAW",
        "BlockBackend",
        "CachedBackend",
        "Cid",
        "ImportMismatch",
        "KuboBackend",
        "LocalBackend",
        "PathTable",
        "Pod",
        "cid_for_bytes",
        "decode_dagjson",
        "encode_dagjson",
        "iter_file_blocks",
        "open_pod",
        "read_car",
        "write_car",
    }


_B32_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567", min_size=50, max_size=64)


@given(
    st.one_of(
        st.text(),
        _B32_TEXT.map(lambda t: "b" + t),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567", max_size=4).map(
            lambda t: EMPTY_RAW[:-3] + t  # around a real CID's end: spare bits, lengths
        ),
    )
)
def test_any_text_is_a_canonical_cid_or_invalid(text: str) -> None:
    try:
        cid = Cid.parse(text)
    except InvalidCid:
        return
    assert str(cid) == text.strip()
