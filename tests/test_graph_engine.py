"""The engine against real wasm modules through the real host: policies, statuses,
sub-graphs, modes, schemas, and run history that survives a restart."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BUILD, TESTING, make_config
from ionflux import GraphValidationError, GraphVersionExists
from ionflux.config import Config
from ionflux.graph import (
    DebugAction,
    DebugPause,
    Engine,
    GraphRepository,
    HostInvoker,
    Invoked,
    RunHistory,
    TransformInfo,
)
from ionflux.host import Host
from ionflux.manifest import Manifest
from ionflux.store import cid_for_bytes

from ionwall import CallContext, Gate


@pytest.fixture(scope="module")
def gconfig(tmp_path_factory: pytest.TempPathFactory) -> Config:
    # A short wall-clock limit bounds how long a timed-out sandbox thread lingers;
    # fuel to spare, so a spinning guest is stopped by time, not by its budget.
    data = tmp_path_factory.mktemp("graph-engine") / "data"
    return make_config(data, timeout_ms=1000, fuel=10**11)


@pytest.fixture(scope="module")
def ghost(gconfig: Config, built: Path) -> Iterator[Host]:
    """One host (registry, compile cache, pod) for the module; each test gets its own
    engine, history and graph repository."""
    host = Host(gconfig)
    for name in ("echo", "spin", "trap"):
        publish(host, TESTING / f"{name}.wasm", name)
    for name in ("template", "text-stats", "uppercase", "json-path"):
        publish(host, BUILD / f"{name}.wasm", name)
    yield host
    host.close()


def publish(host: Host, path: Path, name: str) -> None:
    data = path.read_bytes()
    manifest = Manifest.model_validate(
        {
            "name": name,
            "version": "0.1.0",
            "abi": "component",
            "module": {"cid": cid_for_bytes(data)},
        }
    )
    host.publish_bytes(manifest, data)


def make_engine(host: Host, where: Path, invoker: HostInvoker | None = None) -> Engine:
    return Engine(
        host.config,
        invoker=invoker or HostInvoker(host),
        repository=GraphRepository(where / "graphs.sqlite3", pod=host.pod),
        history=RunHistory(where / "runs.sqlite3"),
        pod=host.pod,
    )


@pytest.fixture
def engine(ghost: Host, tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(ghost, tmp_path)
    yield eng
    eng.close()


def write(tmp_path: Path, text: str, name: str = "g.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


LINEAR = """
name: linear
input_schema:
  type: object
  properties: {text: {type: string}}
  required: [text]
output_schema:
  type: object
  properties: {shout: {type: string}, count: {type: integer}}
  required: [shout]
graph:
  - id: echo_in
    transform: echo
    inputs: {text: "{{ trigger.input_data.text }}", run: "{{ system.run_id }}"}
  - id: upper
    transform: uppercase
    inputs: {text: "{{ nodes.echo_in.outputs.text }}"}
    outputs: {shout: text}
  - id: count
    transform: text-stats
    inputs: {text: "{{ nodes.echo_in.outputs.text }}"}
output:
  shout: "{{ nodes.upper.outputs.shout }}"
  count: "{{ nodes.count.outputs.words }}"
