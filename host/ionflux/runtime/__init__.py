"""The sandbox runtime: wasmtime-py components, one fresh instance per call."""

from ._cancel import cancel_all, cancel_run, forget_run
from ._egress import EgressPolicy, endpoint, pinned_client
from ._extism_init import TableTooLarge
from ._imports import (
    Bus,
    ImportBudget,
    ImportEnv,
    LogLine,
    PodAccess,
    http_scope,
    reserved_subject,
)
from ._sandbox import CallLimits, CallResult, Loaded, Runtime, classify_trap
from ._world import INTERFACES, WASI_ALLOWED, WORLD_IMPORTS, WORLD_VERSION, wasi_allowed, wasm_kind

__all__ = [
    "INTERFACES",
    "WASI_ALLOWED",
    "WORLD_IMPORTS",
    "WORLD_VERSION",
    "Bus",
    "CallLimits",
    "CallResult",
    "EgressPolicy",
    "ImportBudget",
    "ImportEnv",
    "Loaded",
    "LogLine",
    "PodAccess",
    "Runtime",
    "TableTooLarge",
    "cancel_all",
    "cancel_run",
    "classify_trap",
    "endpoint",
    "forget_run",
    "http_scope",
    "pinned_client",
    "reserved_subject",
    "wasi_allowed",
    "wasm_kind",
]
