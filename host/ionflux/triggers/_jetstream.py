"""Durable triggers over JetStream: nothing is lost, nothing runs twice.

For an ``event_driven`` trigger with ``delivery: jetstream`` the host keeps a
stream on the topic (one it finds covering the subject, or ``IONFLUX_<topic>``)
and one durable pull consumer per graph, shared by every host: each host
fetches only as many messages as it has free run slots, so a flood waits in
the stream, and work spreads to whichever host is free.

- A message is acknowledged only after its run has ended and is recorded
  (the engine writes the run history before it answers), and after its id is
  written to the ``IONFLUX_PROCESSED`` key-value bucket.
- While a run goes on the host tells JetStream it is still working
  (``in_progress``) every third of ``ack_wait``; a host that dies stops doing
  so and the message is redelivered to another host after ``ack_wait``.
- ``Nats-Msg-Id``: JetStream drops a republish within the stream's duplicate
  window (2 minutes); past it, and for a redelivery whose run had ended but
  whose ack was lost, the processed bucket (kept 24 hours) says the id ran
  already: the message is acknowledged and not run again. Messages without
  an id are known by their stream sequence.
- A body that is not JSON, or a message without a valid IONWALL token, is
  refused once (error completion event) and terminated (``term``):
  redelivering it would not make it JSON or authorised.
- The run key of a message is its processed key: the run history holds at
  most one run per key, so a redelivery (a host killed between recording the
  run and acking it, a NATS outage) finds the run: answered if it ended,
  resumed if its host died, waited for if another host drives it.
- A run the history cannot record (disk full, database locked) is never
  acked: the message is nak'd with a backoff (``/healthz`` says
  ``run-history`` degraded).
- A run whose grant is missing or too narrow is recorded ``awaiting_approval``
  (durable: approving the consent resumes it on whichever host looks next): its
  message is acked then, like any recorded run, and not redelivered. Only a run
  that could not wait (refused for a missing grant without being recorded
  waiting) is nak'd with a backoff (``_awaiting_consent``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, KeyValueConfig, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from .. import _tracing
from ._auth import TokenVerifier, authorize
from ._dispatch import Dispatcher, RunRequest
from ._errors import BusUnavailable, RunRefused, ShuttingDown, TriggerConfigError, error_body
from ._events import parse_input
from ._spec import NatsTrigger

log = logging.getLogger("ionflux.triggers.jetstream")
T = TypeVar("T")

PROCESSED_BUCKET = "IONFLUX_PROCESSED"
PROCESSED_TTL_S = 24 * 3600.0
DUPLICATE_WINDOW_S = 120.0
STREAM_MAX_AGE_S = 7 * 24 * 3600.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def stream_name(topic: str) -> str:
    return "IONFLUX_" + _UNSAFE.sub("_", topic.replace("*", "STAR").replace(">", "GT"))


def consumer_name(graph: str) -> str:
    return "ionflux-" + _UNSAFE.sub("_", graph)


def processed_key(graph: str, msg_id: str | None, stream: str, seq: int) -> str:
    ident = f"id:{msg_id}" if msg_id else f"seq:{stream}:{seq}"
    return f"{_UNSAFE.sub('_', graph)}.{hashlib.sha256(ident.encode()).hexdigest()[:40]}"


@dataclass
class _Consumer:
    trigger: NatsTrigger
    stream: str
    sub: JetStreamContext.PullSubscription
    task: asyncio.Task[None] | None = None
    pending: int = 0
    stopping: bool = False
    handlers: set[asyncio.Task[Any]] = field(default_factory=set)


class DurableTriggers:
    def __init__(
        self,
        nc: Client,
        dispatcher: Dispatcher,
        *,
        verifier: TokenVerifier | None = None,
        fetch_timeout_s: float = 1.0,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.dispatcher = dispatcher
        self.verifier = verifier
        self.fetch_timeout_s = fetch_timeout_s
        self._kv: KeyValue | None = None
        self._consumers: dict[NatsTrigger, _Consumer] = {}
        dispatcher.extra_depth.append(self.backlog)

    def backlog(self) -> int:
        """Messages in the streams not yet delivered (refreshed by the fetch loops)."""
        return sum(c.pending for c in self._consumers.values())

    @property
    def triggers(self) -> list[NatsTrigger]:
        return list(self._consumers)

    async def _processed(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self.js.key_value(PROCESSED_BUCKET)
            except nats.js.errors.BucketNotFoundError:
                self._kv = await self.js.create_key_value(
                    KeyValueConfig(bucket=PROCESSED_BUCKET, ttl=PROCESSED_TTL_S, history=1)
                )
        return self._kv

    async def ensure_stream(self, trigger: NatsTrigger) -> str:
        """The stream that captures ``trigger.topic``, created when there is none."""
        try:
            return await self.js.find_stream_name_by_subject(trigger.topic)
        except nats.js.errors.NotFoundError:
            pass
        name = stream_name(trigger.topic)
        try:
            await self.js.add_stream(
                StreamConfig(
                    name=name,
                    subjects=[trigger.topic],
                    max_age=STREAM_MAX_AGE_S,
                    duplicate_window=DUPLICATE_WINDOW_S,
                )
            )
        except nats.js.errors.BadRequestError as exc:
            raise TriggerConfigError(
                trigger.graph,
                "triggers.config.topic",
                f"cannot keep a stream on {trigger.topic!r}: {exc}",
            ) from exc
        return name

    async def add(self, trigger: NatsTrigger) -> None:
        if trigger in self._consumers:
            return
        try:
            await self._processed()
            stream = await self.ensure_stream(trigger)
            durable = consumer_name(trigger.graph)
            await self.js.add_consumer(
                stream,
                ConsumerConfig(
                    durable_name=durable,
                    filter_subject=trigger.topic,
                    ack_wait=trigger.ack_wait_s,
                    max_deliver=trigger.max_deliver,
                    max_ack_pending=10_000,
                ),
            )
            sub = await self.js.pull_subscribe_bind(durable=durable, stream=stream)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(
                f"cannot set up durable trigger on {trigger.topic!r}: {exc}"
            ) from exc
        consumer = _Consumer(trigger, stream, sub)
        consumer.task = asyncio.get_running_loop().create_task(self._fetch_loop(consumer))
        self._consumers[trigger] = consumer

    async def remove(self, trigger: NatsTrigger) -> None:
        consumer = self._consumers.pop(trigger, None)
        if consumer is not None:
            await self._stop(consumer)

    async def stop(self) -> None:
        """Stops fetching. Runs in flight end and are acked (the dispatcher drains them)."""
        consumers, self._consumers = list(self._consumers.values()), {}
        await asyncio.gather(*(self._stop(c) for c in consumers))

    async def _stop(self, consumer: _Consumer) -> None:
        consumer.stopping = True
        if consumer.task is not None:
            consumer.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer.task

    async def _fetch_loop(self, consumer: _Consumer) -> None:
        # One message per fetch, only with a free slot in hand: a host takes no more
        # than it can run now, and the rest of a flood waits in the stream for
        # whichever host frees a slot first. (nats-py's batched fetch can linger
        # for its whole timeout on a partial batch; one at a time never does.)
        slots = self.dispatcher.slots
        fetched = 0
        while not consumer.stopping:
            await slots.acquire()
            msgs: list[Msg] = []
            try:
                try:
                    msgs = await consumer.sub.fetch(1, timeout=self.fetch_timeout_s)
                except TimeoutError:
                    pass
                except nats.errors.Error as exc:
                    # Disconnected or the server restarting: the client reconnects by itself.
                    log.debug("fetch on %s: %s", consumer.trigger.topic, exc)
                    await asyncio.sleep(0.25)
            finally:
                if not msgs:
                    slots.release()
            for msg in msgs:
                self.dispatcher.spawn(self._handle(consumer, msg))
            fetched += len(msgs)
            if not msgs or fetched % 32 == 0:
                await self._refresh_pending(consumer)

    async def _refresh_pending(self, consumer: _Consumer) -> None:
        try:
            info = await consumer.sub.consumer_info()
            consumer.pending = int(info.num_pending or 0)
        except (nats.errors.Error, TimeoutError):
            pass

    async def _handle(self, consumer: _Consumer, msg: Msg) -> None:
        """Runs one message; the slot it was fetched with is held and released here.
        Continues the publisher's trace (its ``traceparent`` header), if any."""
        with _tracing.trigger_span(
            f"jetstream {msg.subject}", msg.headers, **{"ionflux.graph": consumer.trigger.graph}
        ):
            await self._handle_traced(consumer, msg)

    async def _handle_traced(self, consumer: _Consumer, msg: Msg) -> None:
        trigger = consumer.trigger
        graph = trigger.graph
        headers = msg.headers or {}
        meta = msg.metadata
        msg_id = headers.get("Nats-Msg-Id")
        key = processed_key(graph, msg_id, meta.stream, meta.sequence.stream)
        request = RunRequest(
            graph=graph,
            input=None,
            trigger="event_driven",
            completion_subject=trigger.completion_subject(msg.subject),
            details={
                "subject": msg.subject,
                "msg_id": msg_id,
                "stream": meta.stream,
                "stream_seq": meta.sequence.stream,
                "delivery": meta.num_delivered,
            },
        )
        held = True
        keepalive: asyncio.Task[None] | None = None
        try:
            if meta.num_delivered > 1:
                self.dispatcher.metrics.redeliveries.labels(graph).inc()
            kv = await self._processed()
            try:
                seen = await _retrying(lambda: _seen(kv, key), within=5.0)
            except (nats.errors.Error, TimeoutError):
                # NATS is away (restarting): hand it back now rather than after ack_wait.
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    await msg.nak(delay=1.0)
                return
            if seen:
                self.dispatcher.metrics.duplicates.labels(graph).inc()
                await msg.ack()
                return
            try:
                if trigger.auth == "ionwall_jwt":
                    authorize(self.verifier, headers.get("Authorization"), graph)
                value = parse_input(msg.data)
            except Exception as exc:
                error = (
                    {
                        "kind": "invalid_input",
                        "message": f"message body is not JSON: {exc}",
                        "field": "(body)",
                    }
                    if isinstance(exc, ValueError)
                    else error_body(exc)
                )
                self.dispatcher.metrics.runs_rejected.labels(graph, str(error["kind"])).inc()
                event = await self.dispatcher.reject(request, error)
                await kv.put(key, str(event["execution_id"]).encode())
                await msg.term()
                return
            request = RunRequest(
                graph,
                value,
                request.trigger,
                request.completion_subject,
                request.details,
                run_key=f"jetstream:{key}",
            )
            keepalive = asyncio.get_running_loop().create_task(
                _keep_alive(msg, trigger.ack_wait_s / 3)
            )
            held = False
            try:
                result = await self.dispatcher.run(request, slot_held=True)
                execution_id = result.execution_id
            except RunRefused as exc:
                if exc.status >= 500:
                    # Not recorded (the run history cannot write: disk full, locked):
                    # never acked; redelivered after a backoff, here or elsewhere.
                    await msg.nak(delay=_backoff(meta.num_delivered))
                    return
                execution_id = str(exc.event.get("execution_id"))
            except ShuttingDown:
                await msg.nak()  # another host takes it
                return
            else:
                if _awaiting_consent(result):
                    await msg.nak(delay=_backoff(meta.num_delivered))
                    return
            # The keepalive goes on while the outcome is recorded and acked: if NATS is
            # away for a moment (a restart), JetStream must not hand the message to
            # another host while this one still means to ack it.
            await _settle(kv, key, execution_id, msg, within=max(30.0, 2 * trigger.ack_wait_s))
        except (nats.errors.Error, TimeoutError) as exc:
            # Not acked: JetStream redelivers after ack_wait; the processed bucket
            # stops a second run if this one did finish.
            log.warning("durable message %s on %s not acked: %s", key, msg.subject, exc)
        except Exception:
            log.exception("durable message on %s not handled", msg.subject)
        finally:
            if keepalive is not None:
                keepalive.cancel()
            if held:
                self.dispatcher.slots.release()