"""


async def test_run_flows_values_between_real_transforms(engine: Engine, tmp_path: Path) -> None:
    result = await engine.run(write(tmp_path, LINEAR), {"text": "hello graph world"})
    assert result.overall_status == "success", result.error_details
    assert result.output == {"shout": "HELLO GRAPH WORLD", "count": 3}
    assert result.step("echo_in").outputs["run"] == result.execution_id
    assert result.steps[0].node_id == "echo_in"
    assert result.levels == [["echo_in"], ["upper", "count"]]
    assert result.fuel_used > 0
    record = engine.history.get(result.execution_id)
    assert record is not None and record.status == "success"
    assert record.graph_cid == result.graph_cid and record.graph_cid.startswith("bafk")
    steps = engine.history.steps(result.execution_id)
    assert {s.node_id: s.status for s in steps} == dict.fromkeys(
        ["echo_in", "upper", "count"], "success"
    )
    assert all(s.fuel_used > 0 for s in steps)
    # the full run log is in the pod, by CID
    assert result.step_results_summary_cid is not None
    assert engine.pod is not None
    engine.flush()  # run logs are written behind the result
    log = json.loads(engine.pod.get_bytes(result.step_results_summary_cid))
    assert log["run"]["execution_id"] == result.execution_id
    assert [s["node_id"] for s in log["run"]["steps"]] == [s.node_id for s in result.steps]


async def test_input_schema_violation_is_recorded_and_nothing_runs(
    engine: Engine, tmp_path: Path
) -> None:
    result = await engine.run(write(tmp_path, LINEAR), {"text": 42})
    assert result.overall_status == "failure"
    assert result.steps == []
    [error] = result.error_details or []
    assert error["kind"] == "schema_violation" and error["which"] == "input"
    assert error["path"] == "$.text" and "not of type 'string'" in error["message"]
    record = engine.history.get(result.execution_id)
    assert record is not None and record.status == "failure"
    assert record.error_details == result.error_details


async def test_output_schema_violation_fails_the_run(engine: Engine, tmp_path: Path) -> None:
    text = LINEAR.replace('shout: "{{ nodes.upper.outputs.shout }}"', "shout: 7")
    result = await engine.run(write(tmp_path, text), {"text": "x"})
    assert result.overall_status == "failure"
    [error] = result.error_details or []
    assert error["which"] == "output" and error["path"] == "$.shout"
    assert all(s.status == "success" for s in result.steps)  # the steps did run


async def test_template_failing_at_run_time_is_a_step_error(engine: Engine, tmp_path: Path) -> None:
    text = """
name: badmath
graph:
  - id: first
    transform: echo
    inputs: {n: "{{ trigger.input_data.n }}"}
  - id: divide
    transform: echo
    inputs: {x: "{{ nodes.first.outputs.n / 0 }}"}
  - id: after
    transform: echo
    dependencies: [divide]
"""
    result = await engine.run(write(tmp_path, text), {"n": 1})
    assert result.overall_status == "failure"
    step = result.step("divide")
    assert step.status == "failure"
    assert step.error is not None and step.error["kind"] == "template"
    assert "ZeroDivisionError" in step.error["message"]
    assert step.error["template"] == "{{ nodes.first.outputs.n / 0 }}"
    assert result.step("after").status == "cancelled"
    recorded = {s.node_id: s for s in engine.history.steps(result.execution_id)}
    assert recorded["divide"].status == "failure"
    assert "ZeroDivisionError" in (recorded["divide"].error_message or "")
    assert recorded["after"].status == "cancelled"


async def test_node_timeout(engine: Engine, tmp_path: Path) -> None:
    text = """
name: slow
graph:
  - id: forever
    transform: spin
    timeout: 200ms
"""
    # The node's own 200 ms timeout ends the step, not the host's 1 s sandbox limit
    # (that would be a `deadline_exceeded` error naming 1000 ms).
    result = await engine.run(write(tmp_path, text))
    step = result.step("forever")
    assert result.overall_status == "failure"
    assert step.attempts == 1
    assert step.error == {
        "kind": "timeout",
        "message": "node 'forever' timed out after 0.2 s",
        "node_id": "forever",
    }


async def test_retry_succeeds_on_the_second_attempt(engine: Engine, tmp_path: Path) -> None:
    # The template transform refuses `values` that is not an object: the first
    # attempt sends a string, the retry (system.attempt == 2) an object.
    text = """
name: flaky
graph:
  - id: render
    transform: template
    retry: {count: 2, backoff: 10ms}
    inputs:
      template: "attempt"
      values: "{{ 'not an object' if system.attempt == 1 else {} }}"
    outputs: [text]
