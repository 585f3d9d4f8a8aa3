"""What is wrong with the host right now, by component: ``/healthz`` reads it.

A part of the host that finds it cannot do its job (the data disk is full,
NATS is gone) says so with ``health.degraded(component, reason)``; when it
works again it says ``health.ok(component)``. ``status()`` is ``ok`` while no
component is degraded. The registry only remembers: it does not probe. The
parts that act (the audit writer, the pod's put, the trigger drivers) report
what their own last attempt found, so a recovery shows at the next attempt
that succeeds.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal, TypedDict

from ._errors import CidMismatch, InvalidCid, NotFound, StoreError, TooLarge

__all__ = ["Health", "HealthStatus", "WatchedBackend"]

log = logging.getLogger("ionflux.health")


class HealthStatus(TypedDict):
    status: Literal["ok", "degraded"]
    components: dict[str, str]  # degraded component -> why


class Health:
    """A thread-safe map of degraded components to the reason (one per ``Host``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._degraded: dict[str, str] = {}

    def degraded(self, component: str, reason: str) -> None:
        """``component`` cannot do its job, because of ``reason`` (kept until ``ok``)."""
        with self._lock:
            changed = self._degraded.get(component) != reason
            self._degraded[component] = reason
        if changed:
            log.warning("%s degraded: %s", component, reason)

    def ok(self, component: str) -> None:
        """``component`` works again (a no-op if it was not degraded)."""
        with self._lock:
            changed = self._degraded.pop(component, None) is not None
        if changed:
            log.info("%s works again", component)

    def is_ok(self, component: str | None = None) -> bool:
        """No component (or ``component``) is degraded."""
        with self._lock:
            return not self._degraded if component is None else component not in self._degraded

    def status(self) -> HealthStatus:
        with self._lock:
            components = dict(sorted(self._degraded.items()))
        return {"status": "degraded" if components else "ok", "components": components}


_WRITES = frozenset({"put_block", "put_blocks", "put_verified", "put_file", "pin"})


class WatchedBackend:
    """A pod's block backend whose writes report to ``health`` as ``component``:
    degraded when one fails for want of room or a working disk (``StoreError``),
    ok again when one succeeds. Everything else passes through; a write method
    exists only where the wrapped backend has it (``Pod`` looks for
    ``put_file`` and ``put_blocks`` with ``getattr``)."""

    def __init__(self, backend: Any, health: Health, component: str = "pod") -> None:
        self._backend = backend
        self._health = health
        self._component = component

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._backend, name)
        if name not in _WRITES or not callable(attr):
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            try:
                result = attr(*args, **kwargs)
            except (CidMismatch, InvalidCid, NotFound, TooLarge):
                raise  # about the request, not the disk
            except StoreError as exc:
                self._health.degraded(self._component, f"pod write failed: {exc}")
                raise
            self._health.ok(self._component)
            return result

        return write
