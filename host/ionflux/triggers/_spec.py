"""A graph's ``triggers:`` block as typed specs, validated once at switch-on.

The seeds' shapes, with our optional additions (all under ``config``):

    - type: event_driven
      config: {event_source: NATS, topic: ionflux.digest.run,
               completion_topic: ...,          # default: <subject>.completion
               delivery: jetstream,            # durable; default: core NATS
               ack_wait: 30s, max_deliver: 5,  # durable only
               authentication_method: ionwall_jwt}   # the default; 'none' opens it
    - type: webhook
      config: {path: /webhooks/invoke/x, method: POST, authentication_method: ionwall_jwt}
    - type: schedule                           # also: scheduled, cron
      config: {cron: "*/5 * * * *", timezone: Europe/Lisbon, input: {...},
               missed: report | run_once}
    - type: manual

A bad block raises ``TriggerConfigError`` naming the graph and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from ._errors import TriggerConfigError

AuthMethod = Literal["ionwall_jwt", "none"]
_SUBJECT = re.compile(r"^[^\s.*>]+(\.[^\s.*>]+|\.\*|\.>)*$|^(\*|>)(\.[^\s.*>]+|\.\*|\.>)*$")
_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")
_RESERVED_PREFIXES = (
    "/graphs",
    "/transforms",
    "/runs",
    "/healthz",
    "/metrics",
    "/docs",
    "/openapi.json",
    "/redoc",
    "/ionwall",
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass(frozen=True, slots=True)
class NatsTrigger:
    graph: str
    topic: str
    durable: bool = False
    completion_topic: str | None = None
    auth: AuthMethod = "ionwall_jwt"
    ack_wait_s: float = 30.0
    max_deliver: int = 5

    def completion_subject(self, subject: str) -> str:
        return self.completion_topic or f"{subject}.completion"


@dataclass(frozen=True, slots=True)
class WebhookTrigger:
    graph: str
    path: str
    method: str = "POST"
    auth: AuthMethod = "ionwall_jwt"


@dataclass(frozen=True, slots=True)
class ScheduleTrigger:
    graph: str
    cron: str
    timezone: str = "UTC"
    input_json: str = "{}"  # the run's input, as JSON text (a spec is hashable)
    missed: Literal["report", "run_once"] = "report"

    @property
    def input(self) -> Any:
        return json.loads(self.input_json)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


TriggerSpec = NatsTrigger | WebhookTrigger | ScheduleTrigger


@dataclass(frozen=True, slots=True)
class GraphTriggers:
    """Every trigger of one deployed graph."""

    graph: str
    version: str
    nats: tuple[NatsTrigger, ...] = ()
    webhooks: tuple[WebhookTrigger, ...] = ()
    schedules: tuple[ScheduleTrigger, ...] = ()
    manual: bool = False

    def completion_subject(self) -> str:
        """Where runs not started from NATS announce their end."""
        for t in self.nats:
            if t.completion_topic:
                return t.completion_topic
            if "*" not in t.topic and ">" not in t.topic:
                return f"{t.topic}.completion"
        return f"ionflux.graph.{self.graph}.completion"


def parse_triggers(graph: str, version: str, triggers: Iterable[Any]) -> GraphTriggers:
    """``triggers`` are the graph model's (``.type``/``.config``) or plain mappings."""
    nats: list[NatsTrigger] = []
    hooks: list[WebhookTrigger] = []
    schedules: list[ScheduleTrigger] = []
    manual = False
    for i, trigger in enumerate(triggers):
        kind, config = _kind_and_config(trigger)
        where = f"triggers.{i}"
        if kind == "manual":
            manual = True
        elif kind == "event_driven":
            nats.append(_nats(graph, where, config))
        elif kind == "webhook":
            hooks.append(_webhook(graph, where, config))
        elif kind in ("schedule", "scheduled", "cron"):
            schedules.append(_schedule(graph, where, config))
        else:
            raise TriggerConfigError(graph, f"{where}.type", f"unknown trigger type {kind!r}")
    return GraphTriggers(graph, version, tuple(nats), tuple(hooks), tuple(schedules), manual)


def _kind_and_config(trigger: Any) -> tuple[str, Mapping[str, Any]]:
    if isinstance(trigger, Mapping):
        return str(trigger.get("type")), trigger.get("config") or {}
    return str(trigger.type), trigger.config or {}