"""
    result = await engine.run(write(tmp_path, text))
    assert result.overall_status == "success", result.error_details
    step = result.step("render")
    assert step.attempts == 2
    assert step.outputs == {"text": "attempt"}


async def test_retries_exhausted_report_the_last_error(engine: Engine, tmp_path: Path) -> None:
    text = "name: t\ngraph:\n  - {id: boom, transform: trap, retry: {count: 1, backoff: 0}}\n"
    result = await engine.run(write(tmp_path, text))
    step = result.step("boom")
    assert step.status == "failure" and step.attempts == 2
    assert step.error is not None and step.error["kind"] == "trap"
    assert "(after 2 attempts)" in step.error["message"]


ON_ERROR = """
name: policies
graph:
  - id: bad
    transform: trap
    on_error: {policy}
  - id: child
    transform: echo
    inputs: {{seen: "{{{{ nodes.bad.outputs }}}}", status: "{{{{ nodes.bad.status }}}}"}}
  - id: grandchild
    transform: echo
    inputs: {{x: "{{{{ nodes.child.outputs.status }}}}"}}
  - id: independent
    transform: echo
    inputs: {{ok: true}}
"""


async def test_on_error_continue(engine: Engine, tmp_path: Path) -> None:
    result = await engine.run(write(tmp_path, ON_ERROR.format(policy="continue")))
    assert result.overall_status == "partial_success_with_errors"
    assert result.step("child").outputs == {"seen": None, "status": "failure"}
    assert result.step("grandchild").outputs == {"x": "failure"}
    assert [e["node_id"] for e in result.error_details or []] == ["bad"]


async def test_on_error_skip_dependents(engine: Engine, tmp_path: Path) -> None:
    result = await engine.run(write(tmp_path, ON_ERROR.format(policy="skip_dependents")))
    assert result.overall_status == "partial_success_with_errors"
    statuses = {s.node_id: s.status for s in result.steps}
    assert statuses == {
        "bad": "failure",
        "child": "skipped",
        "grandchild": "skipped",
        "independent": "success",
    }
    assert "dependency 'bad' failed" in (result.step("grandchild").reason or "")


async def test_on_error_fail_run(engine: Engine, tmp_path: Path) -> None:
    result = await engine.run(write(tmp_path, ON_ERROR.format(policy="fail_run")))
    assert result.overall_status == "failure"
    assert result.step("child").status == "cancelled"
    assert result.output is None


async def test_if_false_skips_and_dependents_see_null(engine: Engine, tmp_path: Path) -> None:
    text = """
name: conditional
graph:
  - id: maybe
    transform: echo
    if: "{{ trigger.input_data.go != null }}"
    inputs: {v: 1}
  - id: reader
    transform: echo
    inputs: {got: "{{ nodes.maybe.outputs.v }}", status: "{{ nodes.maybe.status }}"}
"""
    skipped = await engine.run(write(tmp_path, text), {})
    assert skipped.overall_status == "success"
    assert skipped.step("maybe").status == "skipped"
    assert skipped.step("reader").outputs == {"got": None, "status": "skipped"}
    ran = await engine.run(write(tmp_path, text), {"go": True})
    assert ran.step("reader").outputs == {"got": 1, "status": "success"}


async def test_fan_out_runs_concurrently(ghost: Host, tmp_path: Path) -> None:
    # Four independent nodes: each real call waits at a barrier of four before it
    # runs its sandbox, so the run succeeds only if all four are in flight at
    # once. Run one after another, the first would wait alone and break the
    # barrier (its timeout only stops a hang).
    arrived = threading.Barrier(4, timeout=30)

    class Meeting(HostInvoker):
        def invoke(
            self, transform: TransformInfo, input: Any, *, ctx: CallContext, gate: Gate | None
        ) -> Invoked:
            arrived.wait()
            return super().invoke(transform, input, ctx=ctx, gate=gate)

    engine = make_engine(ghost, tmp_path, Meeting(ghost))
    try:
        node = "  - {{id: s{i}, transform: echo, inputs: {{i: {i}}}}}\n"
        nodes = "".join(node.format(i=i) for i in range(4))
        result = await engine.run(write(tmp_path, f"name: fan\ngraph:\n{nodes}"))
    finally:
        engine.close()
    assert result.overall_status == "success", result.error_details
    assert {s.node_id: s.outputs for s in result.steps} == {f"s{i}": {"i": i} for i in range(4)}
    assert result.levels == [["s0", "s1", "s2", "s3"]]
    assert not arrived.broken


def deploy(engine: Engine, tmp_path: Path, name: str, text: str, message: str = "m") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    version, _ = engine.deploy(path, message)
    return version.cid


async def test_subgraph_by_name_and_version(engine: Engine, tmp_path: Path) -> None:
    v1 = deploy(
        engine,
        tmp_path,
        "shout",
        "name: shout\nversion: 1.0.0\ngraph:\n"
        "  - {id: up, transform: uppercase, inputs: {text: '{{ trigger.input_data.text }}'}}\n",
    )
    deploy(
        engine,
        tmp_path,
        "shout",
        "name: shout\nversion: 2.0.0\ngraph:\n"
        "  - {id: up, transform: uppercase, inputs: {text: '{{ trigger.input_data.text }}!'}}\n",
    )
    text = """
