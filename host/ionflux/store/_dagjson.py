"""dag-json (codec 0x0129): how IONPOD stores JSON objects such as plans and run logs.

Why dag-json rather than dag-cbor as the default: a plan or run log is read by
people and by guest transforms that already speak JSON. A dag-json block *is*
JSON, so it needs no CBOR library anywhere, diffs and greps as text, and
``ipfs dag get`` prints it unchanged; the price (a few more bytes than CBOR)
does not matter at the sizes of plans and logs.

Canonical form (the block is hashed, so one value has exactly one encoding),
byte for byte what Kubo's ``ipfs dag put`` (go-ipld-prime) writes, checked in
the tests: no whitespace; map keys sorted by their UTF-8 bytes; strings as
UTF-8 with only ``"``, ``\\``, control characters (``\\t \\n \\r`` short, the rest
``\\u00xx``) and U+2028/U+2029 escaped; integers within int64; finite floats
as Go's encoding/json writes them (shortest digits, exponent only below 1e-6
or from 1e21 on, so ``1.0`` is written ``1``); links as ``{"/": "<cid>"}``;
bytes as ``{"/": {"bytes": "<base64, no padding>"}}``. Maps may not use the
key ``"/"`` (it marks a link).
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from .._errors import StoreError
from ._cid import Cid

_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES.update({c: f"\\u{ord(c):04x}" for c in map(chr, range(0x20)) if c not in _ESCAPES})
_ESCAPES.update({"\u2028": "\\u2028", "\u2029": "\\u2029"})
_NEEDS_ESCAPE = re.compile('[\x00-\x1f"\\\\\u2028\u2029]')


def _sort_key(key: str) -> bytes:
    return key.encode("utf-8")


def _string(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreError("dag-json strings must be valid Unicode (no lone surrogates)") from None
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _ESCAPES[m.group()], text) + '"'


def _float(value: float) -> str:
    """Go's encoding/json float format (ES6 number-to-string), as go-ipld-prime writes."""
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    if 1e-6 <= abs(value) < 1e21:
        return format(Decimal(repr(value)).normalize(), "f")
    text = repr(value)  # Python switches to exponent form well inside this range
    mantissa, _, exponent = text.partition("e")
    sign, digits = exponent[0], exponent[1:].lstrip("0") or "0"
    if sign == "+":
        digits = digits.rjust(2, "0")
    return f"{mantissa}e{sign}{digits}"


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise StoreError(f"dag-json integers must fit in 64 bits: {value}")
        out.append(str(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise StoreError(f"dag-json cannot hold {value}")
        out.append(_float(value))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, Cid):
        out.append('{"/":"' + str(value) + '"}')
    elif isinstance(value, bytes | bytearray | memoryview):
        b64 = base64.b64encode(bytes(value)).decode("ascii").rstrip("=")
        out.append('{"/":{"bytes":"' + b64 + '"}}')
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise StoreError(f"dag-json map keys must be strings, not {type(key).__name__}")
            if key == "/":
                raise StoreError('dag-json maps may not use the key "/" (it marks a link)')
        out.append("{")
        for i, key in enumerate(sorted(value, key=_sort_key)):
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    else:
        raise StoreError(f"dag-json cannot hold a {type(value).__name__}")


def encode_dagjson(value: Any) -> bytes:
    """The canonical dag-json bytes of ``value`` (dict/list/str/int/float/bool/None/Cid/bytes)."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")


def _object(pairs: list[tuple[str, Any]]) -> Any:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise StoreError("dag-json map with a repeated key")
    if keys == ["/"]:
        inner = pairs[0][1]
        if isinstance(inner, str):
            return Cid.parse(inner)
        if isinstance(inner, dict) and list(inner) == ["bytes"] and isinstance(inner["bytes"], str):
            text = inner["bytes"]
            try:
                return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
            except ValueError as exc:
                raise StoreError(f"dag-json bytes are not base64: {exc}") from None
        raise StoreError('dag-json map with the reserved key "/"')
    return dict(pairs)


def _int(text: str) -> int | float:
    # Floats are written Go's way, so -0.0 is "-0" and 2.0**63 is "9223372036854775808"
    # (no exponent below 1e21): read them back as the floats they were. An integer
    # is never written outside int64.
    if text == "-0":
        return -0.0
    value = int(text)
    return value if _INT_MIN <= value <= _INT_MAX else float(value)


def _no_constant(name: str) -> Any:
    raise StoreError(f"dag-json cannot hold {name}")


def decode_dagjson(data: bytes) -> Any:
    """Parse a dag-json block; links come back as :class:`Cid`, bytes as ``bytes``."""
    try:
        return json.loads(
            data, object_pairs_hook=_object, parse_constant=_no_constant, parse_int=_int
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"malformed dag-json block: {exc}") from None


def iter_links(value: Any) -> Iterator[Cid]:
    """Every link in a decoded dag-json value, in document order."""
    if isinstance(value, Cid):
        yield value
    elif isinstance(value, dict):
        for key in sorted(value, key=_sort_key):
            yield from iter_links(value[key])
    elif isinstance(value, list):
        for item in value:
            yield from iter_links(item)
