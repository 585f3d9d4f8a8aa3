"""ONE consent per master plan, in the seed's words, and the authorizer that holds it.

A run of the Reactor's execute-master-plan graph asks IONWALL for its own nodes'
scopes, ``execute_master_plan:<plan CID>`` among them. ``PlanAuthorizer`` sees
that scope, loads and validates the plan, and asks instead for the union of the
graph's scopes and every agent's the plan (and its alternative plans) may call:
one request, subject the plan's CID. Approved, it is one grant; the plan's
steps run as child runs under a subject only this process knows
(``bind``), for which the authorizer hands out that same grant after checking it
covers the child's scopes (never a new prompt: a plan asking more than its grant
is refused, and a plan needing more is a new plan CID, hence a new consent).
IONWALL's gate of that grant still checks every import of every child run.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ionwall
from ionwall import CallContext, Decision, Gate, Ionwall, covers, describe_scope

from .._errors import ConsentRequired, PermissionDenied
from ..graph import Authorization

REACTOR = "ION Reactor Agent"
EXECUTE = "execute_master_plan:"
PLAN_PREFIX = f"{REACTOR}: Master Plan "


@dataclass(frozen=True, slots=True)
class PlanConsent:
    """What one plan execution asks for: the words the owner reads and the scopes."""

    plan_name: str
    plan_cid: str
    version: str
    agents: tuple[str, ...]
    agent_scopes: tuple[str, ...]  # the union of the agents' scopes
    scopes: tuple[str, ...]  # all asked: the agents' and the Reactor graph's own
    parameters_cid: str | None = None

    def text(self, consent_id: str | None = None) -> str:
        """The seed's IONWALL checkpoint prompt (section 4 of the ION Reactor seed)."""
        lines = [f"{REACTOR} wants to execute Master Plan: '{self.plan_name}'."]
        lines.append(
            f"  * This plan will orchestrate {len(self.agents)} agent"
            f"{'s' if len(self.agents) != 1 else ''}: {', '.join(self.agents)}."
        )
        lines.append("  * It requires permissions to:")
        for scope in self.agent_scopes or ():
            lines.append(f"      - {describe_scope(scope)[1]}  [{scope}]")
        if not self.agent_scopes:
            lines.append("      - nothing beyond running them")
        lines.append(f"  * Read Master Plan '{self.plan_name}' ({self.plan_cid}) from your IONPOD.")
        if self.parameters_cid:
            lines.append(f"  * Read Plan Parameters '{self.parameters_cid}' from your IONPOD.")
        lines.append("  * Store execution logs for this plan to your IONPOD.")
        own = [s for s in self.scopes if s not in self.agent_scopes]
        if own:
            lines.append("  * The Reactor's own steps (fetch, log, announce) are granted:")
            lines += [f"      - {describe_scope(s)[1]}  [{s}]" for s in own]
        lines.append(f"Allow {REACTOR} to orchestrate this plan with these permissions?")
        if consent_id:
            lines += [
                f"  ionflux consent approve {consent_id}",
                f"  ionflux consent deny {consent_id}",
            ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan_name": self.plan_name,
            "plan_cid": self.plan_cid,
            "version": self.version,
            "agents": list(self.agents),
            "agent_scopes": list(self.agent_scopes),
            "scopes": list(self.scopes),
            "parameters_cid": self.parameters_cid,
            "text": self.text(),
        }


@dataclass(frozen=True, slots=True)
class _Bound:
    grant_id: str
    scopes: tuple[str, ...]  # what a child may ask for: the plan's agents' scopes


class PlanGate:
    """The gate of a plan's child run: an import passes only if the plan's agents'
    scopes cover it (the plan's grant also holds the Reactor graph's own scopes,
    which no child may use) and then only if the plan's grant allows it (IONWALL's
    gate of the grant, which audits it). A refusal of the first kind is audited too."""

    def __init__(self, inner: Gate, allowed: tuple[str, ...], wall: Ionwall, grant_id: str):
        self.inner = inner
        self.allowed = allowed
        self.wall = wall
        self.grant_id = grant_id

    def check(self, ctx: CallContext, scope: str) -> Decision:
        try:
            inside = any(covers(a, scope) for a in self.allowed)
        except ionwall.ScopeError:
            inside = False
        if inside:
            return self.inner.check(ctx, scope)
        reason = "outside the scopes of the master plan's agents"
        self.wall.audit.append(
            subject=ctx.subject,
            transform=ctx.transform,
            scope=scope,
            allowed=False,
            reason=reason,
            run_id=ctx.run_id,
            node_id=ctx.node_id,
            grant_id=self.grant_id,
        )
        return Decision(False, scope, reason)


# plan CID -> the consent it needs (raises for a plan that does not load/validate)
ConsentFor = Callable[[str, Sequence[str]], PlanConsent]