name: parent
graph:
  - id: latest
    subgraph: shout
    inputs: {text: "{{ trigger.input_data.text }}"}
  - id: pinned
    subgraph: {name: shout, version: 1.0.0}
    inputs: {text: "{{ nodes.latest.outputs.text }}"}
"""
    result = await engine.run(write(tmp_path, text), {"text": "hey"})
    assert result.overall_status == "success", result.error_details
    assert result.step("latest").outputs == {"text": "HEY!"}
    assert result.step("pinned").outputs == {"text": "HEY!"}
    child_id = result.step("pinned").child_run_id
    assert child_id is not None
    child = engine.history.get(child_id)
    assert child is not None and child.parent_run_id == result.execution_id
    assert child.graph_cid == v1 and child.parent_node_id == "pinned"
    assert child.trigger_type == "subgraph"


async def test_subgraph_recursion_past_the_limit_is_refused(engine: Engine, tmp_path: Path) -> None:
    leaf = "name: d4\ngraph:\n  - {id: a, transform: echo}\n"
    deploy(engine, tmp_path, "d4", leaf)
    for name, child in (("d3", "d4"), ("d2", "d3"), ("d1", "d2")):
        deploy(engine, tmp_path, name, f"name: {name}\ngraph:\n  - {{id: a, subgraph: {child}}}\n")
    ok = await engine.run(write(tmp_path, "name: top\ngraph:\n  - {id: a, subgraph: d2}\n"))
    assert ok.overall_status == "success"
    with pytest.raises(GraphValidationError, match=r"max_subgraph_depth \(3\)"):
        await engine.run(write(tmp_path, "name: top\ngraph:\n  - {id: a, subgraph: d1}\n"))
    with pytest.raises(GraphValidationError, match="sub-graph cycle refused: d4 -> d1"):
        deploy(engine, tmp_path, "d4", "name: d4\ngraph:\n  - {id: a, subgraph: d1}\n")


async def test_step_through_debug_continue_skip_abort(engine: Engine, tmp_path: Path) -> None:
    text = """
name: debugme
graph:
  - {id: a, transform: echo, inputs: {v: "{{ trigger.input_data.v }}"}}
  - {id: b, transform: echo, inputs: {v: "{{ nodes.a.outputs.v }}"}}
  - {id: c, transform: echo, inputs: {v: "{{ nodes.b.outputs.v }}"}}
  - {id: d, transform: echo, dependencies: [c]}
"""
    pauses: list[DebugPause] = []
    answers: list[DebugAction] = ["continue", "skip", "abort"]

    async def debugger(pause: DebugPause) -> DebugAction:
        pauses.append(pause)
        return answers[len(pauses) - 1]

    result = await engine.run(
        write(tmp_path, text), {"v": 5}, mode="step_through_debug", debugger=debugger
    )
    assert [p.node_id for p in pauses] == ["a", "b", "c"]
    assert pauses[0].inputs == {"v": 5} and pauses[1].inputs == {"v": 5}
    assert pauses[2].inputs == {"v": None}  # b was skipped: its outputs read null
    assert result.overall_status == "cancelled"
    assert {s.node_id: s.status for s in result.steps} == {
        "a": "success",
        "b": "skipped",
        "c": "cancelled",
        "d": "cancelled",
    }
    assert result.step("c").reason == "aborted in the debugger"


async def test_dry_run_validates_renders_and_reports_scopes(engine: Engine, tmp_path: Path) -> None:
    text = """