def _backoff(delivered: int) -> float:
    """Seconds before a nak'd message comes back: 0.5 s doubling to 30 s."""
    return float(min(30.0, 0.5 * 2 ** max(0, delivered - 1)))


def _awaiting_consent(result: Any) -> bool:
    """A run refused for a missing grant and not recorded waiting (the engine
    records a top-level run ``awaiting_approval`` instead, and that message is
    acked): not final, so the message is nak'd (redelivered with a backoff, up to
    ``max_deliver``) and the engine released its run key so a later delivery runs."""
    errors = getattr(result, "error_details", None) or []
    return getattr(result, "overall_status", "") == "failure" and any(
        isinstance(e, dict) and e.get("kind") == "consent_required" for e in errors
    )


async def _seen(kv: KeyValue, key: str) -> bool:
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        return False
    return entry.value is not None


async def _retrying(fn: Callable[[], Awaitable[T]], *, within: float) -> T:
    """``fn()``, tried again while NATS errors for up to ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await fn()
        except (nats.errors.Error, TimeoutError):
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.2)


async def _settle(kv: KeyValue, key: str, execution_id: str, msg: Msg, *, within: float) -> None:
    """Records the id as processed, then acks; retries while NATS is away (reconnecting)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    recorded = False
    while True:
        try:
            if not recorded:
                await kv.put(key, execution_id.encode())
                recorded = True
            await msg.ack_sync(timeout=2.0)
            return
        except (nats.errors.Error, TimeoutError):
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.2)


async def _keep_alive(msg: Msg, every: float) -> None:
    while True:
        await asyncio.sleep(max(0.05, every))
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await msg.in_progress()
