"""Moving an Extism plugin's initialisers into its call, where the limits hold.

The Extism runtime instantiates a plugin when the ``Plugin`` is created and
then calls ``__wasm_call_ctors`` (or else ``_initialize``); the wasm ``start``
function runs during instantiation. None of that is under the call's timeout:
Extism starts its timer only around the named call. A plugin whose start
function loops would hold a thread at 100% CPU forever (fuel alone is not a
wall-clock bound: one ``memory.fill`` costs one unit of fuel).

So before a plugin reaches Extism, its initialisers are taken out of the
module and called first thing in ``run``: the ``start`` section is dropped,
``_initialize`` and ``__wasm_call_ctors`` are no longer exported, and ``run``
is exported as a new function that calls them and then the original ``run``.
The guest sees the same order as before (its instance is fresh for every call
either way); the deadline and the fuel now cover all of it. The stored module
and its CID are untouched: this rewrite is made in memory, on load.

Only the sections involved are decoded (types, functions, exports, start,
code); everything else is copied byte for byte, and the new function is
appended, so no existing index moves.
"""

from __future__ import annotations

from dataclasses import dataclass

import wasmtime

from .._errors import ModuleError

_MAGIC = b"\x00asm\x01\x00\x00\x00"
_FUNCTION, _TABLE, _EXPORT, _START, _CODE = 3, 4, 7, 8, 10
_FUNC_KIND = 0x00
INITIALISERS = ("__wasm_call_ctors", "_initialize")  # Extism calls the first it finds
REFUSED_EXPORTS = {
    "hs_init": "Haskell plugins (export `hs_init`) are not supported: Extism runs "
    "`hs_init` outside the call's time limit"
}


@dataclass(frozen=True, slots=True)
class _Section:
    id: int
    payload: bytes


