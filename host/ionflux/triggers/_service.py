"""The triggers of every deployed graph, switched on and kept in step with deploys.

``TriggerService`` owns the dispatcher and the three drivers (core NATS,
JetStream, schedules) and the table of webhook paths the HTTP app serves.
``sync()`` reads the deployed graphs again and switches triggers on or off to
match (called at start and after every deploy); ``drain()`` stops taking new
events and waits for the runs in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._auth import TokenVerifier
from ._dispatch import Dispatcher, GraphRunner
from ._errors import TriggerConfigError
from ._jetstream import DurableTriggers
from ._metrics import Metrics
from ._nats import NatsTriggers
from ._schedule import FileState, KvState, Schedules, ScheduleState
from ._spec import GraphTriggers, NatsTrigger, ScheduleTrigger, WebhookTrigger

if TYPE_CHECKING:
    from ..bus import NatsBus

log = logging.getLogger("ionflux.triggers")


class TriggerService:
    def __init__(
        self,
        runner: GraphRunner,
        deployed: Callable[[], list[GraphTriggers]],
        *,
        bus: NatsBus | None,
        concurrency: int,
        queue_group: str = "ionflux-hosts",
        verifier: TokenVerifier | None = None,
        state_dir: Path | None = None,
        metrics: Metrics | None = None,
        watch_interval_s: float = 2.0,
        schedules: bool = True,
        schedule_state: ScheduleState | None = None,
    ) -> None:
        self.runner = runner
        self.watch_interval_s = watch_interval_s
        self.deployed = deployed
        self.bus = bus
        self.verifier = verifier
        self.metrics = metrics or Metrics()
        self.dispatcher = Dispatcher(
            runner, concurrency=concurrency, publisher=bus, metrics=self.metrics
        )
        self.dispatcher.completion_subject = self._completion_subject
        self.nats: NatsTriggers | None = None
        self.durable: DurableTriggers | None = None
        if bus is not None:
            self.nats = NatsTriggers(
                bus.nc, self.dispatcher, queue_group=queue_group, verifier=verifier
            )
            self.durable = DurableTriggers(bus.nc, self.dispatcher, verifier=verifier)
        self.state_dir = state_dir
        self.run_schedules = schedules
        # Given: the cluster's (state.backend: postgres); else JetStream's bucket or a file.
        self.schedule_state = schedule_state
        self.schedules: Schedules | None = None
        self.webhooks: dict[str, WebhookTrigger] = {}
        self.graphs: dict[str, GraphTriggers] = {}
        self.problems: dict[str, str] = {}
        self.on_webhooks_changed: list[Callable[[], None]] = []
        self._watch: asyncio.Task[None] | None = None
        self._sync_lock = asyncio.Lock()
        self._stamp: Any = None

    async def start(self) -> None:
        state: ScheduleState
        if self.durable is not None:
            try:
                state = KvState(await self.durable._processed())
            except Exception as exc:  # a server without JetStream: one host, local state
                log.warning("no JetStream (%s): durable triggers off, schedules local", exc)
                self.durable = None
                state = self._file_state()
        else:
            state = self._file_state()
        if self.schedule_state is not None:
            state = self.schedule_state
        if self.run_schedules:
            self.schedules = Schedules(
                self.dispatcher, state, completion_subject=self._completion_subject
            )
        await self.sync()
        # Runs a dead host (or this one, before a restart) left open go on here.
        self.dispatcher.start_resuming()
        if self.watch_interval_s > 0:
            self._watch = asyncio.get_running_loop().create_task(self._watch_deploys())

    async def _watch_deploys(self) -> None:
        """Picks up graphs deployed by another process (``ionflux graph deploy``)."""
        stamp = getattr(self.runner, "deployed_stamp", None)
        if stamp is None:
            return
        while True:
            await asyncio.sleep(self.watch_interval_s)
            try:
                if stamp() != self._stamp:
                    await self.sync()
            except Exception:
                log.exception("reading the deployed graphs failed")

    def _file_state(self) -> FileState:
        base = self.state_dir or Path(".")
        return FileState(base / "schedules.json")

    def _completion_subject(self, graph: str) -> str | None:
        found = self.graphs.get(graph)
        if self.bus is None:
            return None
        return found.completion_subject() if found else f"ionflux.graph.{graph}.completion"

    def completion_subject(self, graph: str) -> str | None:
        return self._completion_subject(graph.partition("@")[0])

    async def sync(self) -> None:
        """Switches triggers on and off to match the deployed graphs."""
        # One at a time: a deploy's sync and the watcher's must not undo each other.
        async with self._sync_lock:
            await self._sync()

    async def _sync(self) -> None:
        stamp = getattr(self.runner, "deployed_stamp", None)
        self._stamp = stamp() if stamp is not None else None
        forget = getattr(self.runner, "forget", None)
        if forget is not None:
            forget()
        wanted: dict[str, GraphTriggers] = {}
        for graph in self.deployed():
            wanted[graph.graph] = graph
        self.problems = dict(getattr(self.runner, "problems", {}))
        want_nats = {t for g in wanted.values() for t in g.nats}
        want_sched = {t for g in wanted.values() for t in g.schedules}
        for t in self._active_nats() - want_nats:
            await self._remove_nats(t)
        for t in want_nats - self._active_nats():
            try:
                await self._add_nats(t)
                self.problems.pop(t.graph, None)
            except TriggerConfigError as exc:
                log.error("%s", exc)
                self.problems[t.graph] = str(exc)
        if self.schedules is not None:
            for s in set(self.schedules.triggers) - want_sched:
                await self.schedules.remove(s)
            for s in want_sched - set(self.schedules.triggers):
                await self.schedules.add(s)
        hooks: dict[str, WebhookTrigger] = {}
        for g in wanted.values():
            for hook in g.webhooks:
                other = hooks.get(hook.path)
                if other is not None and other.graph != hook.graph:
                    self.problems[hook.graph] = (
                        f"webhook path {hook.path} is taken by graph {other.graph!r}"
                    )
                    continue
                hooks[hook.path] = hook
        self.graphs = wanted
        reserve = getattr(self.bus, "reserve", None)
        if reserve is not None:  # no guest may forge a deployed graph's completion event
            custom = {t.completion_topic for g in wanted.values() for t in g.nats}
            reserve({g.completion_subject() for g in wanted.values()} | (custom - {None}))
        changed = hooks != self.webhooks
        self.webhooks = hooks
        if changed:
            for callback in self.on_webhooks_changed:
                callback()

    def _active_nats(self) -> set[NatsTrigger]:
        active: set[NatsTrigger] = set()
        if self.nats is not None:
            active.update(self.nats.triggers)
        if self.durable is not None:
            active.update(self.durable.triggers)
        return active

    async def _add_nats(self, trigger: NatsTrigger) -> None:
        if trigger.durable:
            if self.durable is None:
                raise TriggerConfigError(
                    trigger.graph,
                    "triggers.config.delivery",
                    "jetstream delivery needs a NATS server with JetStream",
                )
            await self.durable.add(trigger)
        elif self.nats is not None:
            await self.nats.add(trigger)

    async def _remove_nats(self, trigger: NatsTrigger) -> None:
        if trigger.durable and self.durable is not None:
            await self.durable.remove(trigger)
        elif self.nats is not None:
            await self.nats.remove(trigger)

    def status(self) -> dict[str, Any]:
        schedules: list[ScheduleTrigger] = self.schedules.triggers if self.schedules else []
        return {
            "nats": [
                {"graph": t.graph, "topic": t.topic, "durable": t.durable}
                for t in sorted(self._active_nats(), key=lambda t: (t.graph, t.topic))
            ],
            "webhooks": [
                {"graph": h.graph, "path": h.path, "method": h.method}
                for h in self.webhooks.values()
            ],
            "schedules": [
                self.schedules.status[s].to_dict() for s in schedules if self.schedules is not None
            ],
            "problems": dict(self.problems),
            "in_flight": self.dispatcher.slots.in_flight,
            "queue_depth": self.dispatcher.queue_depth(),
            "concurrency": self.dispatcher.slots.limit,
        }

    async def drain(self, timeout: float = 30.0) -> int:
        """Stops every trigger, lets the runs in flight end; returns how many did not."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.schedules is not None:
            await self.schedules.stop()
        if self.durable is not None:
            await self.durable.stop()
        if self.nats is not None:
            await self.nats.stop()
        return await self.dispatcher.drain(timeout)
