"""Agents and their lifecycle: deploy, update, retire and roll back from definitions
stored in IONPOD.

An agent definition is the seed's ``agent_definitions`` row as an IONPOD object
(``AgentDefinition``); its FluxGraph (inline ``flux_graph_dsl_yaml`` or by
``flux_graph_dsl_cid``) is the agent, its graph's ``name`` the agent's id.

- deploy: the graph becomes a deployed version; its triggers switch on.
- update: a new definition of the same agent. Its graph's scopes are compared
  with the live grants of the version serving now: covered, the new version
  gets a grant of them at once (an IONWALL consent answered by the Reactor,
  audited) and serves; wider, an IONWALL consent is asked and the old version
  keeps serving until the owner approves (``poll`` then promotes it) or denies.
- retire: the agent's triggers switch off, runs of it are refused from then on,
  and the runs in flight end (``retire`` waits for them, up to
  ``reactor.drain_timeout_s``) before it is recorded retired.
- rollback: the version that served before (or a given one) serves again.

Every operation appends to the agent's version history (``ReactorStore``).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

import ionwall
from ionwall import covers, load_yaml

from .._errors import (
    AgentDefinitionError,
    AgentNotFound,
    InvalidAgentTransition,
    ReactorLimitExceeded,
)
from ._store import AgentRow, AgentVersion

if TYPE_CHECKING:
    from ._reactor import Reactor

OPERATIONS = ("deploy", "update", "retire", "rollback")


class AgentDefinition(BaseModel):
    """The seed's agent definition fields (others it has are kept as given)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    agent_name: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=64)
    description: str = ""
    status: str = "development"
    flux_graph_dsl_yaml: str | None = None
    flux_graph_dsl_cid: str | None = None
    trigger_config_json: dict[str, Any] | None = None
    input_schema_json: dict[str, Any] | None = None
    output_schema_json: dict[str, Any] | None = None
    execution_requirements_json: dict[str, Any] | None = None
    monitoring_json: dict[str, Any] | None = None
    security_json: dict[str, Any] | None = None


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


