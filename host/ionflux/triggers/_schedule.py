"""Scheduled triggers: croniter computes the fire times in the trigger's time zone.

While the host is up each schedule sleeps until its next fire time and starts
the graph with the trigger's ``input``. The last fire time is remembered (in
the JetStream key-value bucket shared by every host, or in a local file when
there is no JetStream), so a host that starts again knows what it missed:
every missed fire is reported (a warning in the log, the
``ionflux_schedule_missed`` counter, an event on
``ionflux.schedule.missed`` and the ``missed`` list of ``GET /schedules``),
and with ``missed: run_once`` the graph also runs once for the latest one.
Several hosts share one schedule: each fire is claimed in the bucket and runs
on one host only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import nats.errors
import nats.js.errors
from croniter import croniter
from nats.js.kv import KeyValue

from ._dispatch import Dispatcher, RunRequest
from ._events import encode
from ._spec import ScheduleTrigger

log = logging.getLogger("ionflux.triggers.schedule")

MISSED_SUBJECT = "ionflux.schedule.missed"
MAX_MISSED_LISTED = 100


class ScheduleState(Protocol):
    async def last(self, key: str) -> float | None: ...
    async def set_last(self, key: str, when: float) -> None: ...
    async def claim(self, key: str, when: float) -> bool: ...


class FileState:
    """One host, no JetStream: a JSON file of last fire times."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._data: dict[str, float] = json.loads(path.read_text())
        except (OSError, ValueError):
            self._data = {}

    async def last(self, key: str) -> float | None:
        return self._data.get(key)

    async def set_last(self, key: str, when: float) -> None:
        self._data[key] = max(when, self._data.get(key, 0.0))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._data))
        tmp.replace(self.path)

    async def claim(self, key: str, when: float) -> bool:
        return True