class PlanAuthorizer:
    """The engine's ``Authorizer`` with master plans: wraps the host's (``inner``)."""

    def __init__(self, inner: Any, wall: Ionwall, consent_for: ConsentFor, graphs: set[str]):
        self.inner = inner
        self.wall = wall
        self.consent_for = consent_for
        self.graphs = graphs  # the graphs whose execute_master_plan scope is a plan's
        self._bound: dict[str, _Bound] = {}
        # graph -> why its runs are refused (a retired agent), or None
        self.refused: Callable[[str], str | None] | None = None

    # -- the plan's children -------------------------------------------------------

    def bind(self, grant_id: str, agent_scopes: Sequence[str]) -> str:
        """A subject for the child runs of one plan execution under ``grant_id``. A
        child may ask for its plan's agents' scopes (what the consent asked for
        them; the owner may have approved less: the grant's gate then refuses those
        imports, one by one) and its imports stay within them (``PlanGate``)."""
        subject = f"reactor-plan:{secrets.token_urlsafe(18)}"
        self._bound[subject] = _Bound(grant_id, tuple(agent_scopes))
        return subject

    def unbind(self, subject: str) -> None:
        self._bound.pop(subject, None)

    def plan_scopes(self, subject: str) -> tuple[str, ...]:
        bound = self._bound.get(subject)
        return bound.scopes if bound else ()

    # -- Authorizer ------------------------------------------------------------------

    def authorize(
        self,
        *,
        subject: str,
        graph: str,
        version: str,
        cid: str,
        scopes: list[str],
        dry_run: bool,
    ) -> Authorization:
        why = self.refused(graph) if self.refused is not None else None
        if why is not None:
            raise PermissionDenied(
                scopes[0] if scopes else f"execute_graph:{graph}", f"agent {graph} is {why}", cid
            )
        bound = self._bound.get(subject)
        if bound is not None:
            for scope in scopes:
                if not any(covers(g, scope) for g in bound.scopes):
                    raise PermissionDenied(
                        scope,
                        f"agent {graph} asks for it and the master plan's agents did not "
                        "when it was consented (a plan needing more asks a new consent)",
                        cid,
                    )
            if not self.wall.grant_live(bound.grant_id):
                raise PermissionDenied(
                    scopes[0] if scopes else "", "the plan's grant was revoked or expired", cid
                )
            gate = PlanGate(self.wall.gate(bound.grant_id), bound.scopes, self.wall, bound.grant_id)
            return Authorization(grant_id=bound.grant_id, gate=gate)
        plan_cid = self._plan_cid(graph, scopes)
        if plan_cid is None:
            return self._inner(subject, graph, version, cid, scopes, dry_run)
        consent = self.consent_for(plan_cid, scopes)
        if dry_run:
            return self._inner(subject, graph, version, plan_cid, list(consent.scopes), True)
        try:
            grant = self.wall.authorize(
                plan_cid, f"{PLAN_PREFIX}'{consent.plan_name}'", consent.version, consent.scopes
            )
        except ionwall.ConsentRequired as exc:
            raise ConsentRequired(exc.request) from None
        except ionwall.IonwallError as exc:
            raise PermissionDenied(", ".join(consent.scopes), str(exc), plan_cid) from exc
        return Authorization(grant_id=grant.id, gate=self.wall.gate(grant.id))

    def consent_status(self, consent_id: str) -> str | None:
        status = getattr(self.inner, "consent_status", None)
        if status is not None:
            answer: str | None = status(consent_id)
            return answer
        try:
            return self.wall.consent(consent_id).status.value
        except ionwall.UnknownConsent:
            return None

    def _plan_cid(self, graph: str, scopes: list[str]) -> str | None:
        if graph not in self.graphs:
            return None
        for scope in scopes:
            if scope.startswith(EXECUTE):
                resource = scope[len(EXECUTE) :]
                if resource and "*" not in resource and resource not in ("None", "null"):
                    return resource
        return None

    def _inner(
        self, subject: str, graph: str, version: str, cid: str, scopes: list[str], dry_run: bool
    ) -> Authorization:
        if self.inner is None:
            return Authorization(missing=tuple(scopes))
        found: Authorization = self.inner.authorize(
            subject=subject, graph=graph, version=version, cid=cid, scopes=scopes, dry_run=dry_run
        )
        return found


def install(engine: Any, make: Callable[[Any], PlanAuthorizer]) -> PlanAuthorizer:
    """Puts a ``PlanAuthorizer`` around the IONWALL authorizer of ``engine``: inside
    the serving host's counting wrapper (its gates still count denials)."""
    outer = engine.authorizer
    if isinstance(outer, _Refusing):
        return outer.plans
    if isinstance(outer, PlanAuthorizer):
        return outer
    inner = getattr(outer, "inner", None)
    if isinstance(inner, PlanAuthorizer):
        return inner
    if inner is not None and hasattr(outer, "host_gate"):  # triggers' CountingAuthorizer
        wrapped = make(inner)
        outer.inner = wrapped
        # It asks nothing for a run that requests no scope: a retired agent's runs
        # are refused in front of it.
        engine.authorizer = _Refusing(outer, wrapped)
        return wrapped
    wrapped = make(outer)
    engine.authorizer = wrapped
    return wrapped


class _Refusing:
    """Refuses the runs of a retired agent, then asks ``outer``."""

    def __init__(self, outer: Any, plans: PlanAuthorizer) -> None:
        self.outer = outer
        self.plans = plans

    def authorize(self, *, graph: str, scopes: list[str], **kwargs: Any) -> Authorization:
        refused = self.plans.refused
        why = refused(graph) if refused is not None else None
        if why is not None:
            scope = scopes[0] if scopes else f"execute_graph:{graph}"
            raise PermissionDenied(scope, f"agent {graph} is {why}", kwargs.get("cid"))
        found: Authorization = self.outer.authorize(graph=graph, scopes=scopes, **kwargs)
        return found

    def __getattr__(self, name: str) -> Any:  # consent_status, inner, host_gate, ...
        return getattr(self.outer, name)
