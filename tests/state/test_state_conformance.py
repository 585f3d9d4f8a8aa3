"""One conformance suite for every state backend: each test runs against SQLite files
and against a real PostgreSQL 15 (``postgres_url``: a fresh database per test).

"Two hosts" below are two store objects over the same state (two connections to
one SQLite file, as the workers of one machine; two pools on one PostgreSQL
database, as the hosts of a cluster): what one writes, the other reads, and of
two claiming one run exactly one wins.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTING, make_config
from ionflux import (
    GraphVersionExists,
    ManifestError,
    NotFound,
    RunNotRecorded,
    StateSchemaError,
    StateUnavailable,
    UnknownTransform,
)
from ionflux.config import StateSettings
from ionflux.graph import (
    Engine,
    GraphRepository,
    HostInvoker,
    RunHistory,
    SharedRunHistory,
    StepRecord,
)
from ionflux.host import Host
from ionflux.manifest import Manifest
from ionflux.registry import Registry
from ionflux.state import (
    PgDatabase,
    applied,
    check_current,
    cluster_warnings,
    latest_version,
    migrate,
    migrations,
)
from ionflux.store import Cid, PathTable, cid_for_bytes
from ionflux.testing.postgres import PostgresServer
from ionflux.triggers import SharedScheduleState

OWNER_A = "a:1:x"
OWNER_B = "b:2:y"


@dataclass
class Backend:
    """Opens stores over one state, as many times as a test asks ("hosts")."""

    name: str
    where: Path
    url: str | None = None
    opened: list[Any] = field(default_factory=list)
    pools: list[PgDatabase] = field(default_factory=list)

    def _pool(self) -> PgDatabase:
        assert self.url is not None
        pool = PgDatabase(self.url, size=2)
        self.pools.append(pool)
        return pool

    def registry(self) -> Registry:
        if self.url is None:
            made = Registry(self.where / "registry.sqlite3")
        else:
            made = Registry(database=self._pool())
        self.opened.append(made)
        return made

    def graphs(self) -> GraphRepository:
        if self.url is None:
            made = GraphRepository(self.where / "graphs.sqlite3")
        else:
            made = GraphRepository(None, database=self._pool())
        self.opened.append(made)
        return made

    def history(self, *, recover: bool = True) -> RunHistory:
        if self.url is None:
            made = RunHistory(self.where / "runs.sqlite3", recover=recover)
        else:
            made = SharedRunHistory(self._pool(), recover=recover)
        self.opened.append(made)
        return made

    def paths(self) -> PathTable:
        if self.url is None:
            made = PathTable(self.where / "paths.sqlite")
        else:
            made = PathTable(None, database=self._pool())
        self.opened.append(made)
        return made

    def close(self) -> None:
        for store in reversed(self.opened):
            store.close()
        for pool in self.pools:
            pool.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        made = Backend("sqlite", tmp_path)
    else:
        url = request.getfixturevalue("postgres_url")
        migrate(url)
        made = Backend("postgres", tmp_path, url)
    yield made
    made.close()


def manifest(name: str, version: str, data: bytes, description: str = "") -> Manifest:
    return Manifest.model_validate(
        {
            "name": name,
            "version": version,
            "abi": "component",
            "description": description,
            "module": {"cid": cid_for_bytes(data)},
        }
    )


# -- registry --------------------------------------------------------------------------------


def test_a_published_version_is_found_by_name_version_and_cid_on_every_host(
    backend: Backend,
) -> None:
    a, b = backend.registry(), backend.registry()
    with pytest.raises(UnknownTransform):
        b.get("echo")  # looked up (and the miss seen) before A publishes
    first = a.add(manifest("echo", "1.0.0", b"one"), 3)
    assert b.get("echo").cid == first.cid
    a.add(manifest("echo", "1.1.0", b"two"), 3)
    assert b.get("echo").version == "1.1.0"  # B's cache saw A's publish
    assert b.get("echo@1.0.0").cid == cid_for_bytes(b"one")
    assert b.get(cid_for_bytes(b"two")).version == "1.1.0"
    assert [(t.name, t.version) for t in b.list()] == [("echo", "1.0.0"), ("echo", "1.1.0")]


def test_a_version_is_immutable_across_hosts(backend: Backend) -> None:
    a, b = backend.registry(), backend.registry()
    a.add(manifest("echo", "1.0.0", b"one"), 3)
    again = b.add(manifest("echo", "1.0.0", b"one"), 3)  # the same: a no-op
    assert again.cid == cid_for_bytes(b"one")
    with pytest.raises(ManifestError, match="immutable"):
        b.add(manifest("echo", "1.0.0", b"other"), 5)
    with pytest.raises(ManifestError, match="description"):
        b.add(manifest("echo", "1.0.0", b"one", description="changed"), 3)
    assert len(a.list()) == 1


# -- pod paths -------------------------------------------------------------------------------


def test_a_path_bound_on_one_host_resolves_on_every_host(backend: Backend) -> None:
    a, b = backend.paths(), backend.paths()
    one, two = Cid.parse(cid_for_bytes(b"one")), Cid.parse(cid_for_bytes(b"two"))
    a.bind("/reports/01.json", one)
    assert b.resolve("reports/01.json") == one
    b.bind("reports/01.json", two)  # rebinding replaces
    a.bind("reports/02.json", one)
    a.bind("other/x", one)
    assert a.resolve("reports/01.json") == two
    assert b.list("reports/") == {"reports/01.json": str(two), "reports/02.json": str(one)}
    b.unbind("reports/02.json")
    with pytest.raises(NotFound):
        a.resolve("reports/02.json")
    with pytest.raises(NotFound):
        a.unbind("reports/02.json")


# -- graph versions ---------------------------------------------------------------------------

GRAPH = "name: g\nversion: '{v}'\nnodes:\n  a: {{transform: echo}}\n"


def test_a_deployed_graph_resolves_on_every_host_and_versions_are_appended(
    backend: Backend,
) -> None:
    a, b = backend.graphs(), backend.graphs()
    assert b.names() == []
    one, created = a.deploy(GRAPH.format(v="1"), "g", "1", "first")
    assert created and one.seq >= 1
    assert b.resolve("g").cid == one.cid  # B resolves (and caches) g
    two, _ = a.deploy(GRAPH.format(v="2"), "g", "2", "second")
    assert b.resolve("g").cid == two.cid  # the cache saw the new deploy
    assert b.resolve(f"g@{one.cid}").text == GRAPH.format(v="1")
    assert b.resolve(one.cid).cid == one.cid
    assert [v.message for v in b.versions("g")] == ["first", "second"]
    same, created = b.deploy(GRAPH.format(v="2"), "g", "2", "again")
    assert not created and same.seq == two.seq
    with pytest.raises(GraphVersionExists):
        b.deploy(GRAPH.format(v="2") + "# other\n", "g", "2", "other text")
    assert b.names() == ["g"]


# -- run history ------------------------------------------------------------------------------


def start(history: RunHistory, run_id: str, **extra: Any) -> Any:
    return history.start_run(
        run_id=run_id,
        graph_name=extra.pop("graph_name", "g"),
        graph_version="1",
        graph_cid="bafyg",
        trigger_type="manual",
        trigger_details={"via": "test"},
        mode="run_all",
        start_time=extra.pop("start_time", 1.0),
        input={"text": "héllo"},
        input_cid=None,
        **extra,
    )


def step(run_id: str, node: str, **extra: Any) -> StepRecord:
    values: dict[str, Any] = {
        "step_run_id": f"{run_id}-{node}",
        "run_id": run_id,
        "node_id": node,
        "target": "echo",
        "status": "success",
        "start_time": 2.0,
        "end_time": 2.5,
        "attempts": 1,
        "inputs_preview": "{}",
        "inputs_cid": None,
        "outputs_preview": '{"x":1}',
        "outputs_cid": None,
        "error_message": None,
        "error": None,
        "fuel_used": 7,
        "child_run_id": None,
        "outputs_json": '{"x":1}',
    }
    values.update(extra)
    return StepRecord(**values)


CLOSED: dict[str, Any] = {
    "status": "success",
    "end_time": 3.0,
    "output_preview": '{"x":1}',
    "output_cid": None,
    "error_details": None,
    "fuel_used": 7,
    "step_results_summary_cid": None,
}


def test_a_run_and_its_steps_are_recorded_once_and_read_on_every_host(backend: Backend) -> None:
    a, b = backend.history(), backend.history()
    start(a, "01RUNAAAA1")
    assert b.get("01RUNAAAA1").status == "running"  # type: ignore[union-attr]
    assert a.finish_run("01RUNAAAA1", steps=[step("01RUNAAAA1", "n1")], output={"x": 1}, **CLOSED)
    assert not b.finish_run("01RUNAAAA1", **CLOSED)  # closed once, by whichever host first
    run = b.get("01RUNAAAA1")
    assert run is not None and run.status == "success" and run.output == {"x": 1}
    assert run.input == {"text": "héllo"} and run.trigger_details == {"via": "test"}
    assert [s.node_id for s in b.steps("01RUNAAAA1")] == ["n1"]
    assert b.steps("01RUNAAAA1")[0].outputs_json == '{"x":1}'
    assert b.find("01RUNAAA").run_id == "01RUNAAAA1"  # type: ignore[union-attr]


def test_a_batch_of_steps_over_many_statements_keeps_the_last_row_of_each_step(
    backend: Backend,
) -> None:
    """More steps than one multi-row statement holds (PostgreSQL sends them in
    several), one step given twice and one cache key given twice: the last of each
    is kept, as replacing row by row does on SQLite."""
    a, b = backend.history(), backend.history()
    start(a, "01BATCH")
    steps = [step("01BATCH", f"n{n}", cache_key=f"k{n}") for n in range(300)]
    steps.append(step("01BATCH", "n0", status="failed", cache_key="k0", outputs_json='{"n":0}'))
    steps.append(step("01BATCH", "n7", cache_key="k1", outputs_json='{"n":7}'))
    assert a.finish_run("01BATCH", steps=steps, **CLOSED)
    recorded = {s.node_id: s for s in b.steps("01BATCH")}
    assert len(recorded) == 300
    assert recorded["n0"].status == "failed" and recorded["n1"].status == "success"
    assert b.cached_outputs("k0") == '{"n":0}'
    assert b.cached_outputs("k1") == '{"n":7}'  # the key moved to the step given last
    assert b.cached_outputs("k7") is None  # n7's row was rewritten with another key


def test_a_short_run_written_only_at_its_close_reads_as_one_started_then_closed(
    backend: Backend,
) -> None:
    """``finish_run(start=...)``: the row never written before its close comes out as
    the start row closed by the update would (lease ended, run key kept or forgotten)."""
    a, b = backend.history(), backend.history()
    for run_id, forget in (("01SHORTKEEP", False), ("01SHORTFORGET", True)):
        row = start(a, run_id, write=False, run_key=f"key-{run_id}", lease=("me", 99.0))
        assert a.finish_run(
            run_id,
            steps=[step(run_id, "n1")],
            start=row,
            output={"x": 2},
            forget_key=forget,
            **CLOSED,
        )
        run = b.get(run_id)
        assert run is not None and run.status == "success" and run.end_time == 3.0
        assert run.output == {"x": 2} and run.fuel_used == 7 and run.lease_expires is None
        assert run.lease_owner == "me" and run.input == {"text": "héllo"}
        assert run.run_key == (None if forget else f"key-{run_id}")
        assert [s.node_id for s in b.steps(run_id)] == ["n1"]
        assert not b.finish_run(run_id, **CLOSED)  # closed already


def test_listing_filters_and_orders_newest_first(backend: Backend) -> None:
    a, b = backend.history(), backend.history()
    start(a, "01A")
    start(b, "01B", graph_name="other")
    start(a, "01C")
    a.finish_run("01C", **CLOSED)
    assert [r.run_id for r in b.list_runs()] == ["01C", "01B", "01A"]
    assert [r.run_id for r in a.list_runs(graph="g")] == ["01C", "01A"]
    assert [r.run_id for r in a.list_runs(status="running")] == ["01B", "01A"]
    assert [r.run_id for r in a.list_runs(limit=1)] == ["01C"]


def test_a_run_key_finds_the_run_already_accepted(backend: Backend) -> None:
    a, b = backend.history(), backend.history()
    first = start(a, "01K1", write=False, run_key="order-7", status="accepted")
    assert a.accept(first) is None
    second = start(b, "01K2", write=False, run_key="order-7", status="accepted")
    found = b.accept(second)
    assert found is not None and found.run_id == "01K1"
    assert b.get("01K2") is None  # nothing half-written
    b.mark_running("01K1")
    assert a.find_key("order-7").status == "running"  # type: ignore[union-attr]
    a.finish_run("01K1", forget_key=True, **CLOSED)
    assert b.find_key("order-7") is None  # the key is free again


def test_an_orphaned_run_is_claimed_by_exactly_one_host(backend: Backend) -> None:
    a, b = backend.history(), backend.history()
    row = start(a, "01L", write=False, lease=("gone:9:z", 100.0))
    a.write_start(row)
    assert not a.claim("01L", OWNER_A, 200.0, now=50.0)  # the lease still holds
    assert [r.run_id for r in b.orphans(now=150.0)] == ["01L"]
    won = [a.claim("01L", OWNER_A, 200.0, now=150.0), b.claim("01L", OWNER_B, 200.0, now=150.0)]
    assert won == [True, False]
    b.renew(["01L"], OWNER_B, 900.0)  # not B's: nothing moves
    a.renew(["01L"], OWNER_A, 400.0)
    assert b.get("01L").lease_expires == 400.0  # type: ignore[union-attr]
    assert b.get("01L").lease_owner == OWNER_A  # type: ignore[union-attr]
    a.release(["01L"], OWNER_A)
    assert b.claim("01L", OWNER_B, 500.0, now=150.0)  # given back: taken at once


def test_claims_race_from_many_threads_and_one_wins(backend: Backend) -> None:
    hosts = [backend.history(recover=False) for _ in range(3)]
    hosts[0].write_start(start(hosts[0], "01RACE", write=False, lease=("gone:9:z", 1.0)))

    owners = [f"h{i}:{i}:x" for i in range(3) for _ in range(3)]

    async def race() -> list[bool]:
        calls = [
            asyncio.to_thread(hosts[n % 3].claim, "01RACE", owner, 99.0, now=10.0)
            for n, owner in enumerate(owners)
        ]
        return list(await asyncio.gather(*calls))

    won = asyncio.run(race())
    winner = hosts[0].get("01RACE").lease_owner  # type: ignore[union-attr]
    assert winner in owners
    assert {owner for owner, ok in zip(owners, won, strict=True) if ok} == {winner}


def test_a_suspended_run_is_reopened_and_ended_by_compare_and_set(backend: Backend) -> None:
    a, b = backend.history(), backend.history()
    start(a, "01W", lease=(OWNER_A, 50.0))
    assert a.suspend(
        "01W",
        status="waiting",
        error_details=[{"kind": "timer"}],
        wake_at=60.0,
        steps=[step("01W", "n1"), step("01W", "n2", status="failed", outputs_json=None)],
    )
    assert [r.run_id for r in b.waiting()] == ["01W"]
    assert b.get("01W").wake_at == 60.0  # type: ignore[union-attr]
    assert b.reopen("01W", ["waiting"], overrides={"n2": {"y": 2}})
    assert not a.reopen("01W", ["waiting"])  # reopened once
    run = a.get("01W")
    assert run is not None and run.status == "accepted" and run.overrides == {"n2": {"y": 2}}
    assert {s.node_id: s.status for s in a.steps("01W")} == {"n1": "success", "n2": "retried"}
    assert a.request_control("01W", "pause")
    assert b.claim("01W", OWNER_B, 100.0, now=10.0)
    assert a.controls(OWNER_B) == [("01W", "pause")]
    assert b.suspend("01W", status="paused", error_details=None, wake_at=None)
    assert a.end("01W", ["paused"], "cancelled", [{"kind": "cancelled"}], now=9.0)
    assert not b.end("01W", ["paused"], "cancelled", None, now=9.0)
    assert b.get("01W").status == "cancelled"  # type: ignore[union-attr]


def test_the_content_cache_answers_by_key_and_keeps_the_newest(backend: Backend) -> None:
    a, b = backend.history(), backend.history()
    a.content_cache_entries = 2
    start(a, "01C")
    for n in range(3):
        a.record_steps([step("01C", f"n{n}", cache_key=f"k{n}", outputs_json=f'{{"n":{n}}}')])
    assert b.cached_outputs("k0") is None  # past the cap: the oldest went
    assert b.cached_outputs("k2") == '{"n":2}'
    a.record_steps([step("01C", "n1", cache_key="k1b", outputs_json='{"n":9}')])
    assert b.cached_outputs("k1") is None  # the step row was rewritten with another key
    assert b.cached_outputs("k1b") == '{"n":9}'


# -- the engine end to end --------------------------------------------------------------------

LINEAR = """
name: up
graph:
  - id: first
    transform: echo
    inputs: {text: "{{ trigger.input_data.text }}"}
  - id: second
    transform: echo
    inputs: {text: "{{ nodes.first.outputs.text }}"}
