"""dag-json: canonical bytes (as Kubo writes them), links, round trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from ionflux import StoreError
from ionflux.store import Cid, decode_dagjson, encode_dagjson

EMPTY = Cid.parse("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")

# Bytes Kubo 0.41 stored for `ipfs dag put --input-codec=dag-json` of the same values.
KUBO_WROTE = [
    ({"bb": 1, "a": 2, "c": 3}, b'{"a":2,"bb":1,"c":3}'),
    ({"\u00e9": 1, "z": 2, "aa": 3, "A": 4, "": 5}, b'{"":5,"A":4,"aa":3,"z":2,"\xc3\xa9":1}'),
    (
        [1.0, 1e20, 1e21, 1e-6, 1e-7, 123.456, -0.0, 5e-324, 0.1, 1.7976931348623157e308],
        b"[1,100000000000000000000,1e+21,0.000001,1e-7,123.456,-0,5e-324,0.1,"
        b"1.7976931348623157e+308]",
    ),
    (
        [2**63 - 1, -(2**63), 1.5e300, 2.5e-300, 1e16, 0.00001234],
        b"[9223372036854775807,-9223372036854775808,1.5e+300,2.5e-300,10000000000000000,"
        b"0.00001234]",
    ),
    (
        {"s": "".join(map(chr, range(0x20))) + '\x7f"\\/\u2028\u2029\u00e9<>&'},
        b'{"s":"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\u0008\\t\\n\\u000b'
        b"\\u000c\\r\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017"
        b'\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\x7f\\"\\\\/\\u2028\\u2029'
        b'\xc3\xa9<>&"}',
    ),
    (
        {"a": b"hello", "b": EMPTY},
        b'{"a":{"/":{"bytes":"aGVsbG8"}},"b":{"/":"' + str(EMPTY).encode() + b'"}}',
    ),
]


@pytest.mark.parametrize("value, expected", KUBO_WROTE)
def test_encoding_is_byte_for_byte_kubos(value: object, expected: bytes) -> None:
    assert encode_dagjson(value) == expected


def test_links_and_bytes_come_back_typed() -> None:
    value = {"plan": EMPTY, "blob": b"\x00\x01", "list": [EMPTY, {"x": None, "t": True}]}
    assert decode_dagjson(encode_dagjson(value)) == value


@pytest.mark.parametrize(
    "bad",
    [
        {"/": "x"},
        {1: "x"},
        float("nan"),
        float("inf"),
        2**63,
        "\ud800",
        object(),
    ],
)
def test_refuses_what_dag_json_cannot_hold(bad: object) -> None:
    with pytest.raises(StoreError):
        encode_dagjson(bad)


@pytest.mark.parametrize(
    "block",
    [b'{"a":1,"a":2}', b'{"/":"not a cid"}', b'{"/":{"bytes":"!!"}}', b"NaN", b"{", b"\xff"],
)
def test_malformed_blocks_are_refused(block: bytes) -> None:
    with pytest.raises(StoreError):
        decode_dagjson(block)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary(max_size=16),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text().filter(lambda k: k != "/"), children, max_size=4)
    ),
    max_leaves=12,
)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, int | float) and isinstance(b, int | float)
        return math.isclose(a, b, rel_tol=0, abs_tol=0) or a == b
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@example(9.223372036854776e18)  # written without an exponent, past int64
@given(json_values)
def test_round_trip_and_canonical(value: object) -> None:
    encoded = encode_dagjson(value)
    decoded = decode_dagjson(encoded)
    assert _same(value, decoded)
    assert encode_dagjson(decoded) == encoded
