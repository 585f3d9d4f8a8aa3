"""The management API: transforms, graphs and their versions, runs.

Tokens (``Authorization: Bearer``, checked by IONWALL at the door, before any
body is read; see ``_guard``):

- publishing a transform: ``manage_agent_lifecycle:transforms``
- deploying a graph: ``manage_agent_lifecycle:<graph>`` (the door lets in a
  token with some ``manage_agent_lifecycle`` scope; the exact one is checked
  once the YAML names the graph)
- starting a run of ``g``, reading its runs: ``execute_graph:g``; listing runs
  of every graph: ``execute_graph:*``
- pausing, resuming, cancelling or retrying a run of ``g``: ``control_run:g``
  (the door lets in a token with some ``control_run`` scope; the exact one is
  checked once the run's record names its graph); each is an audit entry
- listing transforms: ``read_host:transforms``; graphs and their versions:
  ``read_host:graphs`` (``read_host:*`` reads every list of the host)

Bodies are read through ``ApiContext.bodies``: JSON nested at most
``http.max_json_depth`` levels; YAML, graph validation and manifests are
parsed on its threads, off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ionwall import DocumentLimits

from .._errors import GraphNotFound, InvalidInput, ManifestError
from ..graph import Control, Mode, RunTrigger, audit_control, control_scope
from ..manifest import Manifest, parse_manifest, parse_manifest_text
from ..triggers import RunRequest, graph_scope, reply
from ._bodies import request_body
from ._context import ApiContext
from ._errors import error_response
from ._guard import needs, needs_any

Auth = Annotated[str | None, Header(alias="Authorization")]


class PublishBody(BaseModel):
    manifest: dict[str, Any] | str = Field(description="the manifest, as a mapping or YAML text")
    module_base64: str = Field(description="the wasm module or component, base64")


class DeployBody(BaseModel):
    graph: str = Field(description="the FluxGraph YAML text")
    message: str = Field(default="deployed over HTTP", description="why (kept with the version)")


class ControlBody(BaseModel):
    from_step: str | None = Field(
        default=None, description="retry: the node id (or 1-based place) to run again from"
    )
    input: Any = Field(default=None, description="retry: the input that step runs with")


class RunBody(BaseModel):
    input: Any = Field(default_factory=dict, description="trigger.input_data of the run")
    mode: Mode = Field(
        default="run_all",
        description="run_all; dry_run_validate_only (validates and plans, runs no node); "
        "step_through_debug needs a person at a terminal: `ionflux graph run --mode`",
    )


def management_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter()
    host, engine, triggers, bodies = ctx.host, ctx.engine, ctx.triggers, ctx.bodies

    # -- transforms -------------------------------------------------------------

    @router.get(
        "/transforms",
        tags=["transforms"],
        summary="List published transforms",
        openapi_extra=needs("read_host:transforms"),
    )
    def list_transforms() -> list[dict[str, Any]]:
        return [t.summary() for t in host.registry.list()]

    @router.post(
        "/transforms",
        tags=["transforms"],
        status_code=201,
        summary="Publish a transform (manifest + module)",
        openapi_extra={
            **needs("manage_agent_lifecycle:transforms", body="publish"),
            **request_body(PublishBody),
        },
    )
    async def publish_transform(request: Request) -> dict[str, Any]:
        ctx.require(request, "manage_agent_lifecycle:transforms")
        body = await bodies.model(request, PublishBody)
        limits = host.config.documents.limits()
        manifest, module = await bodies.call(_manifest_and_module, body, limits)
        # Compiling a large module takes seconds: on the general thread pool,
        # so the parsing threads stay free for other requests.
        published = await run_in_threadpool(host.publish_bytes, manifest, module)
        return published.summary()

    # -- graphs -----------------------------------------------------------------

    @router.get(
        "/graphs",
        tags=["graphs"],
        summary="List deployed graphs and their triggers",
        openapi_extra=needs("read_host:graphs"),
    )
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
        openapi_extra={
            **needs_any("manage_agent_lifecycle", then="manage_agent_lifecycle:<graph>"),
            **request_body(DeployBody),
        },
    )
    async def deploy_graph(request: Request) -> dict[str, Any]:
        body = await bodies.model(request, DeployBody)
        plan = await bodies.call(engine.validate, body.graph, "<http>")
        ctx.require(request, f"manage_agent_lifecycle:{plan.name}")
        version, created = await bodies.call(
            engine.repository.deploy, body.graph, plan.name, plan.graph.version, body.message
        )
        # Planned here, on a parsing thread, the new version is in the engine's
        # cache when the triggers switch it on (they would plan it on the loop).
        await bodies.call(engine.load, plan.name)
        await triggers.sync()
        return {
            **_version(version),
            "created": created,
            "problem": triggers.problems.get(plan.name),
        }

    @router.get(
        "/graphs/{name}/versions",
        tags=["graphs"],
        summary="Versions of a graph",
        openapi_extra=needs("read_host:graphs"),
    )
    def graph_versions(name: str) -> list[dict[str, Any]]:
        found = engine.repository.versions(name)
        if not found:
            raise GraphNotFound(f"no deployed graph {name!r}")
        return [_version(v) for v in found]

    # -- runs -------------------------------------------------------------------

    @router.post(
        "/graphs/{name}/runs",
        tags=["runs"],
        summary="Start a run (manual trigger)",
        openapi_extra={
            **needs_any("execute_graph", then="execute_graph:<name>"),
            **request_body(RunBody, required=False),
        },
    )
    async def start_run(
        name: str,
        request: Request,
        prefer: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        claims = ctx.require(request, graph_scope(name.partition("@")[0]))
        body = await bodies.model(request, RunBody)
        if body.mode == "step_through_debug":
            raise InvalidInput(
                "mode step_through_debug stops before every node for a person at a "
                f"terminal: run `ionflux graph run {name} --mode step_through_debug`; over "
                "HTTP use run_all or dry_run_validate_only"
            )
        check = getattr(triggers.runner, "check_input", None)
        if check is not None:
            if len(await request.body()) > 16 * 1024:
                await bodies.call(check, name, body.input)
            else:
                check(name, body.input)
        caller = getattr(claims, "subject", None)
        if body.mode == "dry_run_validate_only":
            return await _dry_run(ctx, name, body.input, caller)
        run = RunRequest(
            graph=name,
            input=body.input,
            trigger="manual",
            completion_subject=triggers.completion_subject(name),
            details={"caller": caller, "api": True},
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

    @router.get(
        "/runs",
        tags=["runs"],
        summary="Recent runs, newest first",
        openapi_extra=needs_any("execute_graph", then="execute_graph:<graph> or :*"),
    )
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
        openapi_extra=needs_any("execute_graph", then="execute_graph:<graph of the run>"),
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

    @router.post(
        "/runs/{run_id}/{action}",
        tags=["runs"],
        summary="Pause, resume, cancel or retry a run (an operator's control)",
        openapi_extra={
            **needs_any("control_run", then="control_run:<graph of the run>"),
            **request_body(ControlBody, required=False),
        },
    )
    async def control_run(run_id: str, action: Control, request: Request) -> JSONResponse:
        record = engine.history.find(run_id)
        if record is None:
            raise GraphNotFound(f"no run {run_id!r}")
        claims = ctx.require(request, control_scope(record.graph_name))
        by = str(getattr(claims, "subject", None) or "owner (http)")
        body = await bodies.model(request, ControlBody) if await request.body() else ControlBody()
        has_input = "input" in body.model_fields_set
        try:
            after = engine.control(
                record.run_id,
                action,
                by=by,
                from_step=body.from_step,
                input=body.input,
                has_input=has_input,
            )
        except Exception as exc:
            return error_response(exc)
        if ctx.ionwall is not None:
            detail = f" from step {body.from_step}" if body.from_step else ""
            detail += " with an edited input" if has_input else ""
            audit_control(
                ctx.ionwall,
                run_id=after.run_id,
                graph=after.graph_name,
                graph_cid=after.graph_cid,
                action=action.value,
                by=by,
                detail=detail,
            )
        return JSONResponse({**_run(after), "run_id": after.run_id})

    return router


async def _dry_run(ctx: ApiContext, name: str, value: Any, caller: str | None) -> JSONResponse:
    """Validates and plans a run of ``name`` with ``value``; no node runs."""
    plan = await ctx.bodies.call(ctx.engine.load, name)
    trigger = RunTrigger(
        "manual", {"caller": caller, "api": True}, subject=str(caller) if caller else "anonymous"
    )
    result = await ctx.engine.run(
        plan, value, mode="dry_run_validate_only", trigger=trigger, input_checked=True
    )
    return JSONResponse(
        {
            **reply(result, "manual"),
            "mode": result.mode,
            "steps": [s.to_dict() for s in result.steps],
        }
    )


def _manifest_and_module(body: PublishBody, limits: DocumentLimits) -> tuple[Manifest, bytes]:
    """The manifest and the module's bytes of a publish request (on a parsing thread).
    A manifest sent as text is read by the bounded YAML loader (``documents.*``)."""
    if isinstance(body.manifest, str):
        manifest = parse_manifest_text(body.manifest, path="<http>", limits=limits)
    else:
        manifest = parse_manifest(body.manifest, path="<http>")
    try:
        module = base64.b64decode(body.module_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ManifestError(f"not base64: {exc}", field="module_base64") from exc
    return manifest, module


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


# Kept in the owner's data directory to resume and answer repeated requests, and
# never served: the real (unmasked) input, output and step outputs, a retry's
# edited inputs, cache keys and the lease holder. A reader of a run sees what a
# run record shows everywhere else: masked previews and the CIDs of masked copies.
_UNSERVED_RUN = ("input", "output", "overrides", "lease_owner")
_UNSERVED_STEP = ("outputs_json", "cache_key")


def _run(r: Any) -> dict[str, Any]:
    out = dataclasses.asdict(r)
    for name in _UNSERVED_RUN:
        out.pop(name, None)
    out["execution_id"] = r.run_id
    out["overall_status"] = r.status
    out["duration_s"] = r.duration_s
    return out


def _step(s: Any) -> dict[str, Any]:
    out = dataclasses.asdict(s)
    for name in _UNSERVED_STEP:
        out.pop(name, None)
    return {**out, "duration_s": s.duration_s}
