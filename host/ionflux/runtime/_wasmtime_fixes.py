"""Two fixes to wasmtime-py 50's lowering of host-function results.

Both touch private parts of ``wasmtime.component._types``; the version is
pinned in pyproject.toml and tests/test_runtime_imports.py fails if either
stops holding.

1. Thread safety. A host function's ``result``/``variant`` return value is
   lowered with a module-global scratch set (``case_test_cache``): ``clear()``,
   fill, then ``isinstance`` against it. Two sandboxes answering an import at
   the same moment on two threads can interleave those steps and lower a value
   into the wrong case. We replace the global with a set-like object whose
   storage is per thread.

2. Empty cases. To pick the case of an untagged result, an empty case (the
   ``none`` of an option, the ``ok`` of ``result<_, E>``) is counted as class
   ``object``, so for ``result<option<string>, error>`` (``config.get``) every
   value, ``Variant('denied', …)`` included, is taken for ``ok`` and lowering
   fails inside the trampoline. Counting the empty case as ``NoneType`` makes
   the ``err`` case reachable and changes nothing else for this world.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from wasmtime.component import Variant, _types


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


def _case_classes(ty: Any) -> set[type]:
    s: set[type] = set()
    if ty is None:
        s.add(type(None))
    else:
        ty.add_classes(s)
    return s


def _tagged(self: Any) -> bool:
    seen: set[type] = set()
    for _, ty in self._cases():
        case = _case_classes(ty)
        if case & seen:
            return True
        seen |= case
    return False


def _add_classes(self: Any, s: set[type]) -> None:
    if self._tagged():
        s.add(Variant)
    else:
        for _, ty in self._cases():
            for cls in _case_classes(ty):
                s.add(cls)


def install() -> None:
    if not isinstance(getattr(_types, "case_test_cache", None), _PerThreadSet):
        _types.case_test_cache = _PerThreadSet()  # type: ignore[assignment]
    _types.VariantLikeType._tagged = _tagged  # type: ignore[method-assign]
    _types.VariantLikeType.add_classes = _add_classes  # type: ignore[method-assign]
