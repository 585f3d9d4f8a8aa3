"""The debugger's turn (``step_through_debug``): before each node starts, the run
pauses and the debugger says ``continue``, ``skip`` or ``abort``."""

from __future__ import annotations

from collections.abc import Mapping

from ._context import RunContext
from ._plan import PlannedNode
from ._result import StepResult
from ._seams import DebugAction, DebugPause
from ._step import Rendered


async def pause(
    ctx: RunContext, planned: PlannedNode, first: Rendered, steps: Mapping[str, StepResult]
) -> DebugAction | None:
    """The debugger's answer for ``planned``; None outside the debugger."""
    if ctx.debugger is None or ctx.mode != "step_through_debug":
        return None
    done = {n: s.status for n, s in steps.items()}
    return await ctx.debugger(
        DebugPause(
            ctx.run_id,
            ctx.plan.name,
            planned.id,
            planned.target,
            planned.level,
            first.inputs,
            first.approval_scope,
            done,
        )
    )
