"""Dry run (``dry_run_validate_only``): every node as it would start, nothing called."""

from __future__ import annotations

from typing import Any

from ._plan import Plan
from ._result import StepResult


def dry_run(plan: Plan, scope: dict[str, Any]) -> dict[str, StepResult]:
    """Every node as it would start, with what can be rendered before anything runs."""
    steps: dict[str, StepResult] = {}

    def waits(template: Any) -> bool:
        return any(ref[0] == "nodes" for ref in template.refs)

    for level in plan.levels:
        for node_id in level:
            planned = plan.nodes[node_id]
            reason = None
            if planned.node.if_ is False:
                reason = "'if' is false: would be skipped"
            elif planned.condition is not None and not waits(planned.condition):
                if not planned.condition.render(scope):
                    reason = "'if' is false: would be skipped"
            elif planned.condition is not None:
                reason = f"'if' decided at run time: {planned.condition.source}"
            inputs = planned.inputs.render(scope, keep=waits)
            # The check the real run makes of each call's input, on what is known now.
            error = None if reason and "skipped" in reason else planned.dry_run_error(scope)
            steps[node_id] = StepResult(
                node_id,
                planned.target,
                "failure" if error else "planned",
                planned.level,
                inputs=inputs,
                error=error,
                reason=reason,
            )
    return steps
