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
The Extism SDK brings its own engine: memory and wall-clock limits are set
through the plugin manifest; it has no fuel meter, so ``fuel_used`` is 0.
"""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace
from typing import Any

import extism
from wasmtime import Engine, Module, WasmtimeError

from .._errors import (
    DeadlineExceeded,
    GuestTrap,
    ImportOutsideWorld,
    InvalidInput,
    MemoryLimitExceeded,
    ModuleError,
    OutputTooLarge,
)
from . import _imports
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


class ExtismLoaded:
    """A plugin compiled once per CID; each call gets a fresh instance."""

    def __init__(self, cid: str, data: bytes) -> None:
        check_plugin(data)
        self.cid = cid
        self._data = data
        self._compiled: dict[tuple[int, int], extism.extism.CompiledPlugin] = {}
        self._lock = threading.Lock()

    def compiled(self, limits: CallLimits) -> extism.extism.CompiledPlugin:
        key = (limits.memory_bytes, limits.timeout_ms)
        with self._lock:
            plugin = self._compiled.get(key)
            if plugin is None:
                manifest = {
                    "wasm": [{"data": self._data}],
                    "memory": {"max_pages": max(1, limits.memory_bytes // _PAGE)},
                    "timeout_ms": limits.timeout_ms,
                    "allowed_hosts": [],  # outbound HTTP only through ionflux_http_fetch
                    "allowed_paths": {},
                }
                plugin = extism.extism.CompiledPlugin(
                    manifest, wasi=False, functions=HOST_FUNCTIONS
                )
                self._compiled[key] = plugin
        return plugin

    def call(self, input_text: str, limits: CallLimits, env: ImportEnv) -> CallResult:
        if len(input_text.encode("utf-8")) > limits.max_input_bytes:
            raise InvalidInput(f"input is over the {limits.max_input_bytes}-byte limit")
        started = time.perf_counter()
        set_env(env)
        try:
            plugin = extism.Plugin(self.compiled(limits), functions=HOST_FUNCTIONS)
            out = plugin.call("run", input_text, parse=lambda buf: bytes(buf))
        except extism.Error as exc:
            raise _classify(str(exc), limits) from None
        finally:
            set_env(None)
        if len(out) > limits.max_output_bytes:
            raise OutputTooLarge(
                f"output is {len(out)} bytes, over the {limits.max_output_bytes}-byte limit"
            )
        try:
            text = out.decode("utf-8")
        except UnicodeDecodeError:
            raise GuestTrap("plugin output is not UTF-8 text") from None
        return CallResult(text, 0, time.perf_counter() - started, env.logs, env.calls, env.import_s)


def _classify(message: str, limits: CallLimits) -> Exception:
    lowered = message.lower()
    if "timeout" in lowered or "interrupt" in lowered:
        return DeadlineExceeded(f"ran past its {limits.timeout_ms} ms time limit")
    if "memory" in lowered and ("limit" in lowered or "grow" in lowered):
        return MemoryLimitExceeded(f"needed more than {limits.memory_bytes} bytes ({message})")
    return GuestTrap(f"trapped: {message.strip().splitlines()[0] if message.strip() else '?'}")
