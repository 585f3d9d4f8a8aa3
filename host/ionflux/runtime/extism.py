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
from types import SimpleNamespace
from typing import Any

import extism
from extism_sys import ffi as _ffi
from extism_sys import lib as _lib
from wasmtime import Engine, Module, WasmtimeError

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
from ._guest_errors import (
    STACK_OVERFLOW,
    deadline_exceeded,
    fuel_exhausted,
    memory_exceeded,
    output_too_large,
)
from ._imports import ImportEnv, set_env
from ._sandbox import CallLimits, CallResult

_ENV_NS = "extism:host/env"
_USER_NS = "extism:host/user"
_PAGE = 65536


def _json_host_fn(name: str, call: Any) -> extism.Function:
    def impl(plugin: Any, params: Any, results: Any, *user_data: Any) -> None:
        try:
            request = json.loads(plugin.input_string(params[0]))
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
            answer = call(request)
        except (ValueError, KeyError, TypeError) as exc:
            answer = SimpleNamespace(tag="invalid", payload=f"{name}: bad request: {exc}")
        plugin.return_string(results[0], json.dumps(_encode(answer)))

    return extism.extism.ExplicitFunction(
        _USER_NS, name, [extism.ValType.I64], [extism.ValType.I64], impl, []
    )


def _encode(answer: Any) -> dict[str, Any]:
    if hasattr(answer, "tag") and hasattr(answer, "payload") and not isinstance(answer, dict):
        return {"error": {"case": answer.tag, "message": answer.payload}}
    if answer is not None and hasattr(answer, "status"):
        return {
            "ok": {
                "status": answer.status,
                "headers": [[h.name, h.value] for h in answer.headers],
                "body": answer.body,
            }
        }
    return {"ok": answer}


def _http_request(r: dict[str, Any]) -> Any:
    req = SimpleNamespace(
        method=str(r.get("method", "GET")),
        url=str(r["url"]),
        headers=[SimpleNamespace(name=str(k), value=str(v)) for k, v in r.get("headers", [])],
        body=r.get("body"),
    )
    setattr(req, "timeout-ms", r.get("timeout_ms"))
    return _imports.http_fetch(None, req)


HOST_FUNCTIONS = [
    _json_host_fn("ionflux_log", lambda r: _imports.log_write(None, r["level"], r["message"])),
    _json_host_fn("ionflux_config_get", lambda r: _imports.config_get(None, r["key"])),
    _json_host_fn("ionflux_pod_get", lambda r: _imports.pod_get(None, r["reference"])),
    _json_host_fn("ionflux_pod_put", lambda r: _imports.pod_put(None, r["path"], r["data"])),
    _json_host_fn(
        "ionflux_bus_publish", lambda r: _imports.bus_publish(None, r["subject"], r["payload"])
    ),
    _json_host_fn("ionflux_http_fetch", _http_request),
]
ALLOWED_USER_IMPORTS = frozenset(
    [
        "ionflux_log",
        "ionflux_config_get",
        "ionflux_pod_get",
        "ionflux_pod_put",
        "ionflux_bus_publish",
        "ionflux_http_fetch",
    ]
)

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
        set_env(env)
        failure: GuestError | None = None
        try:
            with extism.Plugin(self.compiled(limits), functions=HOST_FUNCTIONS) as plugin:
                out = plugin.call("run", input_text, parse=lambda buf: _take(buf, limits))
        except extism.Error as exc:
            failure = _classify(str(exc), limits)
        finally:
            set_env(None)
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
