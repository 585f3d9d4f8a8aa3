"""The ION Reactor over HTTP: master plans and agents (``ionflux.reactor``).

Tokens: storing or running plan ``p``: ``execute_master_plan:<p>`` (its name;
the door lets in any ``execute_master_plan`` scope); reading plans and agents:
``read_host:graphs``; an agent operation on ``a``: ``manage_agent_lifecycle:<a>``;
storing an agent definition: ``manage_agent_lifecycle:definitions``; a plan
consent's prompt: ``manage_ionwall:consents``; confirming an emergency plan:
``manage_ionwall:consents``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from .._errors import InvalidInput
from ..reactor import parse_plan, plan_from_data
from ..triggers import reply
from ._context import ApiContext
from ._guard import needs, needs_any


class PlanBody(BaseModel):
    plan: dict[str, Any] | str = Field(description="the master plan, a mapping or YAML/JSON text")


class PlanRunBody(BaseModel):
    parameters: Any = Field(default=None, description="the plan's runtime parameters")
    mode: str = Field(default="run_all", description="run_all or dry_run_validate_only")


class AgentBody(BaseModel):
    agent_definition_cid: str | None = None
    agent_id_to_update_or_retire: str | None = None
    to_seq: int | None = Field(default=None, description="rollback: the version row to serve")


class DefinitionBody(BaseModel):
    definition: dict[str, Any] | str = Field(description="the agent definition (seed fields)")


def reactor_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["reactor"])

    def reactor() -> Any:
        if ctx.reactor is None:
            raise InvalidInput("this host runs no ION Reactor")
        return ctx.reactor

    @router.get(
        "/reactor/plans", summary="Master plans by name", openapi_extra=needs("read_host:graphs")
    )
    def list_plans() -> list[dict[str, Any]]:
        return [
            {"name": n, "cid": c, "version": v, "created_at": t}
            for n, c, v, t in reactor().store.plans()
        ]

    @router.post(
        "/reactor/plans",
        status_code=201,
        summary="Store a master plan in IONPOD",
        openapi_extra=needs_any("execute_master_plan", then="execute_master_plan:<plan>"),
    )
    async def put_plan(request: Request) -> dict[str, Any]:
        body = await ctx.bodies.model(request, PlanBody)
        r = reactor()
        settings = r.config.reactor
        raw = body.plan
        parsed = (
            plan_from_data(raw, settings) if isinstance(raw, dict) else parse_plan(raw, settings)
        )
        ctx.require(request, f"execute_master_plan:{parsed.name}")  # before anything is stored
        cid, plan = r.put_plan(parsed.model_dump(mode="json", exclude_none=True))
        return {"name": plan.name, "cid": cid, "version": plan.version}

    @router.get(
        "/reactor/plans/{ref}",
        summary="A plan: steps, validation, the consent it asks",
        openapi_extra=needs("read_host:graphs"),
    )
    def show_plan(ref: str) -> dict[str, Any]:
        r = reactor()
        cid, plan = r.resolve_plan(ref)
        checked = r.check_plan(plan)
        return {
            "cid": cid,
            "plan": plan.model_dump(mode="json"),
            "levels": checked.levels,
            "consent": r.consent_for(cid).to_dict(),
        }

    @router.post(
        "/reactor/plans/{ref}/runs",
        summary="Run a master plan (one consent covers every agent it calls)",
        openapi_extra=needs_any("execute_master_plan", then="execute_master_plan:<plan>"),
    )
    async def run_plan(ref: str, request: Request) -> JSONResponse:
        r = reactor()
        cid, plan = r.resolve_plan(ref)
        claims = ctx.require(request, f"execute_master_plan:{plan.name}")
        body = (
            await ctx.bodies.model(request, PlanRunBody) if await request.body() else PlanRunBody()
        )
        if body.mode not in ("run_all", "dry_run_validate_only"):
            raise InvalidInput("mode: run_all or dry_run_validate_only")
        caller = str(getattr(claims, "subject", None) or "owner (http)")
        result = await r.run_plan(cid, body.parameters, mode=body.mode, subject=caller)
        return JSONResponse({**reply(result, "manual"), "master_plan_cid": cid})

    @router.get(
        "/reactor/agents",
        summary="Agents and their status",
        openapi_extra=needs("read_host:graphs"),
    )
    def list_agents() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = reactor().agents.summaries()
        return out

    @router.get(
        "/reactor/agents/{name}",
        summary="An agent: status and version history",
        openapi_extra=needs("read_host:graphs"),
    )
    def show_agent(name: str) -> dict[str, Any]:
        out: dict[str, Any] = reactor().agents.show(name)
        return out

    @router.post(
        "/reactor/agent-definitions",
        status_code=201,
        summary="Store an agent definition in IONPOD",
        openapi_extra=needs("manage_agent_lifecycle:definitions"),
    )
    async def put_definition(request: Request) -> dict[str, Any]:
        body = await ctx.bodies.model(request, DefinitionBody)
        cid, definition = reactor().agents.put_definition(body.definition)
        return {"cid": cid, "agent_name": definition.agent_name, "version": definition.version}

    @router.post(
        "/reactor/agents/{operation}",
        summary="deploy, update, retire or roll back an agent (the seed's manage_agent)",
        openapi_extra=needs_any("manage_agent_lifecycle", then="manage_agent_lifecycle:<agent>"),
    )
    async def manage(operation: str, request: Request) -> dict[str, Any]:
        body = await ctx.bodies.model(request, AgentBody)
        r = reactor()
        name = body.agent_id_to_update_or_retire
        if name is None and body.agent_definition_cid:
            definition = r.agents.definition(body.agent_definition_cid)
            name = r.engine.validate(r.agents.graph_text(definition)).name
        claims = ctx.require(request, f"manage_agent_lifecycle:{name}")
        by = str(getattr(claims, "subject", None) or "owner (http)")
        out: dict[str, Any] = await r.agents.manage(
            operation,
            agent_definition_cid=body.agent_definition_cid,
            agent_id=body.agent_id_to_update_or_retire,
            to_seq=body.to_seq,
            by=by,
        )
        return out

    @router.get(
        "/reactor/consents/{consent_id}/prompt",
        summary="A master plan's consent prompt, in the seed's words",
        openapi_extra=needs("manage_ionwall:consents"),
    )
    def plan_prompt(consent_id: str) -> dict[str, Any]:
        return {"consent_id": consent_id, "text": reactor().consent_text(consent_id)}

    @router.get(
        "/reactor/health",
        summary="Alert rules and alerts",
        openapi_extra=needs("read_host:metrics"),
    )
    def health() -> dict[str, Any]:
        r = reactor()
        return {
            "system_health_status_current": r.evaluator.status(),
            "rules": r.health(),
            "alerts": r.alerts[-20:],
            "confirmations": [c.to_dict() for c in r.confirmations()],
        }

    @router.post(
        "/reactor/confirmations/{confirmation_id}/confirm",
        summary="A person confirms a drastic emergency plan: it runs",
        openapi_extra=needs("manage_ionwall:consents"),
    )
    async def confirm(confirmation_id: str, request: Request) -> dict[str, Any]:
        claims = ctx.require(request, "manage_ionwall:consents")
        by = str(getattr(claims, "subject", None) or "owner (http)")
        result = await reactor().confirm(confirmation_id, by=by)
        return reply(result, "reactor_health")

    return router
