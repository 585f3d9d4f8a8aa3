"""Health rules that act: the seed's ``alerting_rules``, evaluated over the host's
own metrics.

A rule::

    {metric: "run_failure_rate{graph=\\"digest\\"}", condition: "value > 0.05 for 30m",
     severity: critical, notification_channel: ops_pager,
     emergency_plan: safe_mode_lockdown, pre_authorized: false, window: 5m}

``condition`` is ``value <op> <number>`` with an optional ``for <duration>``: the
rule fires once the condition held at every evaluation for that long (at once
without ``for``), and once more only after it stopped holding. Metrics
(``HostMetrics``):

- ``run_failure_rate`` / ``run_failure_rate{graph="g"}``: of the runs started in
  the last ``window`` that ended, the share that did not succeed (run history);
- ``runs_failed`` / ``{graph="g"}``: how many failed in the window;
- ``disk_free_ratio``: free space of the data directory's disk (0..1);
- ``durable_backlog``: runs accepted and not started yet;
- anything on ``/metrics`` by its name (``ionflux_queue_depth``,
  ``ionflux_gate_denials_total{graph="g"}``, the Reactor's own); a counter
  (``_total``) reads as its increase over the ``window``.

A firing rule publishes ``ionflux.system.critical_alert`` and, with an
``emergency_plan``, starts it; a plan marked ``drastic`` waits for a person's
confirmation (``Reactor.confirm``) unless the rule says ``pre_authorized``.

In a cluster (``state.backend: postgres``) one host evaluates at a time, the
holder of a lease in the shared database, and the rules' states live there
(``Evaluator.load``, ``ReactorStore.save_rule_states``): a host taking over
goes on from them, and a rule fires once across the hosts. The metrics from the
run history are the cluster's; those on ``/metrics`` are the evaluating host's.
"""

from __future__ import annotations

import operator
import re
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from .._errors import AlertRuleError
from ..graph import Retry

if TYPE_CHECKING:
    from ..graph import Engine

