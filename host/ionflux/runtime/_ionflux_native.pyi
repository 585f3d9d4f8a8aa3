"""Types of the native extension (native/src/lib.rs), for mypy."""

from collections.abc import Callable
from typing import Any

OK: int
GUEST_ERROR: int
TRAP: int
OUTPUT_TOO_LARGE: int
WASMTIME_VERSION: str

def component_imports(data: bytes) -> list[str]: ...
def set_cancelled(run_id: str, cancelled: bool) -> None: ...

class NativeComponent:
    def serialize(self) -> bytes: ...

class NativeEngine:
    wasmtime_version: str
    def __init__(
        self,
        *,
        max_wasm_stack_bytes: int,
        sandboxes: int,
        max_memory_bytes: int,
        imports: dict[str, Callable[..., Any]],
        variant: type,
        record: type,
    ) -> None: ...
    def compile(self, data: bytes) -> NativeComponent: ...
    def deserialize_file(self, path: str) -> NativeComponent: ...
    def check(self, component: NativeComponent) -> None: ...
    def ticking(self) -> bool: ...
    def ticker_started(self) -> bool: ...
    def stop(self) -> None: ...
    def call(
        self,
        component: NativeComponent,
        input: str,
        *,
        fuel: int,
        ticks: int,
        memory_bytes: int,
        table_elements: int,
        instances: int,
        max_output_bytes: int,
        run_id: str | None = None,
    ) -> tuple[int, Any, Any, int]: ...
