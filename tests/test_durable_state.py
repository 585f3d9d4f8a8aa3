"""Durable runs below the processes: the pure run state machine, the run history's
keys, leases and migration, and what a run does when its records cannot be written.

Where a part is made to fail (a pod whose disk is full, a database that refuses
writes), a thin stand-in wraps the real one: the real host, engine and SQLite run
underneath. The full-disk test on a real file system is the process tests'."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ionflux import RunNotRecorded
from ionflux._health import Health
from ionflux.graph import (
    Engine,
    GraphRepository,
    HostInvoker,
    NodeSpec,
    NodeStatus,
    RunHistory,
    RunTrigger,
    Scheduler,
)
from ionflux.graph._runstate import (
    Action,
    RecordedStep,
    Seen,
    next_action,
    resume_from,
)
from ionflux.host import Host
from test_graph_engine import LINEAR, gconfig, ghost, write  # noqa: F401

ME = "host:1:abc"


# -- the pure state machine ----------------------------------------------------------


@pytest.mark.parametrize(
    ("seen", "action"),
    [
        (Seen("success", None, False), Action.ANSWER),
        (Seen("needs_attention", ME, True), Action.ANSWER),
        (Seen("accepted", ME, False), Action.DRIVE),
        (Seen("running", "other:2:x", True), Action.TAKE_OVER),
        (Seen("running", "other:2:x", False), Action.WAIT),
    ],
)
def test_what_to_do_with_a_recorded_run(seen: Seen, action: Action) -> None:
    assert next_action(seen, ME) is action


def test_resume_keeps_done_steps_and_stops_for_a_non_idempotent_one_in_flight() -> None:
    idempotent = {"a": True, "b": True, "c": False, "d": True}
    recorded = [
        RecordedStep("a", "success", {"x": 1}),
        RecordedStep("b", "running"),  # idempotent: runs again
        RecordedStep("c", "running"),  # not idempotent: a person decides
        RecordedStep("gone", "success"),  # a node this plan does not have
    ]
    resume = resume_from(idempotent, recorded)
    assert list(resume.done) == ["a"] and resume.done["a"].outputs == {"x": 1}
    assert resume.attention == ("c",)
    assert resume_from(idempotent, recorded[:2]).attention == ()


def test_a_restored_node_makes_its_dependents_ready_without_running() -> None:
    scheduler = Scheduler(
        {
            "a": NodeSpec(frozenset(), ("b",), order=0),
            "b": NodeSpec(frozenset({"a"}), (), order=1),
        }
    )
    scheduler.restore("a", NodeStatus.SUCCESS)
    assert scheduler.ready() == ["b"]
    with pytest.raises(ValueError):
        scheduler.restore("b", NodeStatus.FAILURE)


# -- the run history -------------------------------------------------------------------

_OLD_RUNS = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, graph_name TEXT NOT NULL, graph_version TEXT NOT NULL,
    graph_cid TEXT NOT NULL, parent_run_id TEXT, parent_node_id TEXT,
    trigger_type TEXT NOT NULL, trigger_details_json TEXT, mode TEXT NOT NULL,
    status TEXT NOT NULL, start_time REAL NOT NULL, end_time REAL, input_preview TEXT,
    input_cid TEXT, input_json TEXT, output_preview TEXT, output_cid TEXT,
    error_details_json TEXT, fuel_used INTEGER NOT NULL DEFAULT 0,
    step_results_summary_cid TEXT, owner_host TEXT NOT NULL, owner_pid INTEGER NOT NULL
);
CREATE TABLE run_steps (
    step_run_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, node_id TEXT NOT NULL,
    target TEXT NOT NULL, status TEXT NOT NULL, start_time REAL, end_time REAL,
    attempts INTEGER NOT NULL DEFAULT 0, inputs_preview TEXT, inputs_cid TEXT,
    outputs_preview TEXT, outputs_cid TEXT, error_message TEXT, error_json TEXT,
    fuel_used INTEGER NOT NULL DEFAULT 0, child_run_id TEXT
);
INSERT INTO runs (run_id, graph_name, graph_version, graph_cid, trigger_type, mode, status,
    start_time, input_json, owner_host, owner_pid)
VALUES ('01OLD', 'g', '1', 'bafy', 'manual', 'run_all', 'success', 1.0, '{}', 'h', 1);
"""


def test_an_older_history_gains_the_new_columns_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(_OLD_RUNS)
    db.close()
    runs = RunHistory(path)
    try:
        old = runs.get("01OLD")
        assert old is not None and old.status == "success" and old.run_key is None
        row = runs.start_run(
            run_id="01NEW",
            graph_name="g",
            graph_version="1",
            graph_cid="bafy",
            trigger_type="webhook",
            trigger_details=None,
            mode="run_all",
            start_time=2.0,
            input={"a": 1},
            input_cid=None,
            write=False,
            run_key="k1",
            lease=(ME, 10.0),
            status="accepted",
        )
        assert runs.accept(row) is None
        again = runs.accept((*row[:0], "01OTHER", *row[1:]))
        assert again is not None and again.run_id == "01NEW"  # the key is unique
        assert runs.find_key("k1").status == "accepted"  # type: ignore[union-attr]
    finally:
        runs.close()