class KvState:
    """Shared by every host on the bus: last fire times and per-fire claims."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def last(self, key: str) -> float | None:
        try:
            entry = await self.kv.get(f"sched.last.{key}")
        except nats.js.errors.KeyNotFoundError:
            return None
        return float(entry.value.decode()) if entry.value else None

    async def set_last(self, key: str, when: float) -> None:
        current = await self.last(key)
        if current is None or when > current:
            await self.kv.put(f"sched.last.{key}", repr(when).encode())

    async def claim(self, key: str, when: float) -> bool:
        try:
            await self.kv.create(f"sched.fire.{key}.{int(when)}", b"1")
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except nats.js.errors.APIError as exc:
            if "wrong last sequence" in str(exc).lower() or exc.err_code == 10071:
                return False
            raise
        return True


class SharedScheduleState:
    """In the cluster's state database (``state.backend: postgres``): every host's
    last fire times and per-fire claims, beside the runs they start. A claim is
    one insert (the primary key decides: of hosts claiming one fire, one row
    wins); statements run on a worker thread, off the event loop."""

    PRUNE_EVERY = 1000  # claims between two prunes of claims past KEEP_S
    KEEP_S = 7 * 24 * 3600.0

    def __init__(self, database: Any, owner: str) -> None:
        self.db = database  # an ionflux.state.PgDatabase
        self.owner = owner
        self._claims = 0

    async def last(self, key: str) -> float | None:
        row = (
            await asyncio.to_thread(
                self.db.execute, "SELECT last_fire FROM schedule_last WHERE key=?", (key,)
            )
        ).fetchone()
        return None if row is None else float(row[0])

    async def set_last(self, key: str, when: float) -> None:
        await asyncio.to_thread(
            self.db.execute,
            "INSERT INTO schedule_last (key, last_fire) VALUES (?, ?) ON CONFLICT (key)"
            " DO UPDATE SET last_fire = GREATEST(schedule_last.last_fire, EXCLUDED.last_fire)",
            (key, when),
        )

    async def claim(self, key: str, when: float) -> bool:
        now = time.time()
        claimed = await asyncio.to_thread(
            self.db.execute,
            "INSERT INTO schedule_fires (key, fire, claimed_by, claimed_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (key, int(when), self.owner, now),
        )
        self._claims += 1
        if self._claims % self.PRUNE_EVERY == 0:
            await asyncio.to_thread(
                self.db.execute,
                "DELETE FROM schedule_fires WHERE claimed_at < ?",
                (now - self.KEEP_S,),
            )
        return bool(claimed.rowcount == 1)


def schedule_key(spec: ScheduleTrigger) -> str:
    digest = hashlib.sha256(f"{spec.graph}|{spec.cron}|{spec.timezone}".encode()).hexdigest()
    return digest[:32]


def fire_times(
    spec: ScheduleTrigger, after: float, until: float, limit: int = 10_000
) -> list[float]:
    """Fire times in ``(after, until]``, oldest first."""
    it = croniter(spec.cron, datetime.fromtimestamp(after, spec.zone))
    out: list[float] = []
    while len(out) < limit:
        when = float(it.get_next(float))
        if when > until:
            break
        out.append(when)
    return out


def next_fire(spec: ScheduleTrigger, after: float) -> float:
    return float(croniter(spec.cron, datetime.fromtimestamp(after, spec.zone)).get_next(float))


@dataclass
class ScheduleStatus:
    spec: ScheduleTrigger
    next_at: float | None = None
    last_at: float | None = None
    missed: list[float] = field(default_factory=list)
    missed_total: int = 0

    def to_dict(self) -> dict[str, Any]:
        iso = _iso
        return {
            "graph": self.spec.graph,
            "cron": self.spec.cron,
            "timezone": self.spec.timezone,
            "missed_policy": self.spec.missed,
            "next_at": iso(self.next_at),
            "last_at": iso(self.last_at),
            "missed_total": self.missed_total,
            "missed": [iso(t) for t in self.missed],
        }


class Schedules:
    def __init__(
        self,
        dispatcher: Dispatcher,
        state: ScheduleState,
        *,
        completion_subject: Callable[[str], str | None] = lambda graph: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dispatcher = dispatcher
        self.state = state
        self.completion_subject = completion_subject
        self.clock = clock
        self.status: dict[ScheduleTrigger, ScheduleStatus] = {}
        self._tasks: dict[ScheduleTrigger, asyncio.Task[None]] = {}

    @property
    def triggers(self) -> list[ScheduleTrigger]:
        return list(self._tasks)

    async def add(self, spec: ScheduleTrigger) -> ScheduleStatus:
        if spec in self._tasks:
            return self.status[spec]
        status = ScheduleStatus(spec)
        self.status[spec] = status
        key = schedule_key(spec)
        now = self.clock()
        last = await self.state.last(key)
        if last is not None:
            missed = fire_times(spec, last, now)
            if missed:
                await self._report_missed(status, missed)
                if spec.missed == "run_once" and await self.state.claim(key, missed[-1]):
                    self.dispatcher.spawn(self._fire(spec, missed[-1], late=True))
        await self.state.set_last(key, now)
        status.last_at = last
        self._tasks[spec] = asyncio.get_running_loop().create_task(self._loop(spec, status))
        return status

    async def remove(self, spec: ScheduleTrigger) -> None:
        task = self._tasks.pop(spec, None)
        self.status.pop(spec, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        for spec in list(self._tasks):
            task = self._tasks.pop(spec)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _report_missed(self, status: ScheduleStatus, missed: list[float]) -> None:
        spec = status.spec
        status.missed = missed[-MAX_MISSED_LISTED:]
        status.missed_total += len(missed)
        self.dispatcher.metrics.schedule_missed.labels(spec.graph).inc(len(missed))
        log.warning(
            "schedule %r of graph %s missed %d run(s) while the host was down (%s .. %s)%s",
            spec.cron,
            spec.graph,
            len(missed),
            _iso(missed[0]),
            _iso(missed[-1]),
            "; running once now" if spec.missed == "run_once" else "",
        )
        publisher = self.dispatcher.publisher
        if publisher is not None:
            event = {
                "graph": spec.graph,
                "cron": spec.cron,
                "timezone": spec.timezone,
                "missed_count": len(missed),
                "missed": [_iso(t) for t in status.missed],
                "action": "run_once" if spec.missed == "run_once" else "reported",
            }
            with contextlib.suppress(Exception):
                await publisher.apublish(MISSED_SUBJECT, encode(event))

    async def _loop(self, spec: ScheduleTrigger, status: ScheduleStatus) -> None:
        key = schedule_key(spec)
        after = self.clock()
        while True:
            when = next_fire(spec, after)
            status.next_at = when
            await asyncio.sleep(max(0.0, when - self.clock()))
            after = when
            try:
                if not await self.state.claim(key, when):
                    continue  # another host took this fire
                await self.state.set_last(key, when)
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning(
                    "schedule of %s: state not reachable (%s); firing anyway", spec.graph, exc
                )
            status.last_at = when
            if self.dispatcher.closing:
                return
            self.dispatcher.spawn(self._fire(spec, when, late=False))

    async def _fire(self, spec: ScheduleTrigger, when: float, *, late: bool) -> None:
        request = RunRequest(
            graph=spec.graph,
            input=spec.input,
            trigger="scheduled",
            completion_subject=self.completion_subject(spec.graph),
            details={
                "cron": spec.cron,
                "timezone": spec.timezone,
                "scheduled_for": _iso(when),
                "late": late,
            },
        )
        try:
            await self.dispatcher.run(request)
        except Exception as exc:
            log.warning("scheduled run of %s refused: %s", spec.graph, exc)


def _iso(when: float | None) -> str | None:
    return None if when is None else datetime.fromtimestamp(when, UTC).isoformat()
