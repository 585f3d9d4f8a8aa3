"""Triggers: how NATS messages, webhooks and schedules become graph runs.

    service = TriggerService(EngineRunner(engine), runner.deployed, bus=bus, concurrency=8)
    await service.start()   # switches on the triggers of every deployed graph
    ...
    await service.drain()   # stops taking events, lets runs in flight end

The parts: ``_spec`` (a graph's ``triggers:`` block, typed), ``_dispatch``
(bounded runs and completion events), ``_nats`` (core NATS, queue groups,
request-reply), ``_jetstream`` (durable: ack after record, redelivery,
``Nats-Msg-Id`` dedupe), ``_schedule`` (croniter, missed runs reported),
``_auth`` (IONWALL bearer tokens), ``_events`` (wire formats), ``_metrics``
(Prometheus), ``_nats_server`` (the nats-server the host starts), ``_runner``
(the graph engine behind it all).
"""

from ._auth import TokenVerifier, authorize, bearer_token, graph_scope
from ._dispatch import Dispatcher, GraphRunner, RunRequest, Slots
from ._errors import (
    BusUnavailable,
    Overloaded,
    RunRefused,
    ShuttingDown,
    TriggerConfigError,
    TriggerError,
    Unauthorized,
    error_body,
    http_status,
)
from ._events import completion_event, parse_input, rejection, reply
from ._gate import CountingAuthorizer
from ._jetstream import DurableTriggers
from ._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ._metrics import Metrics
from ._nats import STATUS_HEADER, NatsTriggers
from ._nats_server import NatsServer, credentials_for, nats_server_binary
from ._runner import EngineRunner, input_problem
from ._schedule import Schedules, SharedScheduleState, fire_times, next_fire
from ._service import TriggerService
from ._spec import (
    GraphTriggers,
    NatsTrigger,
    ScheduleTrigger,
    WebhookTrigger,
    parse_triggers,
)

__all__ = [
    "METRICS_CONTENT_TYPE",
    "STATUS_HEADER",
    "BusUnavailable",
    "CountingAuthorizer",
    "Dispatcher",
    "DurableTriggers",
    "EngineRunner",
    "GraphRunner",
    "GraphTriggers",
    "Metrics",
    "NatsServer",
    "NatsTrigger",
    "NatsTriggers",
    "Overloaded",
    "RunRefused",
    "RunRequest",
    "ScheduleTrigger",
    "Schedules",
    "SharedScheduleState",
    "ShuttingDown",
    "Slots",
    "TokenVerifier",
    "TriggerConfigError",
    "TriggerError",
    "TriggerService",
    "Unauthorized",
    "WebhookTrigger",
    "authorize",
    "bearer_token",
    "completion_event",
    "credentials_for",
    "error_body",
    "fire_times",
    "graph_scope",
    "http_status",
    "input_problem",
    "nats_server_binary",
    "next_fire",
    "parse_input",
    "parse_triggers",
    "rejection",
    "reply",
]