ALERT_SUBJECT = "ionflux.system.critical_alert"
SEVERITIES = ("info", "warning", "critical")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_CONDITION = re.compile(r"^\s*value\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\s*(?:for\s+(\S+))?\s*$")
_METRIC = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?$")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"([^"]*)"\s*(?:,|$)')


def _seconds(value: Any, where: str) -> float:
    try:
        return float(Retry(count=1, backoff=value).backoff)
    except ValueError:
        raise AlertRuleError(f"{value!r} is not a duration (like 30s, 5m, 1h)", where) from None


@dataclass(frozen=True, slots=True)
class AlertRule:
    name: str
    metric: str
    labels: tuple[tuple[str, str], ...]
    op: str
    threshold: float
    hold_s: float
    severity: str
    notification_channel: str
    emergency_plan: str | None = None
    pre_authorized: bool = False
    window_s: float = 300.0
    condition: str = ""

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric
            + ("{" + ",".join(f'{k}="{v}"' for k, v in self.labels) + "}" if self.labels else ""),
            "condition": self.condition,
            "severity": self.severity,
            "notification_channel": self.notification_channel,
            "emergency_plan": self.emergency_plan,
            "pre_authorized": self.pre_authorized,
            "window_s": self.window_s,
        }


def parse_rule(raw: Any, index: int = 0) -> AlertRule:
    """One rule in the seed's form; raises ``AlertRuleError`` naming the field."""
    if not isinstance(raw, dict):
        raise AlertRuleError("an alert rule is a mapping", f"alert_rules[{index}]")
    where = f"alert_rules[{index}]"
    known = {"name", "metric", "condition", "severity", "notification_channel",
             "emergency_plan", "pre_authorized", "window"}  # fmt: skip
    extra = sorted(set(raw) - known)
    if extra:
        raise AlertRuleError(f"unknown field(s) {', '.join(extra)}", where)
    metric = raw.get("metric")
    found = _METRIC.match(metric) if isinstance(metric, str) else None
    if found is None:
        raise AlertRuleError('a metric name, optionally with {label="value"}', f"{where}.metric")
    labels: list[tuple[str, str]] = []
    if found.group(2):
        text = found.group(2)
        pos = 0
        while pos < len(text):
            label = _LABEL.match(text, pos)
            if label is None:
                raise AlertRuleError(f'labels {text!r} are not name="value"', f"{where}.metric")
            labels.append((label.group(1), label.group(2)))
            pos = label.end()
    condition = str(raw.get("condition") or "")
    parsed = _CONDITION.match(condition)
    if parsed is None:
        raise AlertRuleError(
            "'value <op> <number>' with an optional 'for <duration>' (value > 0.05 for 30m)",
            f"{where}.condition",
        )
    hold = _seconds(parsed.group(3), f"{where}.condition") if parsed.group(3) else 0.0
    severity = raw.get("severity", "critical")
    if severity not in SEVERITIES:
        raise AlertRuleError(f"one of {', '.join(SEVERITIES)}", f"{where}.severity")
    channel = raw.get("notification_channel", "")
    if not isinstance(channel, str):
        raise AlertRuleError("a name", f"{where}.notification_channel")
    plan = raw.get("emergency_plan")
    if plan is not None and not (isinstance(plan, str) and plan):
        raise AlertRuleError("a master plan name or CID", f"{where}.emergency_plan")
    window = _seconds(raw.get("window", "5m"), f"{where}.window")
    return AlertRule(
        name=str(raw.get("name") or f"{found.group(1)} {condition.strip()}"),
        metric=found.group(1),
        labels=tuple(labels),
        op=parsed.group(1),
        threshold=float(parsed.group(2)),
        hold_s=hold,
        severity=severity,
        notification_channel=channel,
        emergency_plan=plan,
        pre_authorized=bool(raw.get("pre_authorized", False)),
        window_s=window,
        condition=condition.strip(),
    )


class HostMetrics:
    """Reads the metrics the rules name, from the run history, the disk and the
    Prometheus registries of the host."""

    def __init__(
        self, engine: Engine, registries: list[CollectorRegistry], clock: Callable[[], float]
    ) -> None:
        self.engine = engine
        self.registries = registries
        self.clock = clock
        # name+labels -> (time, value) samples of counters, for their increase
        self._counters: dict[str, deque[tuple[float, float]]] = {}

    def value(self, rule: AlertRule) -> float | None:
        labels = dict(rule.labels)
        now = self.clock()
        if rule.metric in ("run_failure_rate", "runs_failed"):
            return self._failures(labels.get("graph"), now - rule.window_s, rule.metric)
        if rule.metric == "disk_free_ratio":
            usage = shutil.disk_usage(self.engine.config.data_dir)
            return usage.free / usage.total if usage.total else 0.0
        if rule.metric == "durable_backlog":
            return float(len(self.engine.history.list_runs(status="accepted", limit=10_000)))
        total = self._sample(rule.metric, labels)
        if total is None:
            return None
        if rule.metric.endswith("_total"):
            key = rule.metric + repr(sorted(labels.items()))
            seen = self._counters.setdefault(key, deque())
            seen.append((now, total))
            while len(seen) > 1 and seen[1][0] <= now - rule.window_s:
                seen.popleft()
            return total - seen[0][1] if len(seen) > 1 else 0.0
        return total

    def _sample(self, name: str, labels: dict[str, str]) -> float | None:
        total, found = 0.0, False
        for registry in self.registries:
            for metric in registry.collect():
                for sample in metric.samples:
                    if sample.name == name and all(
                        sample.labels.get(k) == v for k, v in labels.items()
                    ):
                        total += sample.value
                        found = True
        return total if found else None

    def _failures(self, graph: str | None, since: float, metric: str) -> float:
        runs = self.engine.history.list_runs(graph=graph, limit=1000)
        ended = [
            r
            for r in runs
            if r.start_time >= since
            and r.status not in ("running", "accepted", "paused", "waiting", "awaiting_approval")
        ]
        failed = [r for r in ended if r.status not in ("success",)]
        if metric == "runs_failed":
            return float(len(failed))
        return len(failed) / len(ended) if ended else 0.0


@dataclass
class RuleState:
    since: float | None = None  # when the condition started to hold
    firing: bool = False
    last_value: float | None = None
    fired_at: float | None = None
    fired: int = 0


@dataclass(frozen=True, slots=True)
class Firing:
    """A rule that fired at this evaluation."""

    rule: AlertRule
    value: float
    at: float


@dataclass
class Evaluator:
    """The pure part: rules, their states, and which fire for given values."""

    rules: list[AlertRule]
    states: dict[str, RuleState] = field(default_factory=dict)

    def step(self, values: dict[str, float | None], now: float) -> list[Firing]:
        fired: list[Firing] = []
        for rule in self.rules:
            state = self.states.setdefault(rule.name, RuleState())
            value = values.get(rule.name)
            state.last_value = value
            if value is None or not rule.holds(value):
                state.since, state.firing = None, False
                continue
            if state.since is None:
                state.since = now
            if not state.firing and now - state.since >= rule.hold_s:
                state.firing, state.fired_at = True, now
                state.fired += 1
                fired.append(Firing(rule, value, now))
        return fired

    def load(self, states: dict[str, RuleState]) -> None:
        """Takes the rules' states as saved (a cluster: the host that evaluated them
        last may be another); a rule with no saved state starts afresh."""
        for rule in self.rules:
            found = states.get(rule.name)
            self.states[rule.name] = replace(found) if found is not None else RuleState()

    def status(self) -> float:
        """``system_health_status_current``: 1, 0.5 (a warning fires), 0 (critical)."""
        levels = [r.severity for r in self.rules if self.states.get(r.name, RuleState()).firing]
        if "critical" in levels:
            return 0.0
        return 0.5 if levels else 1.0


def now() -> float:
    return time.time()
