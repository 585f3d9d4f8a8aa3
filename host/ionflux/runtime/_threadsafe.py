"""Makes wasmtime-py's component value lowering safe to use from many threads.

wasmtime-py 50 lowers a host function's ``result``/``variant`` return value
with a module-global scratch set (``wasmtime.component._types.case_test_cache``):
``clear()``, fill, then ``isinstance`` against it. Two sandboxes answering an
import at the same moment on two threads can interleave those steps and lower
a value into the wrong case. We replace the global with a set-like object
whose storage is per thread. The version is pinned in pyproject.toml, and
tests/test_runtime_concurrency.py fails if this stops holding.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from wasmtime.component import _types


class _PerThreadSet:
    def __init__(self) -> None:
        self._local = threading.local()

    def _set(self) -> set[Any]:
        s: set[Any] | None = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = set()
        return s

    def clear(self) -> None:
        self._set().clear()

    def add(self, item: Any) -> None:
        self._set().add(item)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._set())

    def __len__(self) -> int:
        return len(self._set())

    def __and__(self, other: set[Any]) -> set[Any]:
        return self._set() & other

    def __contains__(self, item: object) -> bool:
        return item in self._set()


def install() -> None:
    if not isinstance(getattr(_types, "case_test_cache", None), _PerThreadSet):
        _types.case_test_cache = _PerThreadSet()  # type: ignore[assignment]
