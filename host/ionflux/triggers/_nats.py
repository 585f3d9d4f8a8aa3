"""Core NATS triggers: a queue subscription per ``event_driven`` trigger.

Every host subscribes in the same queue group, so NATS hands each message to
exactly one of them. The subscription callback waits for a free run slot
before it returns, so a flooded host stops reading and the rest of the flood
waits in its subscription buffer (core NATS is at-most-once: for "nothing
lost" use ``delivery: jetstream``). A request's reply subject gets the run
result; an invalid body gets an error reply and an error completion event.

A trigger needs an IONWALL token in the ``Authorization`` header (scope
``execute_graph:<graph>``) unless its graph says ``authentication_method:
none``; a message without a valid one runs nothing: it gets a typed error reply
(401/403 in ``Ionflux-Status``) and is recorded as a refused event.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .. import _tracing
from ._auth import TokenVerifier, authorize
from ._dispatch import Dispatcher, RunRequest
from ._errors import BusUnavailable, RunRefused, ShuttingDown, error_body, http_status
from ._events import encode, parse_input, reply
from ._spec import NatsTrigger

log = logging.getLogger("ionflux.triggers.nats")

STATUS_HEADER = "Ionflux-Status"


class NatsTriggers:
    def __init__(
        self,
        nc: Client,
        dispatcher: Dispatcher,
        *,
        queue_group: str,
        verifier: TokenVerifier | None = None,
    ) -> None:
        self.nc = nc
        self.dispatcher = dispatcher
        self.queue_group = queue_group
        self.verifier = verifier
        self._subs: dict[NatsTrigger, Subscription] = {}
        dispatcher.extra_depth.append(self.buffered)

    def buffered(self) -> int:
        return sum(sub.pending_msgs for sub in self._subs.values())

    @property
    def triggers(self) -> list[NatsTrigger]:
        return list(self._subs)

    async def add(self, trigger: NatsTrigger) -> None:
        if trigger in self._subs:
            return

        async def on_message(msg: Msg) -> None:
            await self._on_message(trigger, msg)

        try:
            sub = await self.nc.subscribe(
                trigger.topic,
                queue=self.queue_group,
                cb=on_message,
                pending_msgs_limit=1_000_000,
                pending_bytes_limit=1 << 30,
            )
            await self.nc.flush(timeout=5)  # subscribed at the server when add() returns
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"cannot subscribe to {trigger.topic!r}: {exc}") from exc
        self._subs[trigger] = sub

    async def remove(self, trigger: NatsTrigger) -> None:
        sub = self._subs.pop(trigger, None)
        if sub is not None:
            await _quietly(sub.unsubscribe())

    async def stop(self) -> None:
        """Stops taking messages; those already buffered are still run (drain)."""
        subs, self._subs = list(self._subs.values()), {}
        for sub in subs:
            await _quietly(sub.drain())  # type: ignore[no-untyped-call]

    async def _on_message(self, trigger: NatsTrigger, msg: Msg) -> None:
        # Waiting here blocks this subscription's delivery: that is the backpressure.
        await self.dispatcher.slots.acquire()
        self.dispatcher.spawn(self._handle(trigger, msg))

    async def _handle(self, trigger: NatsTrigger, msg: Msg) -> None:
        # Continues the publisher's trace (its traceparent header), if any.
        with _tracing.trigger_span(
            f"nats {msg.subject}", msg.headers, **{"ionflux.graph": trigger.graph}
        ):
            await self._handle_traced(trigger, msg)

    async def _handle_traced(self, trigger: NatsTrigger, msg: Msg) -> None:
        headers = msg.headers or {}
        request = RunRequest(
            graph=trigger.graph,
            input=None,
            trigger="event_driven",
            completion_subject=trigger.completion_subject(msg.subject),
            details={"subject": msg.subject, "msg_id": headers.get("Nats-Msg-Id")},
        )
        held = True
        try:
            try:
                # Who asks comes first: a caller without a token learns nothing of the body.
                if trigger.auth == "ionwall_jwt":
                    claims = authorize(self.verifier, headers.get("Authorization"), trigger.graph)
                    request = _with_caller(request, claims)
                value = parse_input(msg.data)
            except ValueError as exc:
                await self._refuse(request, msg, _not_json(exc), 422)
                return
            except Exception as exc:
                await self._refuse(request, msg, error_body(exc), http_status(exc))
                return
            request = RunRequest(
                request.graph, value, request.trigger, request.completion_subject, request.details
            )
            held = False
            try:
                result = await self.dispatcher.run(request, slot_held=True)
            except RunRefused as exc:
                await self._reply(msg, exc.event | {"output": None}, exc.status)
                return
            except ShuttingDown as exc:
                await self._reply(msg, error_body(exc), 503)
                return
            await self._reply(msg, reply(result, "event_driven"), 200)
        except Exception:  # never let one message take the subscription down
            log.exception("event on %s not handled", msg.subject)
        finally:
            if held:
                self.dispatcher.slots.release()

    async def _refuse(
        self, request: RunRequest, msg: Msg, error: Mapping[str, Any], status: int
    ) -> None:
        name = request.graph
        self.dispatcher.metrics.runs_rejected.labels(name, str(error.get("kind"))).inc()
        event = await self.dispatcher.reject(request, error)
        await self._reply(msg, event, status)

    async def _reply(self, msg: Msg, body: Mapping[str, Any], status: int) -> None:
        if not msg.reply:
            return
        try:
            await self.nc.publish(
                msg.reply, encode(body), headers=_tracing.outgoing({STATUS_HEADER: str(status)})
            )
        except nats.errors.Error as exc:
            log.warning("reply to %s lost: %s", msg.subject, exc)


def _not_json(exc: ValueError) -> dict[str, Any]:
    return {
        "kind": "invalid_input",
        "message": f"message body is not JSON: {exc}",
        "field": "(body)",
    }


def _with_caller(request: RunRequest, claims: Any) -> RunRequest:
    caller = getattr(claims, "subject", None)
    return RunRequest(
        request.graph,
        request.input,
        request.trigger,
        request.completion_subject,
        {**request.details, "caller": caller},
    )


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except (nats.errors.Error, TimeoutError) as exc:
        log.debug("ignored while unsubscribing: %s", exc)
