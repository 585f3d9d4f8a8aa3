"""Compiled components, cached per CID in memory and serialized on disk.

The disk cache is keyed by CID and engine fingerprint: an artifact from
another wasmtime build or other engine settings is never loaded. Serialized
artifacts are native code that wasmtime trusts on load, so the cache folder
is created private (0700) and files are written atomically; whoever can
write there already controls the host.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import wasmtime
from wasmtime.component import Component


class CompileCache:
    def __init__(
        self,
        engine: wasmtime.Engine,
        directory: Path | None,
        fingerprint: str,
        *,
        capacity: int = 256,
    ) -> None:
        self._engine = engine
        self._dir = directory / fingerprint if directory is not None else None
        self._memory: OrderedDict[str, Component] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def get(self, cid: str, compile_: Callable[[], Component]) -> Component:
        with self._lock:
            component = self._memory.get(cid)
            if component is not None:
                self._memory.move_to_end(cid)
                return component
        component = self._load(cid)
        if component is None:
            component = compile_()
            self._save(cid, component)
        with self._lock:
            self._memory[cid] = component
            while len(self._memory) > self._capacity:
                self._memory.popitem(last=False)
        return component

    def put(self, cid: str, component: Component) -> None:
        """Keeps a component compiled at publish time, so the first call needs no compile."""
        self._save(cid, component)
        with self._lock:
            self._memory[cid] = component
            while len(self._memory) > self._capacity:
                self._memory.popitem(last=False)

    def in_memory(self, cid: str) -> bool:
        with self._lock:
            return cid in self._memory

    def forget(self, cid: str, *, disk: bool = False) -> None:
        with self._lock:
            self._memory.pop(cid, None)
        if disk and self._dir is not None:
            (self._dir / f"{cid}.cwasm").unlink(missing_ok=True)

    def _load(self, cid: str) -> Component | None:
        if self._dir is None:
            return None
        path = self._dir / f"{cid}.cwasm"
        try:
            return Component.deserialize_file(self._engine, str(path))
        except FileNotFoundError:
            return None
        except wasmtime.WasmtimeError:
            path.unlink(missing_ok=True)  # stale or damaged: recompile
            return None

    def _save(self, cid: str, component: Component) -> None:
        if self._dir is None:
            return
        data = component.serialize()
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self._dir / f"{cid}.cwasm")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