output:
  text: "{{ nodes.second.outputs.text }}"
"""


async def test_an_engine_runs_and_records_a_deployed_graph(
    backend: Backend, built: Path, tmp_path: Path
) -> None:
    config = make_config(tmp_path / "data")
    if backend.url is not None:
        config = config.model_copy(
            update={"state": StateSettings(backend="postgres", url=backend.url)}
        )
    host = Host(config)
    data = (TESTING / "echo.wasm").read_bytes()
    host.publish_bytes(manifest("echo", "0.1.0", data), data)
    engine = Engine(
        host.config,
        invoker=HostInvoker(host),
        repository=backend.graphs(),
        history=backend.history(),
        pod=host.pod,
    )
    del backend.opened[-2:]  # the engine closes them
    try:
        graph = tmp_path / "up.yaml"
        graph.write_text(LINEAR)
        engine.deploy(graph, "first deploy")
        result = await engine.run("up", {"text": "hi"})
        assert result.overall_status == "success", result.error_details
        assert result.output == {"text": "hi"}
        other = backend.history()  # another host reads the run and its steps
        run = other.get(result.execution_id)
        assert run is not None and run.status == "success" and run.output == {"text": "hi"}
        assert [s.node_id for s in other.steps(result.execution_id)] == ["first", "second"]
    finally:
        engine.close()
        host.close()


# -- migrations (PostgreSQL) ------------------------------------------------------------------


def test_migrations_apply_from_empty_once(postgres_url: str) -> None:
    done = migrate(postgres_url)
    assert [m.version for m in done] == [m.version for m in migrations()]
    assert migrate(postgres_url) == []  # a second run (another host starting) does nothing
    assert [v for v, _, _ in applied(postgres_url)] == list(range(1, latest_version() + 1))


def test_migrations_apply_from_the_previous_version_keeping_the_data(postgres_url: str) -> None:
    previous = latest_version() - 1
    migrate(postgres_url, target=previous)
    assert [v for v, _, _ in applied(postgres_url)] == list(range(1, previous + 1))
    with pytest.raises(StateSchemaError, match="ionflux db migrate"):
        check_current(postgres_url)
    pool = PgDatabase(postgres_url, size=1)
    old = SharedRunHistory(pool)
    start(old, "01OLD")
    old.finish_run("01OLD", steps=[step("01OLD", "n1")], **CLOSED)
    pool.close()
    assert [m.version for m in migrate(postgres_url)] == [latest_version()]
    check_current(postgres_url)
    pool = PgDatabase(postgres_url, size=1)
    try:
        new = SharedRunHistory(pool)
        assert new.get("01OLD").status == "success"  # type: ignore[union-attr]
        assert [s.node_id for s in new.steps("01OLD")] == ["n1"]
    finally:
        pool.close()


def test_a_database_from_a_newer_host_is_refused(postgres_url: str) -> None:
    migrate(postgres_url)
    pool = PgDatabase(postgres_url, size=1)
    pool.execute("INSERT INTO schema_migrations VALUES (?, ?, ?, ?)", (9999, "future", "00", 0.0))
    pool.close()
    with pytest.raises(StateSchemaError, match="newer than this host"):
        migrate(postgres_url)
    with pytest.raises(StateSchemaError, match="upgrade the host"):
        check_current(postgres_url)


def test_a_shared_state_with_a_local_store_or_own_nats_is_warned_about(tmp_path: Path) -> None:
    shared = StateSettings(backend="postgres", url="postgresql://x@127.0.0.1:1/x")
    config = make_config(tmp_path).model_copy(update={"state": shared})
    warned = cluster_warnings(config)
    assert len(warned) == 2
    assert "store.backend is local" in warned[0] and "single machine" in warned[0]
    assert "nats.url is not set" in warned[1]
    kubo = config.model_copy(
        update={
            "store": config.store.model_copy(update={"backend": "kubo"}),
            "nats": config.nats.model_copy(update={"url": "nats://127.0.0.1:4222"}),
        }
    )
    assert cluster_warnings(kubo) == []
    assert cluster_warnings(make_config(tmp_path)) == []  # SQLite: one machine by design


async def test_a_host_whose_database_goes_away_refuses_runs_and_recovers(
    tmp_path: Path, built: Path
) -> None:
    server = PostgresServer().start()  # its own: this test stops it
    try:
        url = server.create_database("away")
        shared = StateSettings(backend="postgres", url=url, connect_timeout_s=2)
        host = Host(make_config(tmp_path / "data").model_copy(update={"state": shared}))
        data = (TESTING / "echo.wasm").read_bytes()
        host.publish_bytes(manifest("echo", "0.1.0", data), data)
        engine = Engine.for_host(host)
        try:
            graph = tmp_path / "up.yaml"
            graph.write_text(LINEAR)
            engine.deploy(graph, "first")
            assert (await engine.run("up", {"text": "a"})).overall_status == "success"
            server.stop(remove=False)
            with pytest.raises((StateUnavailable, RunNotRecorded)) as refused:
                await engine.run("up", {"text": "b"})
            assert refused.value.kind in ("state_unavailable", "run_not_recorded")
            server.start()
            again = await engine.run("up", {"text": "c"})
            assert again.overall_status == "success" and again.output == {"text": "c"}
            runs = engine.history.list_runs(graph="up")
            assert [r.status for r in runs] == ["success", "success"]  # nothing half-written
        finally:
            engine.close()
            host.close()
    finally:
        server.stop()


def test_hosts_starting_together_apply_each_migration_once(postgres_url: str) -> None:
    async def together() -> list[list[int]]:
        done = await asyncio.gather(*(asyncio.to_thread(migrate, postgres_url) for _ in range(4)))
        return [[m.version for m in d] for d in done]

    applied_by = asyncio.run(together())
    assert sorted(v for d in applied_by for v in d) == list(range(1, latest_version() + 1))
    assert [v for v, _, _ in applied(postgres_url)] == list(range(1, latest_version() + 1))


def test_db_migrate_and_status_commands(postgres_url: str, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from ionflux.cli import main

    def cli(*args: str) -> str:
        done = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "db", *args])
        assert done.exit_code == 0, done.output
        return done.output

    assert "schema version 0" in cli("status", "--url", postgres_url)
    assert cli("migrate", "--url", postgres_url, "--to", "1").strip() == "applied 0001_initial.sql"
    status = json.loads(cli("status", "--url", postgres_url, "--json"))
    assert status == {
        "version": 1,
        "latest": latest_version(),
        "pending": list(range(2, latest_version() + 1)),
    }
    out = cli("migrate", "--url", postgres_url)
    assert "applied 0002_run_indexes.sql" in out and "applied ionwall 0001" in out
    assert "up to date" in cli("migrate", "--url", postgres_url)
    assert "nothing to migrate" in cli("migrate")  # the default backend is SQLite


async def test_schedule_fires_are_claimed_once_and_last_times_only_move_on(
    postgres_url: str,
) -> None:
    migrate(postgres_url)
    pools = [PgDatabase(postgres_url, size=2) for _ in range(2)]
    try:
        a, b = (SharedScheduleState(pool, f"h{i}") for i, pool in enumerate(pools))
        assert await a.last("k") is None
        claims = await asyncio.gather(*(s.claim("k", 120.0) for s in (a, b, a, b)))
        assert claims.count(True) == 1
        assert await b.claim("k", 121.0) and not await a.claim("k", 121.0)
        assert await a.claim("other", 120.0)  # another schedule's fire
        await a.set_last("k", 121.0)
        await b.set_last("k", 60.0)  # an older fire never moves it back
        assert await b.last("k") == 121.0
        a.PRUNE_EVERY, a.KEEP_S = 1, -1.0  # every claim prunes, and every claim is old
        await a.claim("k", 122.0)
        left = pools[0].execute("SELECT count(*) FROM schedule_fires").fetchone()
        assert left == (0,)
    finally:
        for pool in pools:
            pool.close()