def _nats(graph: str, where: str, config: Mapping[str, Any]) -> NatsTrigger:
    source = str(config.get("event_source", "NATS"))
    if source.upper() != "NATS":
        raise TriggerConfigError(
            graph, f"{where}.config.event_source", f"only NATS is supported, not {source!r}"
        )
    topic = config.get("topic")
    if not isinstance(topic, str) or not _SUBJECT.match(topic):
        raise TriggerConfigError(
            graph, f"{where}.config.topic", f"a NATS subject is required (got {topic!r})"
        )
    completion = config.get("completion_topic")
    if completion is not None and (
        not isinstance(completion, str)
        or not _SUBJECT.match(completion)
        or "*" in completion
        or ">" in completion
    ):
        raise TriggerConfigError(
            graph, f"{where}.config.completion_topic", "must be a NATS subject without wildcards"
        )
    delivery = str(config.get("delivery", "core")).lower()
    durable = bool(config.get("durable", False)) or delivery == "jetstream"
    if delivery not in ("core", "jetstream"):
        raise TriggerConfigError(
            graph, f"{where}.config.delivery", f"'core' or 'jetstream', not {delivery!r}"
        )
    max_deliver = config.get("max_deliver", 5)
    if not isinstance(max_deliver, int) or max_deliver < 1:
        raise TriggerConfigError(graph, f"{where}.config.max_deliver", "a positive integer")
    return NatsTrigger(
        graph=graph,
        topic=topic,
        durable=durable,
        completion_topic=completion,
        # Anyone who can reach the bus could otherwise run the graph with its
        # owner's grants: a token unless the graph opens the trigger explicitly.
        auth=_auth(graph, where, config, default="ionwall_jwt"),
        ack_wait_s=_seconds(graph, f"{where}.config.ack_wait", config.get("ack_wait", 30.0)),
        max_deliver=max_deliver,
    )


def _webhook(graph: str, where: str, config: Mapping[str, Any]) -> WebhookTrigger:
    path = config.get("path")
    if not isinstance(path, str) or not _PATH.match(path) or path == "/":
        raise TriggerConfigError(
            graph, f"{where}.config.path", f"an absolute URL path is required (got {path!r})"
        )
    if any(path == p or path.startswith(p + "/") for p in _RESERVED_PREFIXES):
        raise TriggerConfigError(
            graph, f"{where}.config.path", f"{path} collides with the management API"
        )
    method = str(config.get("method", "POST")).upper()
    if method != "POST":
        raise TriggerConfigError(
            graph, f"{where}.config.method", f"webhooks take POST, not {method}"
        )
    return WebhookTrigger(
        graph, path.rstrip("/"), method, _auth(graph, where, config, default="ionwall_jwt")
    )


def _schedule(graph: str, where: str, config: Mapping[str, Any]) -> ScheduleTrigger:
    cron = config.get("cron") or config.get("schedule")
    if not isinstance(cron, str) or not croniter.is_valid(cron):
        raise TriggerConfigError(
            graph, f"{where}.config.cron", f"a cron expression is required (got {cron!r})"
        )
    timezone = str(config.get("timezone", "UTC"))
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TriggerConfigError(
            graph, f"{where}.config.timezone", f"unknown time zone {timezone!r}"
        ) from exc
    missed = str(config.get("missed", "report"))
    if missed not in ("report", "run_once"):
        raise TriggerConfigError(
            graph, f"{where}.config.missed", f"'report' or 'run_once', not {missed!r}"
        )
    try:
        input_json = json.dumps(config.get("input", {}), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise TriggerConfigError(graph, f"{where}.config.input", f"not JSON: {exc}") from exc
    return ScheduleTrigger(
        graph, cron, timezone, input_json, "run_once" if missed == "run_once" else "report"
    )


def _auth(graph: str, where: str, config: Mapping[str, Any], *, default: AuthMethod) -> AuthMethod:
    method = str(config.get("authentication_method", default))
    if method == "ionwall_jwt" or method.startswith("ionwall_jwt"):
        return "ionwall_jwt"  # the seeds' ionwall_jwt_scoped_for_… variants are the same check
    if method == "none":
        return "none"
    raise TriggerConfigError(
        graph, f"{where}.config.authentication_method", f"'ionwall_jwt' or 'none', not {method!r}"
    )


def _seconds(graph: str, where: str, value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and float(match.group(1)) > 0:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise TriggerConfigError(graph, where, f"a duration like '30s' (got {value!r})")
