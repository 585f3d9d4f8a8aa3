"""Prometheus metrics of the triggers, in a registry per service (tests run several)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs_started = Counter(
            "ionflux_runs_started",
            "Runs started, by graph and trigger",
            ["graph", "trigger"],
            registry=r,
        )
        self.runs_succeeded = Counter(
            "ionflux_runs_succeeded",
            "Runs that ended with overall_status success",
            ["graph"],
            registry=r,
        )
        self.runs_failed = Counter(
            "ionflux_runs_failed",
            "Runs that did not succeed, by overall_status",
            ["graph", "status"],
            registry=r,
        )
        self.runs_rejected = Counter(
            "ionflux_runs_rejected",
            "Trigger events refused before a run (input, token)",
            ["graph", "reason"],
            registry=r,
        )
        self.run_duration = Histogram(
            "ionflux_run_duration_seconds",
            "Wall time of a run",
            ["graph"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.step_duration = Histogram(
            "ionflux_step_duration_seconds",
            "Wall time of a step, by graph and node",
            ["graph", "node"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.gate_denials = Counter(
            "ionflux_gate_denials",
            "Import calls the IONWALL gate refused, by graph and action",
            ["graph", "action"],
            registry=r,
        )
        self.runs_in_flight = Gauge("ionflux_runs_in_flight", "Runs executing now", registry=r)
        self.queue_depth = Gauge(
            "ionflux_queue_depth", "Trigger events waiting for a free run slot", registry=r
        )
        self.schedule_missed = Counter(
            "ionflux_schedule_missed",
            "Scheduled runs missed while the host was down",
            ["graph"],
            registry=r,
        )
        self.duplicates = Counter(
            "ionflux_durable_duplicates",
            "Durable messages not run again: id already processed",
            ["graph"],
            registry=r,
        )
        self.redeliveries = Counter(
            "ionflux_durable_redeliveries",
            "Durable messages delivered more than once",
            ["graph"],
            registry=r,
        )

        self.healthy = Gauge(
            "ionflux_healthy", "1 while /healthz answers ok, 0 while degraded", registry=r
        )
        self.degraded = Gauge(
            "ionflux_degraded",
            "1 for each component that is degraded now (the reason is in /healthz)",
            ["component"],
            registry=r,
        )

    def observe_health(self, components: Iterable[str]) -> None:
        """Sets the health gauges to the degraded ``components`` (none: healthy)."""
        names = sorted(components)
        self.degraded.clear()
        for name in names:
            self.degraded.labels(name).set(1)
        self.healthy.set(0 if names else 1)

    def observe_steps(self, graph: str, steps: Iterable[Any]) -> None:
        for step in steps:
            duration: float | None = getattr(step, "duration_s", None)
            node = str(getattr(step, "node_id", "?"))
            if duration is not None:
                self.step_duration.labels(graph, node).observe(duration)

    def track_gauge(self, gauge: Gauge, fn: Callable[[], float]) -> None:
        gauge.set_function(fn)

    def render(self) -> bytes:
        return generate_latest(self.registry)
