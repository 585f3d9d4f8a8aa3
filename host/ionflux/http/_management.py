"""The management API: transforms, graphs and their versions, runs.

Tokens (``Authorization: Bearer``, checked by IONWALL):

- publishing a transform: ``manage_agent_lifecycle:transforms``
- deploying a graph: ``manage_agent_lifecycle:<graph>``
- starting a run, reading a run: ``execute_graph:<graph>``
- listing transforms, graphs and versions: no token (names and CIDs only).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from .._errors import GraphNotFound, InvalidInput, ManifestError
from ..graph import MODES
from ..manifest import parse_manifest
from ..triggers import RunRequest, graph_scope, reply
from ._context import ApiContext
from ._errors import error_response

Auth = Annotated[str | None, Header(alias="Authorization")]


class PublishBody(BaseModel):
    manifest: dict[str, Any] | str = Field(description="the manifest, as a mapping or YAML text")
    module_base64: str = Field(description="the wasm module or component, base64")


class DeployBody(BaseModel):
    graph: str = Field(description="the FluxGraph YAML text")
    message: str = Field(default="deployed over HTTP", description="why (kept with the version)")


class RunBody(BaseModel):
    input: Any = Field(default_factory=dict, description="trigger.input_data of the run")
    mode: str = Field(default="run_all", description=f"one of {', '.join(MODES)}")


def management_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter()
    host, engine, triggers = ctx.host, ctx.engine, ctx.triggers

    # -- transforms -------------------------------------------------------------

    @router.get("/transforms", tags=["transforms"], summary="List published transforms")
    def list_transforms() -> list[dict[str, Any]]:
        return [t.summary() for t in host.registry.list()]

    @router.post(
        "/transforms",
        tags=["transforms"],
        status_code=201,
        summary="Publish a transform (manifest + module)",
    )
    def publish_transform(body: PublishBody, authorization: Auth = None) -> dict[str, Any]:
        ctx.authorize(authorization, "manage_agent_lifecycle:transforms")
        data = yaml.safe_load(body.manifest) if isinstance(body.manifest, str) else body.manifest
        manifest = parse_manifest(data)
        try:
            module = base64.b64decode(body.module_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ManifestError(f"not base64: {exc}", field="module_base64") from exc
        return host.publish_bytes(manifest, module).summary()

    # -- graphs -----------------------------------------------------------------

    @router.get("/graphs", tags=["graphs"], summary="List deployed graphs and their triggers")
    def list_graphs() -> list[dict[str, Any]]:
        out = []
        for name in engine.repository.names():
            latest = engine.repository.latest(name)
            deployed = triggers.graphs.get(name)
            out.append(
                {
                    "name": name,
                    "latest": _version(latest) if latest else None,
                    "triggers": _triggers(deployed) if deployed else None,
                    "problem": triggers.problems.get(name),
                }
            )
        return out

    @router.post(
        "/graphs",
        tags=["graphs"],
        status_code=201,
        summary="Deploy a graph (a new version); its triggers switch on",
    )
    async def deploy_graph(body: DeployBody, authorization: Auth = None) -> dict[str, Any]:
        plan = engine.validate(body.graph, "<http>")
        ctx.authorize(authorization, f"manage_agent_lifecycle:{plan.name}")
        version, created = engine.repository.deploy(
            body.graph, plan.name, plan.graph.version, body.message
        )
        await triggers.sync()
        return {
            **_version(version),
            "created": created,
            "problem": triggers.problems.get(plan.name),
        }

    @router.get("/graphs/{name}/versions", tags=["graphs"], summary="Versions of a graph")
    def graph_versions(name: str) -> list[dict[str, Any]]:
        found = engine.repository.versions(name)
        if not found:
            raise GraphNotFound(f"no deployed graph {name!r}")
        return [_version(v) for v in found]

    # -- runs -------------------------------------------------------------------

    @router.post("/graphs/{name}/runs", tags=["runs"], summary="Start a run (manual trigger)")
    async def start_run(
        name: str,
        request: Request,
        body: Annotated[RunBody, Body()] | None = None,
        authorization: Auth = None,
        prefer: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        body = body or RunBody()
        claims = ctx.authorize(authorization, graph_scope(name.partition("@")[0]))
        if body.mode not in MODES:
            raise InvalidInput(f"mode: one of {', '.join(MODES)}, not {body.mode!r}")
        check = getattr(triggers.runner, "check_input", None)
        if check is not None:
            check(name, body.input)
        run = RunRequest(
            graph=name,
            input=body.input,
            trigger="manual",
            completion_subject=triggers.completion_subject(name),
            details={"caller": getattr(claims, "subject", None), "api": True},
        )
        if prefer and "respond-async" in prefer.lower():
            run_id = triggers.dispatcher.submit(run)
            url = str(request.url_for("run_status", run_id=run_id))
            return JSONResponse(
                {"run_id": run_id, "status": "accepted", "status_url": url},
                status_code=202,
                headers={"Location": url},
            )
        try:
            result = await triggers.dispatcher.run(run)
        except Exception as exc:
            return error_response(exc)
        return JSONResponse(
            {
                **reply(result, "manual"),
                "steps": [s.to_dict() for s in getattr(result, "steps", [])],
            }
        )

    @router.get("/runs", tags=["runs"], summary="Recent runs, newest first")
    def list_runs(
        authorization: Auth = None,
        graph: str | None = None,
        status: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> list[dict[str, Any]]:
        if graph is None:
            ctx.authorize(authorization, "execute_graph:*")
        else:
            ctx.authorize(authorization, graph_scope(graph))
        return [_run(r) for r in engine.history.list_runs(graph=graph, status=status, limit=limit)]

    @router.get(
        "/runs/{run_id}",
        tags=["runs"],
        name="run_status",
        summary="A run: status, output and every step",
    )
    def run_status(run_id: str, authorization: Auth = None) -> JSONResponse:
        pending = triggers.dispatcher.pending.get(run_id)
        lookup = pending.execution_id if pending and pending.execution_id else run_id
        record = engine.history.find(lookup)
        if record is None and pending is not None:
            ctx.authorize(authorization, graph_scope(pending.request.graph.partition("@")[0]))
            return JSONResponse(
                {
                    "run_id": run_id,
                    "status": pending.status,
                    "graph": pending.request.graph,
                    "error": pending.error,
                    "execution_id": pending.execution_id,
                }
            )
        if record is None:
            raise GraphNotFound(f"no run {run_id!r}")
        ctx.authorize(authorization, graph_scope(record.graph_name))
        steps = engine.history.steps(record.run_id)
        return JSONResponse({**_run(record), "run_id": run_id, "steps": [_step(s) for s in steps]})

    return router


def _version(v: Any) -> dict[str, Any]:
    return {
        "name": v.name,
        "version": v.version,
        "cid": v.cid,
        "message": v.message,
        "created_at": v.created_at,
        "seq": v.seq,
    }


def _triggers(g: Any) -> dict[str, Any]:
    return {
        "manual": g.manual,
        "nats": [{"topic": t.topic, "durable": t.durable} for t in g.nats],
        "webhooks": [{"path": h.path, "method": h.method, "auth": h.auth} for h in g.webhooks],
        "schedules": [{"cron": s.cron, "timezone": s.timezone} for s in g.schedules],
    }


def _run(r: Any) -> dict[str, Any]:
    out = dataclasses.asdict(r)
    out["execution_id"] = r.run_id
    out["overall_status"] = r.status
    out["duration_s"] = r.duration_s
    return out


def _step(s: Any) -> dict[str, Any]:
    return {**dataclasses.asdict(s), "duration_s": s.duration_s}
