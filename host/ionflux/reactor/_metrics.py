"""The seed's Reactor metrics (``monitoring_json.metrics_to_collect``), on /metrics.

Registered in the serving host's Prometheus registry under the seed's exact
names (gauges, so no ``_total`` suffix is added to them).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge


class ReactorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.registry = r
        self.executed = Gauge("master_plans_executed_count", "Master plans executed", registry=r)
        self.successful = Gauge(
            "master_plans_successful_count", "Master plans that ended success", registry=r
        )
        self.failed = Gauge(
            "master_plans_failed_count", "Master plans that did not succeed", registry=r
        )
        self.avg_duration = Gauge(
            "avg_master_plan_duration_ms", "Mean wall time of a master plan", registry=r
        )
        self.avg_steps = Gauge(
            "avg_steps_per_master_plan", "Mean number of steps of a master plan", registry=r
        )
        self.lifecycle = Gauge(
            "agent_lifecycle_actions_count_deploy_update_retire",
            "Agent lifecycle actions, by operation",
            ["operation"],
            registry=r,
        )
        self.responded = Gauge(
            "critical_events_responded_to_count",
            "Alert rules that fired and were acted on",
            registry=r,
        )
        self.health = Gauge(
            "system_health_status_current",
            "1 healthy, 0.5 a warning rule firing, 0 a critical rule firing",
            registry=r,
        )
        self.health.set(1)
        self._total_ms = 0.0
        self._total_steps = 0
        self._count = 0

    def plan_done(self, status: str, duration_ms: float, steps: int) -> None:
        self._count += 1
        self._total_ms += duration_ms
        self._total_steps += steps
        self.executed.inc()
        if status == "success":
            self.successful.inc()
        else:
            self.failed.inc()
        self.avg_duration.set(self._total_ms / self._count)
        self.avg_steps.set(self._total_steps / self._count)

    def value(self, name: str) -> float | None:
        """The current value of one of these metrics (summed over labels)."""
        total, found = 0.0, False
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name == name:
                    total += sample.value
                    found = True
        return total if found else None