class Agents:
    """The lifecycle operations over one Reactor (its engine, pod, IONWALL, store)."""

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self.store = reactor.store
        self._stopped: frozenset[str] = frozenset()
        self._read_at = -1.0

    # How long another process's retire may go unseen here (``ionflux up --workers``,
    # the CLI beside a serving host): the set is read again from the store after it.
    STOPPED_TTL_S = 1.0

    @property
    def stopped(self) -> frozenset[str]:
        """Agents retired or retiring: their triggers are off and new runs refused."""
        now = time.monotonic()
        if now - self._read_at > self.STOPPED_TTL_S:
            self._stopped = frozenset(
                a.name for a in self.store.agents() if a.status in ("retired", "retiring")
            )
            self._read_at = now
        return self._stopped

    def _forget_stopped(self) -> None:
        self._read_at = -1.0

    # -- definitions -------------------------------------------------------------------

    def put_definition(self, data: dict[str, Any] | str | bytes) -> tuple[str, AgentDefinition]:
        """Stores a definition (mapping, JSON or YAML text) in IONPOD: (CID, definition)."""
        definition = self._parse(data)
        blob = json.dumps(definition.model_dump(mode="json"), sort_keys=True).encode()
        return self._pod().put_bytes(blob), definition

    def definition(self, cid: str) -> AgentDefinition:
        from .._errors import NotFound

        limit = self.reactor.config.reactor.max_plan_bytes
        try:
            data = self._pod().get_bytes(cid, max_size=limit)
        except NotFound as exc:
            raise AgentDefinitionError(f"no agent definition {cid} in IONPOD: {exc}") from None
        return self._parse(data)

    def _parse(self, data: dict[str, Any] | str | bytes) -> AgentDefinition:
        limit = self.reactor.config.reactor.max_plan_bytes
        if not isinstance(data, dict):
            raw = data.encode() if isinstance(data, str) else data
            if len(raw) > limit:
                raise ReactorLimitExceeded(
                    "max_plan_bytes", f"an agent definition of {len(raw)} bytes"
                )
            try:
                data = load_yaml(raw, "agent definition")
            except ionwall.DocumentError as exc:
                raise AgentDefinitionError(f"not YAML/JSON: {exc}") from None
            if not isinstance(data, dict):
                raise AgentDefinitionError("an agent definition is a mapping")
        try:
            definition = AgentDefinition.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise AgentDefinitionError(
                first["msg"], ".".join(str(p) for p in first["loc"])
            ) from None
        if (definition.flux_graph_dsl_yaml is None) == (definition.flux_graph_dsl_cid is None):
            raise AgentDefinitionError(
                "give exactly one of flux_graph_dsl_yaml or flux_graph_dsl_cid",
                "flux_graph_dsl_yaml",
            )
        return definition

    def graph_text(self, definition: AgentDefinition) -> str:
        if definition.flux_graph_dsl_yaml is not None:
            return definition.flux_graph_dsl_yaml
        assert definition.flux_graph_dsl_cid is not None
        limit = self.reactor.config.documents.max_bytes
        data: bytes = self._pod().get_bytes(definition.flux_graph_dsl_cid, max_size=limit)
        return data.decode()

    def _pod(self) -> Any:
        pod = self.reactor.engine.pod
        if pod is None:
            raise AgentDefinitionError("this host has no IONPOD to keep agent definitions in")
        return pod

    # -- queries -----------------------------------------------------------------------

    def summaries(self) -> list[dict[str, Any]]:
        self.poll()
        return [self._summary(row) for row in self.store.agents()]

    def show(self, name: str) -> dict[str, Any]:
        self.poll()
        row = self._row(name)
        return {
            **self._summary(row),
            "history": [v.to_dict() for v in self.store.versions(name)],
        }

    def history(self, name: str) -> list[AgentVersion]:
        self._row(name)
        return self.store.versions(name)

    def _row(self, name: str) -> AgentRow:
        row = self.store.agent(name)
        if row is None:
            known = ", ".join(a.name for a in self.store.agents()) or "none deployed"
            raise AgentNotFound(f"no agent {name!r} (agents: {known})")
        return row

    def _summary(self, row: AgentRow) -> dict[str, Any]:
        serving = self.store.version(row.serving_seq) if row.serving_seq else None
        pending = self.store.version(row.pending_seq) if row.pending_seq else None
        return {
            "name": row.name,
            "status": row.status,
            "serving": serving.to_dict() if serving else None,
            "pending": pending.to_dict() if pending else None,
            "consent_id": row.consent_id,
            "updated_at": _when(row.updated_at),
        }

    # -- operations ---------------------------------------------------------------------

    async def manage(
        self,
        operation: str,
        *,
        agent_definition_cid: str | None = None,
        agent_id: str | None = None,
        to_seq: int | None = None,
        by: str = "owner",
    ) -> dict[str, Any]:
        """The seed's ``manage_agent`` input: one operation; returns the agent after."""
        if operation not in OPERATIONS:
            raise InvalidAgentTransition(
                f"unknown operation {operation!r}; one of {', '.join(OPERATIONS)}"
            )
        if operation in ("deploy", "update") and not agent_definition_cid:
            raise AgentDefinitionError(f"{operation} needs agent_definition_cid")
        if operation in ("retire", "rollback") and not agent_id:
            raise AgentNotFound(f"{operation} needs agent_id_to_update_or_retire")
        if operation == "deploy":
            assert agent_definition_cid is not None
            version = await self.deploy(agent_definition_cid, by=by)
            name = version.name
        elif operation == "update":
            assert agent_definition_cid is not None
            version = await self.update(agent_definition_cid, agent_id, by=by)
            name = version.name
        elif operation == "retire":
            assert agent_id is not None
            await self.retire(agent_id, by=by)
            name = agent_id
        else:
            assert agent_id is not None
            await self.rollback(agent_id, to_seq=to_seq, by=by)
            name = agent_id
        return self.show(name)

    async def deploy(self, definition_cid: str, *, by: str = "owner") -> AgentVersion:
        definition = self.definition(definition_cid)
        text = self.graph_text(definition)
        engine = self.reactor.engine
        plan = engine.validate(text, f"agent {definition.agent_name}")
        row = self.store.agent(plan.name)
        if row is not None and row.status != "retired":
            raise InvalidAgentTransition(
                f"agent {plan.name!r} is {row.status}; change it with update (or retire it first)"
            )
        version = self._serve(
            plan.name, definition.version, definition_cid, text, plan, "deploy", by
        )
        await self._went_live("deploy")
        return version

    async def update(
        self, definition_cid: str, agent_id: str | None = None, *, by: str = "owner"
    ) -> AgentVersion:
        definition = self.definition(definition_cid)
        text = self.graph_text(definition)
        engine = self.reactor.engine
        plan = engine.validate(text, f"agent {definition.agent_name}")
        name = plan.name
        if agent_id is not None and agent_id != name:
            raise AgentDefinitionError(
                f"the definition's graph is {name!r}, not agent {agent_id!r}", "flux_graph_dsl_yaml"
            )
        row = self._row(name)
        if row.status in ("retired", "retiring"):
            raise InvalidAgentTransition(f"agent {name!r} is {row.status}; deploy it again")
        if row.status == "updating":
            raise InvalidAgentTransition(
                f"agent {name!r} already waits for consent {row.consent_id} for an update"
            )
        cid = engine.repository.remember(text, name, plan.graph.version)
        serving = self.store.version(row.serving_seq) if row.serving_seq else None
        scopes = engine.requested_scopes(engine.load(cid), None)
        granted = self._granted(serving.graph_cid) if serving else []
        wider = [s for s in scopes if not any(covers(g, s) for g in granted)]
        wall = self.reactor.wall
        consent_id: str | None = None
        if scopes and wall is not None:
            try:
                wall.authorize(cid, f"graph {name}", plan.graph.version, scopes)
            except ionwall.ConsentRequired as exc:
                if wider:
                    consent_id = exc.request.id
                else:
                    # Covered by the grant the serving version holds: the new version
                    # gets the same, answered by the Reactor (an audited decision).
                    wall.approve(exc.request.id, by=f"ION Reactor: update of {name} covered")
        if consent_id is not None:
            version = self.store.add_version(
                name=name,
                version=definition.version,
                definition_cid=definition_cid,
                graph_cid=cid,
                operation="update",
                state="pending_consent",
                consent_id=consent_id,
                by=by,
                agent_status="updating",
            )
            self.reactor.metrics.lifecycle.labels("update").inc()
            return version
        version = self._serve(name, definition.version, definition_cid, text, plan, "update", by)
        await self._switched()
        self.reactor.metrics.lifecycle.labels("update").inc()
        return version

    def _serve(
        self,
        name: str,
        version: str,
        definition_cid: str,
        text: str,
        plan: Any,
        operation: str,
        by: str,
    ) -> AgentVersion:
        graph, _ = self.reactor.engine.repository.deploy(
            text, name, plan.graph.version, f"{operation} by {by}"
        )
        return self._serving(name, version, definition_cid, graph.cid, operation, by)

    def _serving(
        self,
        name: str,
        version: str,
        definition_cid: str,
        graph_cid: str,
        operation: str,
        by: str,
    ) -> AgentVersion:
        """Appends a version that serves now; the agent is active (deploy, update
        without a wider consent, rollback)."""
        return self.store.add_version(
            name=name,
            version=version,
            definition_cid=definition_cid,
            graph_cid=graph_cid,
            operation=operation,
            state="serving",
            consent_id=None,
            by=by,
            agent_status="active",
        )

    def _granted(self, graph_cid: str) -> list[str]:
        wall = self.reactor.wall
        if wall is None:
            return []
        now = datetime.now(UTC)
        return [
            s
            for g in wall.grants()
            if g.subject == graph_cid and g.status(now) == "active"
            for s in g.scopes
        ]

    def poll(self) -> list[str]:
        """Promotes updates whose consent was approved, drops those denied or
        expired; returns the agents that changed."""
        wall = self.reactor.wall
        changed: list[str] = []
        if wall is None:
            return changed
        for row in self.store.agents():
            if row.status != "updating" or row.pending_seq is None or row.consent_id is None:
                continue
            try:
                status = wall.consent(row.consent_id).status.value
            except ionwall.UnknownConsent:
                status = "expired"
            pending = self.store.version(row.pending_seq)
            if pending is None:
                continue
            if status == "approved":
                text = self.reactor.engine.repository.text(pending.graph_cid)
                if text is None:
                    continue
                plan = self.reactor.engine.load(pending.graph_cid)
                self.reactor.engine.repository.deploy(
                    text, row.name, plan.graph.version, f"update by {pending.by} (consent)"
                )
                self.store.promote(row.name, pending.seq)
                changed.append(row.name)
            elif status in ("denied", "expired"):
                self.store.set_version_state(pending.seq, status)
                self.store.set_status(row.name, "active", clear_pending=True)
                changed.append(row.name)
        if changed:
            self.reactor.schedule_sync()
        return changed

    async def retire(self, name: str, *, by: str = "owner") -> AgentVersion:
        row = self._row(name)
        if row.status in ("retired", "retiring"):
            raise InvalidAgentTransition(f"agent {name!r} is {row.status} already")
        serving = self.store.version(row.serving_seq) if row.serving_seq else None
        self.store.set_status(name, "retiring", clear_pending=True)
        self._forget_stopped()
        await self._switched()  # its triggers go off: no new event reaches it
        await self._drain(name)
        version = self.store.add_version(
            name=name,
            version=serving.version if serving else "-",
            definition_cid=serving.definition_cid if serving else "-",
            graph_cid=serving.graph_cid if serving else "-",
            operation="retire",
            state="retired",
            consent_id=None,
            by=by,
            agent_status="retired",
        )
        if serving is not None:
            self.store.set_version_state(serving.seq, "retired")
        self.reactor.metrics.lifecycle.labels("retire").inc()
        return version

    async def _drain(self, name: str) -> None:
        """Waits until no run of ``name`` is in flight (or the drain timeout)."""
        history = self.reactor.engine.history
        deadline = time.monotonic() + self.reactor.config.reactor.drain_timeout_s
        while time.monotonic() < deadline:
            live = [
                r
                for status in ("running", "accepted")
                for r in history.list_runs(graph=name, status=status, limit=1)
            ]
            if not live:
                return
            await asyncio.sleep(0.05)

    async def rollback(
        self, name: str, *, to_seq: int | None = None, by: str = "owner"
    ) -> AgentVersion:
        row = self._row(name)
        versions = [v for v in self.store.versions(name) if v.operation != "retire"]
        current = row.serving_seq
        candidates = [
            v
            for v in versions
            if v.seq != current
            and v.state in ("superseded", "retired", "serving")
            and (to_seq is None or v.seq == to_seq)
        ]
        if to_seq is None:
            candidates = [v for v in candidates if current is None or v.seq < current]
        if not candidates:
            raise InvalidAgentTransition(f"agent {name!r} has no earlier version to roll back to")
        target = candidates[-1]
        engine = self.reactor.engine
        text = engine.repository.text(target.graph_cid)
        if text is None:
            raise InvalidAgentTransition(f"the graph {target.graph_cid} of {name!r} is not kept")
        engine.repository.reinstate(name, target.graph_cid, f"rollback by {by} to #{target.seq}")
        version = self._serving(
            name, target.version, target.definition_cid, target.graph_cid, "rollback", by
        )
        await self._went_live("rollback")
        return version

    async def _went_live(self, operation: str) -> None:
        """After a deploy or a rollback: the agent's status is read again, the
        triggers follow, the lifecycle action is counted."""
        self._forget_stopped()
        await self._switched()
        self.reactor.metrics.lifecycle.labels(operation).inc()

    async def _switched(self) -> None:
        """The triggers follow: the serving version's on, a retired agent's off."""
        await self.reactor.sync()