def _read_u32(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 28:
            raise ModuleError("malformed module: bad LEB128 integer")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _u32(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _name(data: bytes, pos: int) -> tuple[str, int]:
    size, pos = _read_u32(data, pos)
    return data[pos : pos + size].decode("utf-8", "replace"), pos + size


def _sections(data: bytes) -> list[_Section]:
    if data[:8] != _MAGIC:
        raise ModuleError("not a core WebAssembly module")
    out: list[_Section] = []
    pos = 8
    while pos < len(data):
        sid = data[pos]
        size, pos = _read_u32(data, pos + 1)
        out.append(_Section(sid, data[pos : pos + size]))
        pos += size
    return out


def _exports(payload: bytes) -> list[tuple[str, int, int]]:
    count, pos = _read_u32(payload, 0)
    out = []
    for _ in range(count):
        name, pos = _name(payload, pos)
        kind = payload[pos]
        index, pos = _read_u32(payload, pos + 1)
        out.append((name, kind, index))
    return out


def _vector_u32(payload: bytes) -> list[int]:
    count, pos = _read_u32(payload, 0)
    out = []
    for _ in range(count):
        value, pos = _read_u32(payload, pos)
        out.append(value)
    return out


def _export(name: str, kind: int, index: int) -> bytes:
    raw = name.encode("utf-8")
    return _u32(len(raw)) + raw + bytes([kind]) + _u32(index)


def _vector(items: list[bytes]) -> bytes:
    return _u32(len(items)) + b"".join(items)


def _append_to_vector(payload: bytes, item: bytes) -> bytes:
    count, pos = _read_u32(payload, 0)
    return _u32(count + 1) + payload[pos:] + item


class TableTooLarge(ModuleError):
    """Raised by ``cap_tables``; the caller turns it into the call's error."""

    def __init__(self, elements: int, limit: int):
        self.elements = elements
        self.limit = limit
        super().__init__(f"a table of {elements} elements is over the {limit}-element limit")


def cap_tables(data: bytes, table_elements: int) -> bytes:
    """``data`` with every table's maximum at most ``table_elements``.

    Extism's resource limiter bounds memories but lets a table without a
    declared maximum grow without end (``table.grow`` of 200 million elements
    took 1.6 GB). A declared maximum is one wasmtime enforces itself.
    """
    sections = _sections(data)
    table = next((s for s in sections if s.id == _TABLE), None)
    if table is None:
        return data
    count, pos = _read_u32(table.payload, 0)
    entries = []
    for _ in range(count):
        start = pos
        if table.payload[pos] not in (0x70, 0x6F):
            raise ModuleError(
                "Extism plugin tables must be funcref or externref tables with plain limits"
            )
        flags = table.payload[pos + 1]
        if flags not in (0x00, 0x01):
            raise ModuleError("Extism plugin tables must have 32-bit limits")
        minimum, pos = _read_u32(table.payload, pos + 2)
        maximum = None
        if flags == 0x01:
            maximum, pos = _read_u32(table.payload, pos)
        if minimum > table_elements:
            raise TableTooLarge(minimum, table_elements)
        cap = table_elements if maximum is None else min(maximum, table_elements)
        entries.append(table.payload[start : start + 1] + b"\x01" + _u32(minimum) + _u32(cap))
    payload = _vector(entries)
    out = bytearray(_MAGIC)
    for s in sections:
        body = payload if s.id == _TABLE else s.payload
        out += bytes([s.id]) + _u32(len(body)) + body
    return bytes(out)


def initialisers_into_run(data: bytes, module: wasmtime.Module | None = None) -> bytes:
    """``data`` with its start function and Extism initialiser called from ``run``.

    Returns ``data`` itself when the plugin has neither. ``data`` must already
    compile and export ``run`` (``module`` is it compiled, if the caller has it).
    """
    module = module or wasmtime.Module(_engine, data)
    exported = {e.name: e.type for e in module.exports}
    for name, why in REFUSED_EXPORTS.items():
        if name in exported:
            raise ModuleError(why)
    run_type = exported.get("run")
    if not isinstance(run_type, wasmtime.FuncType) or run_type.params:
        raise ModuleError("Extism plugin's `run` must be a function with no parameters")
    sections = _sections(data)
    start = next((s for s in sections if s.id == _START), None)
    export_section = next(s for s in sections if s.id == _EXPORT)
    exports = _exports(export_section.payload)
    init_name = next((n for n in INITIALISERS if n in exported), None)
    if start is None and init_name is None:
        return data
    funcs = {name: index for name, kind, index in exports if kind == _FUNC_KIND}
    calls: list[int] = []
    if start is not None:
        calls.append(_read_u32(start.payload, 0)[0])
    if init_name is not None:
        init_type = exported[init_name]
        if not isinstance(init_type, wasmtime.FuncType) or init_type.params or init_type.results:
            raise ModuleError(f"`{init_name}` must be a function that takes and returns nothing")
        calls.append(funcs[init_name])
    imported = sum(isinstance(i.type, wasmtime.FuncType) for i in module.imports)
    function_section = next((s for s in sections if s.id == _FUNCTION), None)
    if function_section is None or funcs["run"] < imported:
        raise ModuleError("Extism plugin's `run` must be defined in the module, not imported")
    defined = _vector_u32(function_section.payload)
    run_type_index = defined[funcs["run"] - imported]
    wrapper = imported + len(defined)
    body = b"\x00" + b"".join(b"\x10" + _u32(i) for i in calls) + b"\x10" + _u32(funcs["run"])
    body += b"\x0b"
    hidden = set(INITIALISERS)
    new_exports = [
        _export(name, kind, wrapper if name == "run" else index)
        for name, kind, index in exports
        if name not in hidden
    ]
    out = bytearray(_MAGIC)
    for s in sections:
        if s.id == _START:
            continue
        payload = s.payload
        if s.id == _FUNCTION:
            payload = _append_to_vector(payload, _u32(run_type_index))
        elif s.id == _EXPORT:
            payload = _vector(new_exports)
        elif s.id == _CODE:
            payload = _append_to_vector(payload, _u32(len(body)) + body)
        out += bytes([s.id]) + _u32(len(payload)) + payload
    return bytes(out)


_engine = wasmtime.Engine()
