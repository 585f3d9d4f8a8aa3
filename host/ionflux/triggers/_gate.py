"""The graph-level IONWALL check as the serving host uses it, counting gate denials.

Every run's import calls pass the gate the authorizer hands out (the run's
grant, or the host's deny-by-default gate); ``CountingGate`` wraps it so
``ionflux_gate_denials_total{graph, action}`` counts each refusal.

A graph whose nodes request no scope needs no grant (``IonwallAuthorizer``
asks nothing for it): such a run gets the host's deny-by-default gate.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ionwall import CallContext, Decision, Gate

from ._metrics import Metrics


class CountingGate:
    def __init__(self, inner: Gate, metrics: Metrics, graph: str) -> None:
        self.inner = inner
        self.metrics = metrics
        self.graph = graph

    def check(self, ctx: CallContext, scope: str) -> Decision:
        decision = self.inner.check(ctx, scope)
        if not decision.allowed:
            self.metrics.gate_denials.labels(self.graph, scope.partition(":")[0]).inc()
        return decision


class CountingAuthorizer:
    """Wraps the engine's ``Authorizer``; ``host_gate`` is what runs without a grant get."""

    def __init__(self, inner: Any, metrics: Metrics, host_gate: Gate) -> None:
        self.inner = inner
        self.metrics = metrics
        self.host_gate = host_gate

    def authorize(self, *, graph: str, scopes: list[str], **kwargs: Any) -> Any:
        from ..graph import Authorization

        if not scopes or self.inner is None:
            auth = Authorization()
        else:
            auth = self.inner.authorize(graph=graph, scopes=scopes, **kwargs)
        gate = CountingGate(auth.gate or self.host_gate, self.metrics, graph)
        return dataclasses.replace(auth, gate=gate)

    def consent_status(self, consent_id: str) -> str | None:
        """The inner authorizer's answer (see ``IonwallAuthorizer.consent_status``);
        ``pending`` when it cannot tell (the run waits for its expiry)."""
        status = getattr(self.inner, "consent_status", None)
        return "pending" if status is None else status(consent_id)
