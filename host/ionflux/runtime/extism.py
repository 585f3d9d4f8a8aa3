"""The second ABI: Extism plugins, run unchanged, behind the same gate.

A plugin written with any Extism PDK exports ``run`` (input and output
through the Extism kernel) and may import the host functions below from
``extism:host/user``. Each takes and returns JSON text and goes through the
very same gated implementations as the component imports:

    ionflux_log          {"level": "info", "message": "…"}        -> {"ok": null}
    ionflux_config_get   {"key": "…"}                             -> {"ok": "…" | null}
    ionflux_pod_get      {"reference": "<cid or path>"}           -> {"ok": "<text>"}
    ionflux_pod_put      {"path": "…", "data": "…"}               -> {"ok": "<cid>"}
    ionflux_bus_publish  {"subject": "…", "payload": "…"}         -> {"ok": null}
    ionflux_http_fetch   {"method", "url", "headers": [[k, v]], "body", "timeout_ms"}
                         -> {"ok": {"status", "headers", "body"}}

An error is ``{"error": {"case": "denied", "message": "…"}}``, never a trap.
Each function is one import call of the call's ``ImportEnv``: the same
per-call budgets (``ImportBudgetExceeded``), egress address checks, reserved
bus subjects and audit entries as a component's. The call's env reaches the
functions as the plugin's host context, not through shared state; a request
is read from the kernel's memory only within bounds the plugin cannot forge
(``_extism_memory``); nothing a function raises reaches Extism's native code.

The Extism SDK brings its own engine. The call's limits map onto it: memory
and wall clock through the plugin manifest, fuel through
``extism_compiled_plugin_new_with_fuel_limit`` (the C API has it; SDK 1.1.1 does
not expose it), the output size before the output is copied out of the plugin.
Extism's timer covers only the named call, so the plugin's initialisers are
moved into ``run`` first (``_extism_init``). Extism reports no fuel count, so
``fuel_used`` is 0; and it reports a trap without its cause, so the cause is
read from the backtrace (``_classify``).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import extism
from extism_sys import ffi as _ffi
from extism_sys import lib as _lib
from wasmtime import Engine, Module, WasmtimeError
from wasmtime.component import Record, Variant

from .._errors import (
    GuestError,
    GuestTrap,
    ImportOutsideWorld,
    InvalidInput,
    InvalidOutput,
    MemoryLimitExceeded,
    ModuleError,
    StackOverflow,
    TransformFailed,
)
from . import _imports
from ._extism_init import TableTooLarge, cap_tables, initialisers_into_run
from ._extism_memory import read_block, write_block
from ._guest_errors import (
    STACK_OVERFLOW,
    deadline_exceeded,
    fuel_exhausted,
    memory_exceeded,
    output_too_large,
)
from ._imports import ImportEnv
from ._sandbox import CallLimits, CallResult

_ENV_NS = "extism:host/env"
_USER_NS = "extism:host/user"
_PAGE = 65536
_I64 = extism.ValType.I64


_LEVELS = frozenset({"debug", "info", "warn", "error"})


@dataclass(frozen=True, slots=True)
class _CallState:
    """What a host function needs of the call it serves: handed to Extism as
    the call's host context, so each plugin instance reaches its own call's
    ``ImportEnv`` (budgets, logs, grants) and nothing else."""

    env: ImportEnv
    memory_bytes: int  # the call's memory limit, the bound of every kernel block
    cancel: Any  # the plugin's extism.CancelHandle: stops it once it is over a budget


class _BadRequest(ValueError):
    pass


def _text(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str):
        raise _BadRequest(f"`{key}` must be a string")
    return value


def _optional_text(request: dict[str, Any], key: str) -> str | None:
    value = request.get(key)
    if value is not None and not isinstance(value, str):
        raise _BadRequest(f"`{key}` must be a string or null")
    return value


def _log(r: dict[str, Any]) -> Any:
    level = _text(r, "level")
    if level not in _LEVELS:
        raise _BadRequest(f"`level` must be one of {sorted(_LEVELS)}")
    return _imports.log_write(None, level, _text(r, "message"))


def _http_request(r: dict[str, Any]) -> Any:
    headers = r.get("headers", [])
    if not isinstance(headers, list) or not all(
        isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h) for h in headers
    ):
        raise _BadRequest("`headers` must be a list of [name, value] strings")
    timeout_ms = r.get("timeout_ms")
    if timeout_ms is not None and (
        not isinstance(timeout_ms, int)
        or isinstance(timeout_ms, bool)
        or not 0 <= timeout_ms < 2**32
    ):
        raise _BadRequest("`timeout_ms` must be null or an integer from 0 to 2^32-1")
    req = SimpleNamespace(
        method=_optional_text(r, "method") or "GET",
        url=_text(r, "url"),
        headers=[SimpleNamespace(name=k, value=v) for k, v in headers],
        body=_optional_text(r, "body"),
    )
    setattr(req, "timeout-ms", timeout_ms)  # the WIT record's field name
    return _imports.http_fetch(None, req)


# Each takes the decoded request and calls the component import's own
# function (``_gated``: budgets, scope, host refusals, gate, audit).
_HANDLERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "ionflux_log": _log,
    "ionflux_config_get": lambda r: _imports.config_get(None, _text(r, "key")),
    "ionflux_pod_get": lambda r: _imports.pod_get(None, _text(r, "reference")),
    "ionflux_pod_put": lambda r: _imports.pod_put(None, _text(r, "path"), _text(r, "data")),
    "ionflux_bus_publish": lambda r: _imports.bus_publish(
        None, _text(r, "subject"), _text(r, "payload")
    ),
    "ionflux_http_fetch": _http_request,
}


def _serve(name: str, current: Any, offset: int) -> int:
    """One host-function call: the request read from the plugin, the answer
    written back (a kernel offset; 0 only if not even a short refusal fits)."""
    handle = _lib.extism_current_plugin_host_context(current)
    state = _ffi.from_handle(handle) if handle != _ffi.NULL else None
    if not isinstance(state, _CallState):
        answer: Any = Variant("unavailable", "no call in progress")
        return write_block(current, json.dumps(_encode(answer)).encode(), _PAGE)
    env = state.env
    if env.over_budget is not None:
        # The call fails whatever the plugin does next (ImportBudgetExceeded):
        # it is stopped rather than left to spin on refusals until its deadline.
        state.cancel.cancel()
    previous = _imports.current_env()
    _imports.set_env(env)
    try:
        try:
            raw = read_block(current, offset, state.memory_bytes).decode("utf-8")
            request = json.loads(raw)
            if not isinstance(request, dict):
                raise _BadRequest("the request must be a JSON object")
            if _SURROGATE_ESCAPE.search(raw):
                _check_no_lone_surrogates(request)
            answer = _HANDLERS[name](request)
        except (ValueError, RecursionError) as exc:  # BadBlock, _BadRequest, JSON, UTF-8
            answer = _refuse_bad_request(env, name, exc)
        text = json.dumps(_encode(answer))
    except Exception as exc:  # nothing reaches Extism's native frames
        text = json.dumps(_encode(Variant("failed", f"{name}: {type(exc).__name__}: {exc}")))
    finally:
        _imports.set_env(previous)
    data = text.encode("utf-8")
    written = write_block(current, data, state.memory_bytes)
    if written == 0:  # no room in the plugin's memory for the answer: say so, briefly
        refusal = Variant(
            "too-large",
            f"{name}: the answer ({len(data)} bytes) does not fit in the plugin's memory "
            f"(limits.memory_bytes = {state.memory_bytes})",
        )
        written = write_block(current, json.dumps(_encode(refusal)).encode(), state.memory_bytes)
    return written


# A lone surrogate can only come from a JSON escape (UTF-8 text has none).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_no_lone_surrogates(request: dict[str, Any]) -> None:
    """Strings a component could not send (the canonical ABI passes only
    valid UTF-8) are refused here too: a lone surrogate in a scope would
    reach the audit log, which writes UTF-8."""
    try:
        json.dumps(request, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise _BadRequest("strings must be valid Unicode (a lone surrogate escape)") from None


def _refuse_bad_request(env: ImportEnv, name: str, exc: BaseException) -> Variant:
    """``invalid``, counted as an import call like any other (a flood of bad
    requests stops at the same budget)."""
    refused = env.count_call()
    if refused is not None:
        return refused
    message = "recursion too deep" if isinstance(exc, RecursionError) else str(exc)
    return Variant("invalid", f"{name}: bad request: {message}")


def _host_fn(name: str) -> extism.Function:
    """``name`` as an Extism host function: (i64 request block) -> i64 answer block.

    Registered through ``extism.host_fn``, which puts the function in the SDK's
    registry and its index in the user data: the SDK's trampoline
    (``handle_args``) finds a function only that way (a bare
    ``ExplicitFunction`` fails there with ``IndexError`` and never runs).
    """

    def impl(current: Any, params: list[Any], results: list[Any], *_: Any) -> None:
        try:
            results[0].value = _serve(name, current.pointer, int(params[0].value))
        except BaseException:  # cffi would print it and answer 0 anyway
            results[0].value = 0

    impl.__name__ = name
    function: extism.Function = extism.host_fn(
        name=name, namespace=_USER_NS, signature=([_I64], [_I64])
    )(impl)
    return function


def _encode(answer: Any) -> dict[str, Any]:
    if isinstance(answer, Variant):
        return {"error": {"case": answer.tag, "message": answer.payload}}
    if isinstance(answer, Record):  # the http response
        response: Any = answer
        return {
            "ok": {
                "status": response.status,
                "headers": [[h.name, h.value] for h in response.headers],
                "body": response.body,
            }
        }
    return {"ok": answer}


HOST_FUNCTIONS = [_host_fn(name) for name in _HANDLERS]
ALLOWED_USER_IMPORTS = frozenset(_HANDLERS)

_check_engine = Engine()


def check_plugin(data: bytes) -> None:
    """Refuses a core module that imports anything but the Extism kernel and our functions."""
    try:
        module = Module(_check_engine, data)
    except WasmtimeError as exc:
        raise ModuleError(f"module does not compile: {str(exc).splitlines()[0]}") from exc
    outside = sorted(
        f"{imp.module}#{imp.name}"
        for imp in module.imports
        if not (
            imp.module == _ENV_NS or (imp.module == _USER_NS and imp.name in ALLOWED_USER_IMPORTS)
        )
    )
    if outside:
        raise ImportOutsideWorld(outside)
    if "run" not in {e.name for e in module.exports}:
        raise ModuleError("Extism plugin does not export `run`")
    initialisers_into_run(data, module)  # refuses what cannot be moved (hs_init, …)


class ExtismLoaded:
    """A plugin compiled once per CID and limits; each call gets a fresh instance."""

    def __init__(self, cid: str, data: bytes) -> None:
        check_plugin(data)
        self.cid = cid
        self._data = initialisers_into_run(data)
        self._compiled: dict[tuple[int, int, int], extism.extism.CompiledPlugin] = {}
        self._lock = threading.Lock()

    def compiled(self, limits: CallLimits) -> extism.extism.CompiledPlugin:
        key = (limits.memory_bytes, limits.timeout_ms, limits.fuel)
        with self._lock:
            plugin = self._compiled.get(key)
            if plugin is None:
                try:
                    wasm = cap_tables(self._data, limits.table_elements)
                except TableTooLarge as exc:
                    raise MemoryLimitExceeded(
                        f"{exc} (limits.table_elements; the config's value is the ceiling)"
                    ) from None
                manifest = {
                    "wasm": [{"data": wasm}],
                    "memory": {"max_pages": max(1, limits.memory_bytes // _PAGE)},
                    "timeout_ms": limits.timeout_ms,
                    "allowed_hosts": [],  # outbound HTTP only through ionflux_http_fetch
                    "allowed_paths": {},
                }
                plugin = _compile_with_fuel(manifest, limits.fuel)
                self._compiled[key] = plugin
        return plugin

    def call(self, input_text: str, limits: CallLimits, env: ImportEnv) -> CallResult:
        if len(input_text.encode("utf-8")) > limits.max_input_bytes:
            raise InvalidInput(f"input is over the {limits.max_input_bytes}-byte limit")
        started = time.perf_counter()
        # The host functions find the call through the plugin's host context,
        # never through anything shared between calls.
        failure: GuestError | None = None
        try:
            with extism.Plugin(self.compiled(limits), functions=HOST_FUNCTIONS) as plugin:
                state = _CallState(env, limits.memory_bytes, plugin.cancel_handle())
                out = plugin.call(
                    "run", input_text, parse=lambda buf: _take(buf, limits), host_context=state
                )
        except extism.Error as exc:
            failure = _classify(str(exc), limits)
        if failure is not None:
            raise failure
        try:
            text = out.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidOutput("plugin output is not UTF-8 text") from None
        return CallResult(text, 0, time.perf_counter() - started, env.logs, env.calls, env.import_s)


def _take(buf: Any, limits: CallLimits) -> bytes:
    """The output, copied out of the plugin only once its size is known to fit."""
    if len(buf) > limits.max_output_bytes:
        raise output_too_large(len(buf), limits.max_output_bytes)
    return bytes(buf)


def _compile_with_fuel(manifest: dict[str, Any], fuel: int) -> extism.extism.CompiledPlugin:
    """``extism.CompiledPlugin(manifest, wasi=False, functions=HOST_FUNCTIONS)``
    with a fuel limit, which the store gets before instantiation and again
    before every call."""
    compiled = extism.extism.CompiledPlugin.__new__(extism.extism.CompiledPlugin)
    compiled.functions = HOST_FUNCTIONS
    wasm = extism.extism._wasm(manifest)
    metadata = [extism.extism._ExtismFunctionMetadata(f) for f in HOST_FUNCTIONS]
    pointers = _ffi.new("ExtismFunction*[]", [m.pointer for m in metadata])
    errmsg = _ffi.new("char**")
    compiled.pointer = _lib.extism_compiled_plugin_new_with_fuel_limit(
        wasm, len(wasm), pointers, len(metadata), False, fuel, errmsg
    )
    if compiled.pointer == _ffi.NULL:
        message = _ffi.string(errmsg[0]).decode("utf-8", "replace")
        _lib.extism_plugin_new_error_free(errmsg[0])
        compiled.pointer = None
        raise ModuleError(f"Extism plugin does not compile: {message}")
    return compiled


# One frame of a wasm backtrace: "  3:     0x67 - <unknown>!name" (no offset
# when the frame had not run an instruction yet, as in a stack-limit check).
_FRAME = re.compile(r"^\s*\d+:\s+(?:(0x[0-9a-f]+) - )?(?:<unknown>!)?(.+?)\s*$")
_INSTANTIATE_MEMORY = re.compile(r"memory minimum size|exceeds memory limits|resource limit", re.I)


def _classify(message: str, limits: CallLimits) -> GuestError:
    """Extism's error text as a typed error with a message that says what happened.

    Extism keeps only the outermost line of a trap ("error while executing at
    wasm backtrace: …"), not its cause, so a stack overflow is told by its
    backtrace: the innermost frame has no code offset (the stack check runs
    before the function's first instruction) or one function fills it.
    """
    text = message.strip()
    lowered = text.lower()
    if "ran out of fuel" in lowered or "all fuel consumed" in lowered:
        return fuel_exhausted(limits)
    if text == "timeout" or "wasm trap: interrupt" in lowered:
        return deadline_exceeded(limits)
    if text == "oom" or lowered.endswith(": oom") or _INSTANTIATE_MEMORY.search(text):
        return memory_exceeded(limits, "memory.grow refused")
    if "call stack exhausted" in lowered:
        return StackOverflow(STACK_OVERFLOW)
    if "wasm backtrace" in lowered:
        frames = [m.groups() for m in map(_FRAME.match, text.splitlines()[1:]) if m]
        names = [name for _, name in frames]
        if frames and (frames[0][0] is None or (len(names) >= 16 and len(set(names)) <= 2)):
            return StackOverflow(f"{STACK_OVERFLOW}, recursing in `{names[0]}`")
        where = f" in `{names[0]}`" if names else ""
        return GuestTrap(
            f"trapped{where} (Extism reports no cause: an `unreachable`, a bad memory "
            "access or a failed check in the plugin)"
        )
    if text.startswith("Unable to create Extism plugin"):
        return GuestTrap(f"could not be instantiated: {text.split(':', 1)[1].strip() or '?'}")
    if text.startswith("Error code:"):
        return TransformFailed(
            "failed", f"`run` returned {text.removeprefix('Error code:').strip()}"
        )
    # The plugin set its own error (extism_error_set) and returned.
    return TransformFailed("failed", text or "the plugin failed without a message")
