"""The sandbox runtime: wasmtime-py components, one fresh instance per call."""

from ._imports import Bus, ImportBudget, ImportEnv, LogLine, PodAccess, http_scope
from ._sandbox import CallLimits, CallResult, Loaded, Runtime, classify_trap
from ._world import WORLD_IMPORTS, wasm_kind

__all__ = [
    "WORLD_IMPORTS",
    "Bus",
    "CallLimits",
    "CallResult",
    "ImportBudget",
    "ImportEnv",
    "Loaded",
    "LogLine",
    "PodAccess",
    "Runtime",
    "classify_trap",
    "http_scope",
    "wasm_kind",
]