name: dry
input_schema: {type: object, properties: {cid: {type: string}}, required: [cid]}
graph:
  - id: first
    transform: echo
    ionwall_approval_scope: "read_pod_data:{{ trigger.input_data.cid }}"
    inputs: {cid: "{{ trigger.input_data.cid }}", stamp: "{{ system.run_id }}"}
  - id: second
    transform: echo
    if: "{{ nodes.first.outputs.cid != null }}"
    inputs: {again: "{{ nodes.first.outputs.cid }}", fixed: 3}
"""
    path = write(tmp_path, text)
    result = await engine.run(path, {"cid": "bafkexample"}, mode="dry_run_validate_only")
    assert result.overall_status == "success"
    assert result.requested_scopes == ["read_pod_data:bafkexample"]
    assert result.scopes_to_ask == ["read_pod_data:bafkexample"]
    first, second = result.steps
    assert first.status == "planned"
    assert first.inputs == {"cid": "bafkexample", "stamp": result.execution_id}
    assert second.inputs == {"again": "{{ nodes.first.outputs.cid }}", "fixed": 3}
    assert "decided at run time" in (second.reason or "")
    assert result.fuel_used == 0
    bad = await engine.run(path, {}, mode="dry_run_validate_only")
    assert bad.overall_status == "failure"
    assert (bad.error_details or [{}])[0]["which"] == "input"


async def test_history_survives_a_restart(ghost: Host, tmp_path: Path) -> None:
    first = make_engine(ghost, tmp_path)
    result = await first.run(write(tmp_path, LINEAR), {"text": "keep me"})
    first.close()
    again = make_engine(ghost, tmp_path)
    try:
        record = again.history.get(result.execution_id)
        assert record is not None and record.status == "success"
        assert record.input == {"text": "keep me"}
        assert len(again.history.steps(result.execution_id)) == 3
        assert [r.run_id for r in again.history.list_runs(graph="linear")] == [result.execution_id]
    finally:
        again.close()


async def test_run_left_running_by_a_crash_is_resumed_and_a_debug_run_interrupted(
    engine: Engine, tmp_path: Path
) -> None:
    path = write(tmp_path, LINEAR)
    plan = engine.load(path)
    db = engine.history.path
    # A host process that dies in the middle of runs: it recorded their start only.
    crash = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from ionflux.graph import RunHistory\n"
        "h = RunHistory(Path(sys.argv[1]))\n"
        "for run_id, mode in ((sys.argv[2], 'run_all'), (sys.argv[4], 'step_through_debug')):\n"
        "    h.start_run(run_id=run_id, graph_name='linear', graph_version='0.0.0',"
        " graph_cid=sys.argv[3], trigger_type='manual', trigger_details=None, mode=mode,"
        " start_time=time.time(), input={'text': 'again'}, input_cid=None)\n"
        "os._exit(9)\n"
    )
    run_id, debug_id = "01CRASHEDRUN0000000000000", "01CRASHEDDEBUG00000000000"
    done = subprocess.run(
        [sys.executable, "-c", crash, str(db), run_id, plan.cid, debug_id], check=False
    )
    assert done.returncode == 9
    assert engine.history.get(run_id).status == "running"  # type: ignore[union-attr]
    reopened = RunHistory(db)  # what a host does when it starts
    try:
        # a debugger run cannot be resumed (nobody is at the debugger): interrupted
        interrupted = reopened.get(debug_id)
        assert interrupted is not None and interrupted.status == "interrupted"
        assert "re-run it" in (interrupted.error_details or [{}])[0]["message"]
        # a run_all run stays open, for the next host that looks to resume it
        assert reopened.get(run_id).status == "running"  # type: ignore[union-attr]
    finally:
        reopened.close()
    assert engine.orphans() == [run_id]
    result = await engine.resume(run_id)
    assert result is not None and result.execution_id == run_id
    assert result.overall_status == "success"
    assert result.output == {"shout": "AGAIN", "count": 1}
    assert engine.orphans() == []
    answered = await engine.resume(run_id)  # ended: its recorded result; nothing runs
    assert answered is not None and answered.execution_id == run_id
    assert (answered.overall_status, answered.output) == ("success", result.output)
    assert answered.ended_at == engine.history.get(run_id).end_time  # type: ignore[union-attr]
    again = await engine.rerun(run_id)  # a person may still run it again, as a new run
    record = engine.history.get(again.execution_id)
    assert record is not None and record.trigger_type == "rerun"
    assert record.trigger_details == {"rerun_of": run_id, "trigger": "manual"}


async def test_deploy_keeps_every_version_by_cid(engine: Engine, tmp_path: Path) -> None:
    text = "name: kept\nversion: 1.0.0\ngraph:\n  - {id: a, transform: echo, inputs: {v: 1}}\n"
    first = deploy(engine, tmp_path, "kept", text, "first")
    # A changed graph is a new version: name@version is immutable, as a transform's is.
    changed = text.replace("v: 1", "v: 2")
    with pytest.raises(GraphVersionExists, match=r"kept@1\.0\.0 is already deployed"):
        deploy(engine, tmp_path, "kept", changed, "refused")
    second = deploy(engine, tmp_path, "kept", changed.replace("1.0.0", "1.0.1"), "second")
    path = tmp_path / "kept.yaml"
    _, new = engine.deploy(path, "same again")
    assert not new
    versions = engine.repository.versions("kept")
    assert [(v.cid, v.message) for v in versions] == [(first, "first"), (second, "second")]
    assert (await engine.run("kept")).output == {"v": 2}
    assert (await engine.run(first)).output == {"v": 1}
    assert engine.repository.text(first) == text


async def test_concurrent_runs_share_the_engine(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, LINEAR)
    results = await asyncio.gather(*(engine.run(path, {"text": f"r{i}"}) for i in range(5)))
    assert sorted(r.output["shout"] for r in results) == [f"R{i}" for i in range(5)]
    ids = [r.execution_id for r in results]
    assert len(set(ids)) == 5 and all(len(i) == 26 for i in ids)  # ULIDs


def test_completion_event_has_the_seed_fields(engine: Engine, tmp_path: Path) -> None:
    result = asyncio.run(engine.run(write(tmp_path, LINEAR), {"text": "e"}))
    event: dict[str, Any] = result.completion_event()
    assert {"execution_id", "overall_status", "step_results_summary_cid", "error_details"} <= set(
        event
    )
    assert event["overall_status"] == "success" and event["error_details"] is None


def fan_out(name: str, width: int, child: str | None) -> str:
    """``width`` independent nodes, each an echo or a call of the graph ``child``."""
    target = f"subgraph: {child}" if child else "transform: echo"
    nodes = "".join(
        f"  - {{id: n{i}, {target}, inputs: {{text: '{{{{ trigger.input_data.text }}}}'}}}}\n"
        for i in range(width)
    )
    return f"name: {name}\ngraph:\n{nodes}"


def budget_engine(ghost: Host, where: Path, **limits: int) -> Engine:
    graph = ghost.config.graph.model_copy(update=limits)
    config = ghost.config.model_copy(update={"graph": graph})
    return Engine(
        config,
        invoker=HostInvoker(ghost),
        repository=GraphRepository(where / "graphs.sqlite3", pod=ghost.pod),
        history=RunHistory(where / "runs.sqlite3"),
        pod=ghost.pod,
    )


def calls_started(engine: Engine) -> int:
    """Node calls of every run in the history: transform calls that ran, and
    sub-graph calls that started a child run."""
    total = 0
    for run in engine.history.list_runs(limit=100_000):
        for step in engine.history.steps(run.run_id):
            budget_refused = (step.error or {}).get("kind") == "run_budget_exceeded"
            if step.child_run_id or (step.status == "success" and not budget_refused):
                total += 1
    return total


async def test_a_fan_out_through_subgraphs_stops_at_the_runs_node_budget(
    ghost: Host, tmp_path: Path
) -> None:
    engine = budget_engine(ghost, tmp_path, max_nodes_per_run=40)
    try:
        deploy(engine, tmp_path, "leaf", fan_out("leaf", 6, None))
        deploy(engine, tmp_path, "mid", fan_out("mid", 6, "leaf"))
        result = await engine.run(write(tmp_path, fan_out("top", 6, "mid")), {"text": "x"})
        # 6 + 36 + 216 node calls without a budget
        assert result.overall_status == "failure"
        assert result.error_details is not None
        stopped = result.error_details[-1]
        assert stopped["kind"] == "run_budget_exceeded", result.error_details
        assert (stopped["budget"], stopped["limit"]) == ("max_nodes", 40)
        assert "graph.max_nodes_per_run" in stopped["message"]
        assert calls_started(engine) <= 40
        # Recorded on the run, and every run of the tree ended (none left running).
        record = engine.history.get(result.execution_id)
        assert record is not None and record.status == "failure"
        assert any(e["kind"] == "run_budget_exceeded" for e in record.error_details or [])
        assert {r.status for r in engine.history.list_runs(limit=1000)} <= {
            "failure",
            "success",
            "cancelled",
        }
        # Within the budget the same engine runs a run again: the budget is per run.
        ok = await engine.run(write(tmp_path, fan_out("small", 3, "leaf"), "s.yaml"), {"text": "y"})
        assert ok.overall_status == "success", ok.error_details
    finally:
        engine.close()


async def test_the_runs_fuel_budget_stops_it_and_a_graph_may_ask_for_less(
    ghost: Host, tmp_path: Path
) -> None:
    engine = budget_engine(ghost, tmp_path)
    try:
        one = await engine.run(write(tmp_path, fan_out("one", 1, None), "one.yaml"), {"text": "x"})
        per_call = one.fuel_used
        assert per_call > 0
    finally:
        engine.close()
    engine = budget_engine(ghost, tmp_path / "b", max_fuel_per_run=per_call * 3 + per_call // 2)
    try:
        chain = "name: chain\ngraph:\n" + "".join(
            f"  - {{id: n{i}, transform: echo, inputs: {{text: x}}"
            + (f", dependencies: [n{i - 1}]" if i else "")
            + "}\n"
            for i in range(10)
        )
        result = await engine.run(write(tmp_path, chain, "chain.yaml"))
        assert result.overall_status == "failure"
        assert result.error_details is not None
        stopped = result.error_details[-1]
        assert (stopped["kind"], stopped["budget"]) == ("run_budget_exceeded", "max_fuel")
        statuses = [s.status for s in result.steps]
        # Three calls fit; the fourth crossed the limit; nothing started after it.
        assert statuses[:4] == ["success"] * 3 + ["failure"]
        assert set(statuses[4:]) == {"cancelled"}
        # The graph's own budget tightens the configuration's, never widens it.
        tight = chain.replace("name: chain\n", "name: tight\nbudget: {max_nodes: 2}\n")
        result = await engine.run(write(tmp_path, tight, "tight.yaml"))
        stopped = (result.error_details or [{}])[-1]
        assert (stopped.get("budget"), stopped.get("limit")) == ("max_nodes", 2)
        assert "budget.max_nodes" in stopped["message"]
        wide = chain.replace("name: chain\n", "name: wide\nbudget: {max_fuel: 1000000000000}\n")
        result = await engine.run(write(tmp_path, wide, "wide.yaml"))
        stopped = (result.error_details or [{}])[-1]
        assert (stopped.get("budget"), stopped.get("limit")) == (
            "max_fuel",
            per_call * 3 + per_call // 2,
        )
    finally:
        engine.close()


async def test_a_fan_out_through_subgraphs_within_budget_runs_whole_with_few_slots(
    ghost: Host, tmp_path: Path
) -> None:
    # Sub-runs in flight are bounded per depth (graph.concurrency): a parent waits
    # on its children's slots, never on its own, so a narrow limit cannot deadlock.
    engine = budget_engine(ghost, tmp_path, concurrency=1)
    try:
        deploy(engine, tmp_path, "leaf", fan_out("leaf", 4, None))
        deploy(engine, tmp_path, "mid", fan_out("mid", 4, "leaf"))
        result = await engine.run(write(tmp_path, fan_out("top", 4, "mid")), {"text": "x"})
        assert result.overall_status == "success", result.error_details
        assert result.output == {
            f"n{i}": {f"n{j}": {f"n{k}": {"text": "x"} for k in range(4)} for j in range(4)}
            for i in range(4)
        }
        assert calls_started(engine) == 4 + 16 + 64
    finally:
        engine.close()
