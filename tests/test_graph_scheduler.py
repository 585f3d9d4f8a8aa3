"""The scheduler's pure state transitions: no sandboxes, no clock, no fakes."""

from __future__ import annotations

from ionflux.graph import NodeSpec, NodeStatus, RunStatus, Scheduler
from ionflux.graph._model import OnError


def diamond(on_error: dict[str, OnError] | None = None) -> Scheduler:
    """a -> b, a -> c, (b, c) -> d, and e on its own."""
    deps = {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b", "c"}, "e": set()}
    dependents: dict[str, list[str]] = {n: [] for n in deps}
    for node, ds in deps.items():
        for d in ds:
            dependents[d].append(node)
    policies = on_error or {}
    return Scheduler(
        {
            n: NodeSpec(
                frozenset(deps[n]), tuple(sorted(dependents[n])), policies.get(n, "fail_run"), i
            )
            for i, n in enumerate(deps)
        }
    )


def run_ok(s: Scheduler, *nodes: str) -> None:
    for n in nodes:
        s.start(n)
        s.succeed(n)


def test_levels_become_ready_in_order() -> None:
    s = diamond()
    assert s.ready() == ["a", "e"]
    run_ok(s, "a")
    assert s.ready() == ["b", "c"]
    run_ok(s, "b")
    assert s.ready() == []
    run_ok(s, "c")
    assert s.ready() == ["d"]
    run_ok(s, "d", "e")
    assert s.done and s.run_status() is RunStatus.SUCCESS


def test_ready_respects_a_limit() -> None:
    s = diamond()
    assert s.ready(1) == ["a"]
    assert s.ready(1) == ["e"]


def test_fail_run_cancels_pending_and_reports_running() -> None:
    s = diamond()
    s.ready()
    s.start("a")
    s.start("e")
    assert s.fail("a") == ["e"]
    assert s.status["b"] is NodeStatus.CANCELLED and s.status["d"] is NodeStatus.CANCELLED
    s.cancelled("e")
    assert s.done and s.run_status() is RunStatus.FAILURE
    assert s.reasons["b"] == "run failed at node 'a'"


def test_continue_lets_dependents_run() -> None:
    s = diamond({"b": "continue"})
    run_ok(s, *s.ready())
    s.ready()
    s.start("b")
    assert s.fail("b") == []
    run_ok(s, "c")
    assert s.ready() == ["d"]
    run_ok(s, "d")
    assert s.run_status() is RunStatus.PARTIAL


def test_skip_dependents_skips_the_downstream_only() -> None:
    s = diamond({"b": "skip_dependents"})
    run_ok(s, *s.ready())
    s.ready()
    s.start("b")
    s.fail("b")
    assert s.status["d"] is NodeStatus.SKIPPED
    assert "dependency 'b' failed" in s.reasons["d"]
    run_ok(s, "c")
    assert s.ready() == []
    assert s.done and s.run_status() is RunStatus.PARTIAL


def test_skip_by_condition_does_not_cascade() -> None:
    s = diamond()
    run_ok(s, *s.ready())
    s.ready()
    s.start("b")
    s.skip("b", "'if' was false")
    run_ok(s, "c")
    assert s.ready() == ["d"]
    run_ok(s, "d")
    assert s.run_status() is RunStatus.SUCCESS


def test_abort_cancels_everything_left() -> None:
    s = diamond()
    s.ready()
    s.start("a")
    assert s.abort("aborted in the debugger") == ["a"]
    s.cancelled("a")
    assert s.done and s.run_status() is RunStatus.CANCELLED
    assert all(st is NodeStatus.CANCELLED for st in s.status.values())


def test_illegal_transitions_raise() -> None:
    s = diamond()
    try:
        s.succeed("a")
    except ValueError as exc:
        assert "expected running" in str(exc)
    else:
        raise AssertionError("succeed before start must raise")


def test_public_api_is_pinned() -> None:
    import ionflux.graph

    assert ionflux.graph.__all__ == [
        "MODES",
        "Authorization",
        "Authorizer",
        "ChildRunFailed",
        "Control",
        "DebugAction",
        "DebugPause",
        "Debugger",
        "Engine",
        "FluxGraph",
        "GraphCatalog",
        "GraphRepository",
        "GraphText",
        "GraphVersion",
        "HostInvoker",
        "Invoked",
        "Invoker",
        "IonwallAuthorizer",
        "Mode",
        "Native",
        "NativeCall",
        "NativeFn",
        "NoAuthorizer",
        "Node",
        "NodeSpec",
        "NodeStatus",
        "Plan",
        "PlannedNode",
        "Planner",
        "Retry",
        "RunHistory",
        "RunRecord",
        "RunRecorder",
        "RunResult",
        "RunStatus",
        "RunTrigger",
        "Scheduler",
        "SharedRunHistory",
        "Source",
        "StepRecord",
        "StepResult",
        "SubgraphRef",
        "Template",
        "TemplateBudget",
        "TransformCatalog",
        "TransformInfo",
        "Trigger",
        "ValuePod",
        "apply_defaults",
        "audit_control",
        "compile_value",
        "control_scope",
        "new_run_id",
        "parse_yaml",
        "preview",
    ]
