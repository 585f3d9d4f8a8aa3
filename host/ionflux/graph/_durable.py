"""The durable side of the driver: leases on the runs this process drives, the
recorded result of a run that ended, and the health of the run history.

A lease is (owner, expiry) in the run's row: ``owner`` names this process
(host, pid and a random token, since pids are reused); ``Leases`` pushes the
expiry of every run it drives ``lease_s`` ahead, every third of ``lease_s``.
A run whose lease ran out, or whose owner on this machine is gone, is taken
over by the next host that looks (``RunHistory.claim``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

from ._history import RunHistory, RunRecord
from ._result import RunResult, StepResult

log = logging.getLogger("ionflux.graph")

HISTORY = "run-history"  # the health component of the run history
RUN_LOG = "run-log"  # ... and of the run logs stored in the pod


class HealthLike(Protocol):
    """``ionflux._health.Health`` as the engine uses it."""

    def degraded(self, component: str, reason: str) -> None: ...

    def ok(self, component: str) -> None: ...


class Leases:
    """The runs this process drives, and the task that keeps their leases."""

    def __init__(self, history: RunHistory, lease_s: float) -> None:
        self.history = history
        self.lease_s = lease_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.driving: dict[str, asyncio.Future[RunResult]] = {}
        # Accepted here, waiting for a slot: their leases are kept too.
        self.kept: set[str] = set()
        self._renewer: asyncio.Task[None] | None = None
        # Told (on the loop) of an operator's pause or cancel asked of a run driven
        # here from another process (``RunHistory.request_control``), read as the
        # leases are renewed: no read of the history per step.
        self.on_control: Callable[[str, str], None] | None = None

    def expiry(self) -> float:
        return time.time() + self.lease_s

    def hold(self, run_id: str) -> asyncio.Future[RunResult]:
        """Marks ``run_id`` as driven here until ``let_go``; its result lands in the future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RunResult] = loop.create_future()
        self.driving[run_id] = future
        self.kept.discard(run_id)
        self._renewing(loop)
        return future

    def keep(self, run_id: str) -> None:
        """Keeps the lease of a run accepted here that is not driven yet."""
        self.kept.add(run_id)
        with contextlib.suppress(RuntimeError):  # no loop: nothing to renew it from
            self._renewing(asyncio.get_running_loop())

    def _renewing(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = loop.create_task(self._renew(), name="ionflux-leases")

    def let_go(self, run_id: str, result: RunResult | None) -> None:
        self.kept.discard(run_id)
        future = self.driving.pop(run_id, None)
        if future is not None and not future.done():
            if result is None:
                future.cancel()
            else:
                future.set_result(result)

    async def _renew(self) -> None:
        while self.driving or self.kept:
            await asyncio.sleep(self.lease_s / 3)
            ids = [*self.driving, *self.kept]
            try:
                await asyncio.to_thread(self.history.renew, ids, self.owner, self.expiry())
            except Exception as exc:  # the lease runs out: another host may take over
                log.warning("could not renew the leases of %d runs: %s", len(ids), exc)
            if self.on_control is not None:
                try:
                    asked = await asyncio.to_thread(self.history.controls, self.owner)
                except Exception as exc:
                    log.warning("could not read the controls asked of runs: %s", exc)
                    continue
                for run_id, action in asked:
                    self.on_control(run_id, action)

    def close(self) -> None:
        if self._renewer is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                self._renewer.cancel()
            self._renewer = None


def recorded_result(history: RunHistory, record: RunRecord) -> RunResult:
    """The result of a run that ended, as recorded: what a repeated request gets."""
    steps = [
        StepResult(
            node_id=s.node_id,
            target=s.target,
            status=s.status,
            level=0,
            started_at=s.start_time,
            ended_at=s.end_time,
            attempts=s.attempts,
            outputs=json.loads(s.outputs_json) if s.outputs_json else None,
            error=s.error,
            fuel_used=s.fuel_used,
            inputs_cid=s.inputs_cid,
            outputs_cid=s.outputs_cid,
            child_run_id=s.child_run_id,
            step_run_id=s.step_run_id,
        )
        for s in history.steps(record.run_id)
    ]
    mode: Any = record.mode
    return RunResult(
        execution_id=record.run_id,
        graph_name=record.graph_name,
        graph_version=record.graph_version,
        graph_cid=record.graph_cid,
        mode=mode,
        overall_status=record.status,
        output=record.output,
        steps=steps,
        started_at=record.start_time,
        ended_at=record.end_time if record.end_time is not None else record.start_time,
        error_details=record.error_details,
        step_results_summary_cid=record.step_results_summary_cid,
        output_cid=record.output_cid,
        fuel_used=record.fuel_used,
        parent_run_id=record.parent_run_id,
    )
