"""The gate: the single place where a host import asks to use a capability.

The runtime resolves every import call to a concrete scope (for example
``read_pod_data:reports/01.json``) and asks ``Gate.check``. The answer is a
``Decision``; the runtime turns a denial into the guest-visible
``error.denied`` and never lets the capability run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ._errors import ScopeError
from ._scope import covering, parse_scopes


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling: the module and, when inside a graph run, the run and node."""

    subject: str  # the module CID
    transform: str  # the manifest name, for messages
    run_id: str | None = None
    node_id: str | None = None
    grant_id: str | None = None  # the grant the run was started under, if any


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    scope: str
    reason: str


class Gate(Protocol):
    def check(self, ctx: CallContext, scope: str) -> Decision: ...


class AllowAllGate:
    """Allows everything and records nothing. For benchmarks only.

    It measures what the gate costs by being absent; it must never guard a
    real run.
    """

    def check(self, ctx: CallContext, scope: str) -> Decision:
        return Decision(True, scope, "allow-all gate (benchmarks only)")


class AllowListGate:
    """Allows exactly the scopes its list covers, records nothing. For tests."""

    def __init__(self, scopes: Iterable[str]) -> None:
        self.scopes = parse_scopes(scopes)

    def check(self, ctx: CallContext, scope: str) -> Decision:
        try:
            granted = covering(self.scopes, scope)
        except ScopeError as exc:
            return Decision(False, scope, f"unparseable scope: {exc.problem}")
        if granted is None:
            return Decision(False, scope, "not in the allow list")
        return Decision(True, scope, f"allow list: {granted}")
