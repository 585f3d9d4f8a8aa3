"""Calling ``run`` with as few Python-side crossings as the call needs.

wasmtime-py's generic ``Func.__call__`` asks wasmtime for the function's type
on every call and walks the whole ``result<string, error>`` type tree to lift
the answer: about a dozen FFI crossings per call, more than the call itself
costs. Every component we run has the same ``run`` signature, checked once
when it is loaded (``check_run_signature``), so the call lowers one string,
calls, and lifts ``ok(string)`` directly. The rare ``err`` is lifted by the
generic code. This touches wasmtime-py's private ``_ffi``; the version is
pinned and the runtime tests exercise both paths.

The output's size is checked while it is still wasmtime's byte vector, before
it becomes Python bytes and then a str: a guest returning 48 MiB past a 4 MiB
limit costs one copy (wasmtime's lift), not four.
"""

from __future__ import annotations

from ctypes import byref, c_char, c_void_p, cast
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime.component import Func, ResultType, String, VariantType
from wasmtime.component._enter import enter_wasm

from .._errors import ModuleError
from ._guest_errors import output_too_large


def check_run_signature(func: Func, store: wasmtime.Store) -> None:
    """``run: func(input: string) -> result<string, error>``, or ``ModuleError``."""
    fty = func.type(store)
    params = fty.params
    result = fty.result
    ok = (
        len(params) == 1
        and isinstance(params[0][1], String)
        and isinstance(result, ResultType)
        and isinstance(result.ok, String)
        and isinstance(result.err, VariantType)
    )
    if not ok:
        raise ModuleError(
            "`run` must be `func(input: string) -> result<string, error>` "
            "(world ionflux:transform/transform)"
        )


def call_run(func: Func, store: wasmtime.Store, text: str, max_output_bytes: int) -> str | Any:
    """Calls ``run``: the output string, or the guest's error ``Variant``;
    ``OutputTooLarge`` if the output is over ``max_output_bytes`` (UTF-8)."""
    params = (ffi.wasmtime_component_val_t * 1)()
    params[0].kind = ffi.WASMTIME_COMPONENT_STRING
    params[0].of.string = ffi.str_to_capi(text)
    result = ffi.wasmtime_component_val_t()
    try:
        enter_wasm(
            lambda: ffi.wasmtime_component_func_call(
                byref(func._func), store._context(), params, 1, byref(result), 1
            )
        )
    finally:
        ffi.wasmtime_component_val_delete(byref(params[0]))
    if result.kind == ffi.WASMTIME_COMPONENT_RESULT.value and result.of.result.is_ok:
        val = result.of.result.val
        inner = val.contents
        if inner.kind == ffi.WASMTIME_COMPONENT_STRING.value:
            size = inner.of.string.size
            if size > max_output_bytes:
                ffi.wasmtime_component_val_delete(byref(result))
                raise output_too_large(size, max_output_bytes)
            # Decoded straight from wasmtime's buffer: no intermediate bytes.
            buffer = (c_char * size).from_address(cast(inner.of.string.data, c_void_p).value or 0)
            text_out = str(buffer, "utf-8") if size else ""
            ffi.wasm_byte_vec_delete(byref(inner.of.string))
            inner.kind = ffi.WASMTIME_COMPONENT_BOOL
            inner.of.boolean = False
            ffi.wasmtime_component_val_delete(val)
            return text_out
    # err (or anything unexpected): the generic, type-driven lift.
    result_ty = func.type(store).result
    assert result_ty is not None
    return result_ty.convert_from_c(result)