def test_a_lease_is_taken_over_once_it_runs_out_and_by_one_host_only(tmp_path: Path) -> None:
    runs = RunHistory(tmp_path / "runs.sqlite3")
    try:
        row = runs.start_run(
            run_id="01R",
            graph_name="g",
            graph_version="1",
            graph_cid="bafy",
            trigger_type="manual",
            trigger_details=None,
            mode="run_all",
            start_time=1.0,
            input={},
            input_cid=None,
            write=False,
            lease=("far:9:x", 100.0),
        )
        runs.write_start(row)
        assert not runs.claim("01R", ME, 200.0, now=50.0)  # the lease holds
        assert runs.orphans(now=50.0) == []
        assert [r.run_id for r in runs.orphans(now=150.0)] == ["01R"]
        assert runs.claim("01R", ME, 200.0, now=150.0)
        assert not runs.claim("01R", "third:3:y", 300.0, now=150.0)  # ours now
        runs.renew(["01R"], ME, 400.0)
        assert runs.get("01R").lease_expires == 400.0  # type: ignore[union-attr]
        closed = dict(
            status="success",
            end_time=3.0,
            output_preview=None,
            output_cid=None,
            error_details=None,
            fuel_used=0,
            step_results_summary_cid=None,
        )
        assert runs.finish_run("01R", **closed)  # type: ignore[arg-type]
        assert not runs.finish_run("01R", **closed)  # type: ignore[arg-type]  # once
    finally:
        runs.close()


# -- records that cannot be written ---------------------------------------------------------


class FullPod:
    """Stand-in: the real pod, whose disk is full for every write."""

    def __init__(self, pod: Any) -> None:
        self.pod = pod

    def put_bytes(self, data: bytes) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    def get_bytes(self, cid: str) -> bytes:
        return bytes(self.pod.get_bytes(cid))


class FullHistory(RunHistory):
    """Stand-in: the real run history, refusing to close runs while ``full``."""

    full = True

    def finish_run(self, run_id: str, **kwargs: Any) -> bool:
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        return super().finish_run(run_id, **kwargs)


def engine_over(host: Host, where: Path, *, pod: Any, history: RunHistory) -> Engine:
    return Engine(
        host.config,
        invoker=HostInvoker(host),
        repository=GraphRepository(where / "graphs.sqlite3", pod=host.pod),
        history=history,
        pod=pod,
        health=host.health,
    )


@pytest.fixture
def health_host(ghost: Host) -> Iterator[Host]:  # noqa: F811
    saved = ghost.health
    ghost.health = Health()
    yield ghost
    ghost.health = saved


async def test_a_run_whose_log_cannot_be_stored_does_not_report_success(
    health_host: Host, tmp_path: Path
) -> None:
    engine = engine_over(
        health_host,
        tmp_path,
        pod=FullPod(health_host.pod),
        history=RunHistory(tmp_path / "runs.sqlite3"),
    )
    try:
        result = await engine.run(write(tmp_path, LINEAR), {"text": "hi"})
        assert result.overall_status == "failure"
        assert result.step_results_summary_cid is None
        assert (result.error_details or [{}])[-1]["kind"] == "run_log_not_stored"
        record = engine.history.get(result.execution_id)
        assert record is not None and record.status == "failure"
        assert not health_host.health.is_ok("run-log")
    finally:
        engine.close()


async def test_a_history_that_cannot_record_raises_and_degrades_until_it_can(
    health_host: Host, tmp_path: Path
) -> None:
    history = FullHistory(tmp_path / "runs.sqlite3")
    engine = engine_over(health_host, tmp_path, pod=health_host.pod, history=history)
    try:
        path = write(tmp_path, LINEAR)
        with pytest.raises(RunNotRecorded) as caught:
            await engine.run(path, {"text": "hi"}, run_key="msg-1")
        assert caught.value.kind == "run_not_recorded"
        assert "disk is full" in str(caught.value)
        assert not health_host.health.is_ok("run-history")
        history.full = False
        result = await engine.run(path, {"text": "hi"}, run_key="msg-1")
        assert result.overall_status == "success"
        assert health_host.health.is_ok("run-history")
        # the same key again: its recorded result, nothing runs
        again = await engine.run(path, {"text": "other"}, run_key="msg-1")
        assert (again.execution_id, again.output) == (result.execution_id, result.output)
        assert len(history.list_runs()) == 1
    finally:
        engine.close()


async def test_an_accepted_run_is_driven_by_whoever_asks_with_its_key(
    ghost: Host,  # noqa: F811
    tmp_path: Path,
) -> None:
    engine = engine_over(
        ghost, tmp_path, pod=ghost.pod, history=RunHistory(tmp_path / "runs.sqlite3")
    )
    try:
        path = write(tmp_path, LINEAR)
        run_id, known = engine.accept(
            path, {"text": "later"}, trigger=RunTrigger("webhook"), run_key="order-1"
        )
        assert known is None
        assert engine.history.get(run_id).status == "accepted"  # type: ignore[union-attr]
        same, found = engine.accept(
            path, {"text": "later"}, trigger=RunTrigger("webhook"), run_key="order-1"
        )
        assert same == run_id and found is not None
        result = await engine.run(path, {"text": "ignored"}, run_key="order-1")
        assert result.execution_id == run_id and result.output["shout"] == "LATER"
    finally:
        engine.close()
