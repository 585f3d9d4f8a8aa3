"""The engine's worker threads: where blocking guest calls run, within
``graph.concurrency`` calls at once per event loop."""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ._context import Running

_T = TypeVar("_T")


class Workers:
    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._semaphores: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()

    def executor(self) -> ThreadPoolExecutor:
        """At least as many threads as ``asyncio.to_thread``'s default pool: a
        timed-out call keeps its thread until the sandbox's own deadline, and a
        retry must not queue behind it."""
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    workers = max(self.concurrency, min(32, (os.cpu_count() or 1) + 4))
                    self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ionflux-node")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    async def off_loop(
        self, fn: Callable[..., _T], *args: Any, running: Running | None = None
    ) -> _T:
        """``fn(*args)`` on one of the worker threads, within the concurrency
        limit. If the task is cancelled meanwhile, ``running`` is closed and its
        thread told to stop after the call it is in."""
        try:
            async with self._semaphore():
                # The caller's context variables (its run's trace span, its log
                # fields) follow the call onto the worker thread, as with to_thread.
                run = contextvars.copy_context().run
                return await asyncio.get_running_loop().run_in_executor(
                    self.executor(), run, fn, *args
                )
        except asyncio.CancelledError:
            if running is not None:
                running.closed = True
                assert running.stop is not None
                running.stop.set()
            raise

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = asyncio.Semaphore(self.concurrency)
            self._semaphores[loop] = semaphore
        return semaphore
