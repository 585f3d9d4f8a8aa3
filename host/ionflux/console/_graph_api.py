"""Two API areas the console needed and any client may use: a run's graph, and
step-through debugging over HTTP.

- ``GET /runs/{run_id}/graph``: the nodes of the graph version the run ran
  (id, target, dependencies, level), to draw it. Needs ``execute_graph:<graph>``.
- ``POST /graphs/{name}/debug``: starts a ``step_through_debug`` run of
  ``name`` on this host; it stops before every node until told what to do.
  ``GET /debug/{run_id}``: where it stopped (the node, its rendered inputs,
  masked as the run record masks them, and the statuses of the nodes done);
  ``POST /debug/{run_id}/{action}``: ``continue``, ``skip`` or ``abort``.
  All need ``execute_graph:<graph>`` (the same as starting a run of it).

Budgets: ``console.max_debug_runs`` debugged runs at once on a host
(``Overloaded``, HTTP 503), and a stop nobody answers within
``console.debug_pause_timeout_s`` aborts the run. A debugged run lives in
the process that started it (with ``--workers``, ask the same one: its id is
answered only there, 404 elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field

from .._errors import GraphNotFound, InvalidInput
from ..graph import DebugAction, DebugPause, RunTrigger, new_run_id
from ..http import ApiContext, needs_any
from ..triggers import Overloaded, graph_scope

Auth = Annotated[str | None, Header(alias="Authorization")]


class DebugBody(BaseModel):
    input: Any = Field(default_factory=dict, description="trigger.input_data of the run")


@dataclass
class DebugRun:
    run_id: str
    graph: str
    pause: DebugPause | None = None
    answer: asyncio.Future[DebugAction] | None = None
    finished: bool = False
    status: str = "running"
    stops: int = 0
    task: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Debugger:
    """The debugged runs of this host."""

    def __init__(self, ctx: ApiContext, *, max_runs: int, pause_timeout_s: float) -> None:
        self.ctx = ctx
        self.max_runs = max_runs
        self.pause_timeout_s = pause_timeout_s
        self.runs: dict[str, DebugRun] = {}

    def live(self) -> int:
        return sum(1 for r in self.runs.values() if not r.finished)

    async def start(self, name: str, value: Any, caller: str | None) -> DebugRun:
        if self.live() >= self.max_runs:
            raise Overloaded(
                f"console.max_debug_runs = {self.max_runs} debugged runs are already open "
                "on this host; abort one first"
            )
        plan = await self.ctx.bodies.call(self.ctx.engine.load, name)
        run = DebugRun(new_run_id(), plan.name)
        trigger = RunTrigger(
            "manual", {"caller": caller, "api": True, "debug": True}, subject=caller or "anonymous"
        )

        async def stop(pause: DebugPause) -> DebugAction:
            loop = asyncio.get_running_loop()
            run.pause = pause
            run.stops += 1
            run.answer = loop.create_future()
            run.changed.set()
            try:
                return await asyncio.wait_for(run.answer, self.pause_timeout_s)
            except TimeoutError:
                return "abort"
            finally:
                run.pause = None
                run.answer = None

        async def drive() -> None:
            try:
                result = await self.ctx.engine.run(
                    plan, value, mode="step_through_debug", trigger=trigger, run_id=run.run_id,
                    debugger=stop,
                )  # fmt: skip
                run.status = result.overall_status
            except Exception as exc:
                run.status = f"failure: {exc}"
            finally:
                run.finished = True
                run.changed.set()
                self._forget_old()

        self.runs[run.run_id] = run
        run.task = asyncio.get_running_loop().create_task(drive())
        return run

    def answer(self, run_id: str, action: DebugAction) -> DebugRun:
        run = self.find(run_id)
        if run.answer is None or run.answer.done():
            raise InvalidInput(f"debugged run {run_id} is not stopped at a node now")
        run.answer.set_result(action)
        return run

    def find(self, run_id: str) -> DebugRun:
        run = self.runs.get(run_id)
        if run is None:
            raise GraphNotFound(f"no debugged run {run_id!r} on this host")
        return run

    def view(self, run: DebugRun) -> dict[str, Any]:
        pause = run.pause
        masker = self.ctx.ionwall.masker if self.ctx.ionwall is not None else None
        stopped = None
        if pause is not None:
            inputs = masker.value(pause.inputs) if masker is not None else pause.inputs
            stopped = {
                "node_id": pause.node_id,
                "target": pause.target,
                "level": pause.level,
                "inputs": inputs,
                "approval_scope": pause.approval_scope,
                "done": dict(pause.done),
            }
        return {
            "run_id": run.run_id,
            "graph": run.graph,
            "finished": run.finished,
            "status": run.status,
            "stops": run.stops,
            "stopped_at": stopped,
        }

    def _forget_old(self, keep: int = 64) -> None:
        ended = [k for k, r in self.runs.items() if r.finished]
        for key in ended[: max(0, len(ended) - keep)]:
            self.runs.pop(key, None)

    async def close(self) -> None:
        for run in self.runs.values():
            if run.answer is not None and not run.answer.done():
                run.answer.set_result("abort")
            if run.task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(run.task), 5)


def graph_api_router(ctx: ApiContext, debugger: Debugger) -> APIRouter:
    router = APIRouter(tags=["runs"])
    engine = ctx.engine

    @router.get(
        "/runs/{run_id}/graph",
        summary="The graph a run ran: nodes, dependencies, levels (to draw it)",
        openapi_extra=needs_any("execute_graph", then="execute_graph:<graph of the run>"),
    )
    async def run_graph(run_id: str, authorization: Auth = None) -> dict[str, Any]:
        record = engine.history.find(run_id)
        if record is None:
            raise GraphNotFound(f"no run {run_id!r}")
        ctx.authorize(authorization, graph_scope(record.graph_name))
        plan = await ctx.bodies.call(engine.load, record.graph_cid)
        return {
            "graph": plan.name,
            "version": plan.graph.version,
            "cid": record.graph_cid,
            "nodes": [
                {
                    "id": n.id,
                    "target": n.target,
                    "deps": sorted(n.deps),
                    "level": n.level,
                }
                for n in plan.nodes.values()
            ],
        }

    @router.post(
        "/graphs/{name}/debug",
        summary="Start a step_through_debug run: it stops before every node",
        openapi_extra=needs_any("execute_graph", then="execute_graph:<name>"),
    )
    async def start_debug(name: str, request: Request) -> dict[str, Any]:
        claims = ctx.require(request, graph_scope(name.partition("@")[0]))
        body = await ctx.bodies.model(request, DebugBody) if await request.body() else DebugBody()
        run = await debugger.start(name, body.input, getattr(claims, "subject", None))
        return debugger.view(run)

    @router.get(
        "/debug/{run_id}",
        summary="Where a debugged run stopped: the node, its masked inputs, the nodes done",
        openapi_extra=needs_any("execute_graph", then="execute_graph:<graph of the run>"),
    )
    async def show_debug(run_id: str, authorization: Auth = None) -> dict[str, Any]:
        run = debugger.find(run_id)
        ctx.authorize(authorization, graph_scope(run.graph))
        return debugger.view(run)

    @router.post(
        "/debug/{run_id}/{action}",
        summary="Answer a debugged run's stop: continue, skip or abort",
        openapi_extra=needs_any("execute_graph", then="execute_graph:<graph of the run>"),
    )
    async def answer_debug(
        run_id: str,
        action: Literal["continue", "skip", "abort"],
        authorization: Auth = None,
    ) -> dict[str, Any]:
        run = debugger.find(run_id)
        ctx.authorize(authorization, graph_scope(run.graph))
        debugger.answer(run_id, action)
        return debugger.view(run)

    return router


__all__ = ["Debugger", "graph_api_router"]
