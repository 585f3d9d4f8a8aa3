"""What is wrong with the host right now, by component: ``/healthz`` reads it.

A part of the host that finds it cannot do its job (the data disk is full,
NATS is gone) says so with ``health.degraded(component, reason)``; when it
works again it says ``health.ok(component)``. ``status()`` is ``ok`` while no
component is degraded. The parts that act (the audit writer, the pod's put,
the trigger drivers) report what their own last attempt found, so a recovery
shows at the next attempt that succeeds.

A host that answers 503 may get no traffic (a load balancer took it out), so
no attempt would ever show the recovery: a component may be degraded with a
``probe``, a cheap check that it works again (``disk_probe``: a small file
can be written), which ``status()`` runs at most every ``probe_interval_s``
while the component is degraded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypedDict

from ._errors import CidMismatch, InvalidCid, NotFound, StoreError, TooLarge

__all__ = ["Health", "HealthStatus", "WatchedBackend", "disk_probe"]

log = logging.getLogger("ionflux.health")


class HealthStatus(TypedDict):
    status: Literal["ok", "degraded"]
    components: dict[str, str]  # degraded component -> why


class Health:
    """A thread-safe map of degraded components to the reason (one per ``Host``)."""

    def __init__(self, *, probe_interval_s: float = 1.0) -> None:
        self.probe_interval_s = probe_interval_s
        self._lock = threading.Lock()
        self._degraded: dict[str, str] = {}
        self._probes: dict[str, Callable[[], bool]] = {}
        self._probed: dict[str, float] = {}  # component -> monotonic time of its last probe

    def degraded(
        self, component: str, reason: str, *, probe: Callable[[], bool] | None = None
    ) -> None:
        """``component`` cannot do its job, because of ``reason`` (kept until ``ok``,
        or until ``probe()`` returns True)."""
        with self._lock:
            changed = self._degraded.get(component) != reason
            self._degraded[component] = reason
            if probe is not None:
                self._probes[component] = probe
                self._probed.setdefault(component, time.monotonic())
        if changed:
            log.warning("%s degraded: %s", component, reason)

    def ok(self, component: str) -> None:
        """``component`` works again (a no-op if it was not degraded)."""
        with self._lock:
            changed = self._degraded.pop(component, None) is not None
            self._probes.pop(component, None)
            self._probed.pop(component, None)
        if changed:
            log.info("%s works again", component)

    def _probe(self) -> None:
        """Runs the probes that are due (outside the lock: they touch the disk)."""
        now = time.monotonic()
        with self._lock:
            due = [
                (name, probe)
                for name, probe in self._probes.items()
                if now - self._probed.get(name, 0.0) >= self.probe_interval_s
            ]
            for name, _ in due:
                self._probed[name] = now
        for name, probe in due:
            try:
                works = probe()
            except Exception:  # a probe that fails says "still degraded"
                log.debug("the health probe of %s failed", name, exc_info=True)
                works = False
            if works:
                self.ok(name)

    def is_ok(self, component: str | None = None) -> bool:
        """No component (or ``component``) is degraded."""
        with self._lock:
            return not self._degraded if component is None else component not in self._degraded

    def status(self) -> HealthStatus:
        if self._probes:
            self._probe()
        with self._lock:
            components = dict(sorted(self._degraded.items()))
        return {"status": "degraded" if components else "ok", "components": components}


def disk_probe(directory: Path, size: int = 64 * 1024) -> Callable[[], bool]:
    """A probe: ``size`` bytes can be written (and synced) to a file in
    ``directory``, and are removed again."""

    def probe() -> bool:
        path = directory / f".health-probe-{os.getpid()}-{threading.get_ident()}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError:
            return False
        try:
            view = memoryview(bytes(size))
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()

    return probe


_WRITES = frozenset({"put_block", "put_blocks", "put_verified", "put_file", "pin"})


class WatchedBackend:
    """A pod's block backend whose writes report to ``health`` as ``component``:
    degraded when one fails for want of room or a working disk (``StoreError``),
    ok again when one succeeds. Everything else passes through; a write method
    exists only where the wrapped backend has it (``Pod`` looks for
    ``put_file`` and ``put_blocks`` with ``getattr``)."""

    def __init__(
        self,
        backend: Any,
        health: Health,
        component: str = "pod",
        *,
        probe: Callable[[], bool] | None = None,
    ) -> None:
        """``probe``: see ``Health.degraded``."""
        self._backend = backend
        self._health = health
        self._component = component
        self._probe = probe

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
                self._health.degraded(
                    self._component, f"pod write failed: {exc}", probe=self._probe
                )
                raise
            self._health.ok(self._component)
            return result

        return write
