"""The ION Reactor in a cluster (``state.backend: postgres``): its tables live in the
shared database (migration 0005), so plans, agents with their history and
confirmations are the same on every host; its health rules are evaluated by one
host at a time (a lease in the database) from states kept there, so an alert
fires once across the hosts, and another host takes over when the one
evaluating stops or dies.

The store's tests run against SQLite and a real PostgreSQL (two stores over one
state are two "hosts"); the hosts below are real serving hosts (a data directory
each, one real PostgreSQL, one real nats-server), in this process or, for a
host killed with SIGKILL, ``ionflux up`` processes. Waiting is on records and
messages, bounded only to stop a hang.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from conftest import make_config, on_nats
from ionflux.config import Config
from ionflux.http._hosting import RunningHost, start_host
from ionflux.http.testing import UpProcess
from ionflux.reactor import ALERT_SUBJECT, ReactorStore, RuleState
from ionflux.state import PgDatabase, migrate
from ionflux.triggers import NatsServer
from test_graph_examples import STANDARD, publish_built
from test_reactor_plans import agent

RULE = {
    "name": "disk",
    "metric": "disk_free_ratio",
    "condition": "value >= 0",  # holds at every evaluation: fires once, then stays firing
    "severity": "critical",
    "notification_channel": "ops",
}


class Stores:
    """Opens Reactor stores over one state, as many as a test asks ("hosts")."""

    def __init__(self, where: Path, url: str | None) -> None:
        self.where = where
        self.url = url
        self.opened: list[ReactorStore] = []
        self.pools: list[PgDatabase] = []

    def open(self) -> ReactorStore:
        if self.url is None:
            made = ReactorStore(self.where / "reactor.sqlite3")
        else:
            pool = PgDatabase(self.url, size=2)
            self.pools.append(pool)
            made = ReactorStore(None, database=pool)
        self.opened.append(made)
        return made

    def close(self) -> None:
        for store in self.opened:
            store.close()
        for pool in self.pools:
            pool.close()


@pytest.fixture(params=["sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        migrate(url)
    made = Stores(tmp_path, url)
    yield made
    made.close()


# -- the store, on both backends ---------------------------------------------------------------


def test_plans_agents_and_confirmations_written_by_one_host_are_read_by_another(
    stores: Stores,
) -> None:
    a, b = stores.open(), stores.open()
    assert a.shared == (stores.url is not None)
    a.name_plan("daily", "bafy1", "1.0.0")
    a.name_plan("daily", "bafy2", "1.1.0")
    a.name_plan("daily", "bafy2", "1.1.0")  # naming again changes nothing
    assert b.plan_cid("daily") == "bafy2" and b.plan_cid("nope") is None
    assert [(n, c, v) for n, c, v, _ in b.plans()] == [
        ("daily", "bafy1", "1.0.0"),
        ("daily", "bafy2", "1.1.0"),
    ]

    first = a.add_version(
        name="digest", version="1.0.0", definition_cid="d1", graph_cid="g1",
        operation="deploy", state="serving", consent_id=None, by="owner",
        agent_status="active",
    )  # fmt: skip
    pending = b.add_version(
        name="digest", version="2.0.0", definition_cid="d2", graph_cid="g2",
        operation="update", state="pending_consent", consent_id="c1", by="owner",
        agent_status="updating",
    )  # fmt: skip
    row = a.agent("digest")
    assert row is not None and row.status == "updating"
    assert (row.serving_seq, row.pending_seq, row.consent_id) == (first.seq, pending.seq, "c1")
    a.promote("digest", pending.seq)
    assert [(v.version, v.state) for v in b.versions("digest")] == [
        ("1.0.0", "superseded"),
        ("2.0.0", "serving"),
    ]
    row = b.agent("digest")
    assert row is not None and (row.status, row.serving_seq, row.pending_seq) == (
        "active",
        pending.seq,
        None,
    )
    b.set_status("digest", "retired")
    assert [r.status for r in a.agents()] == ["retired"]

    made = a.add_confirmation("cf_1", "disk", "safe_mode", "disk_free_ratio = 0.01")
    assert [c.id for c in b.confirmations("pending")] == [made.id]
    assert b.answer_confirmation("cf_1", "confirmed")
    assert not a.answer_confirmation("cf_1", "refused")  # answered once, on any host
    b.set_confirmation_run("cf_1", "01RUN")
    found = a.confirmation("cf_1")
    assert found is not None and (found.status, found.run_id) == ("confirmed", "01RUN")


def test_the_health_lease_is_held_by_one_host_until_it_lapses_or_is_given_up(
    stores: Stores,
) -> None:
    a, b = stores.open(), stores.open()
    assert a.lease("health") is None
    assert a.take_lease("health", "A", 60)
    assert not b.take_lease("health", "B", 60)
    assert a.take_lease("health", "A", 60)  # renewed by its holder
    assert a.take_lease("health", "A", -1)  # renewed into the past: lapsed (A died)
    assert b.take_lease("health", "B", 60)  # so another takes it
    assert not a.take_lease("health", "A", 60)
    held = a.lease("health")
    assert held is not None and held[0] == "B"
    a.release_lease("health", "A")  # not A's: nothing given up
    assert not a.take_lease("health", "A", 60)
    b.release_lease("health", "B")
    assert a.lease("health") is None and a.take_lease("health", "A", 60)


def test_a_rule_state_moves_from_the_fire_count_it_was_evaluated_from(stores: Stores) -> None:
    a, b = stores.open(), stores.open()
    firing = RuleState(since=1.0, firing=True, last_value=0.5, fired_at=2.0, fired=1)
    assert a.save_rule_states([("disk", firing, 0)], "A") == {"disk"}
    # B evaluated from the same count (0) and saw it fire too: not recorded, not acted on.
    assert b.save_rule_states([("disk", firing, 0), ("other", RuleState(), 0)], "B") == {"other"}
    state, by, _ = b.rule_states()["disk"]
    assert (state.fired, state.firing, state.since, by) == (1, True, 1.0, "A")
    quiet = RuleState(since=None, firing=False, last_value=0.0, fired_at=2.0, fired=1)
    assert b.save_rule_states([("disk", quiet, 1)], "B") == {"disk"}  # from the count saved
    assert not a.rule_states()["disk"][0].firing


async def test_hosts_recording_one_firing_at_once_record_it_once(postgres_url: str) -> None:
    migrate(postgres_url)
    made = Stores(Path("."), postgres_url)
    try:
        hosts = [made.open() for _ in range(4)]
        firing = RuleState(since=1.0, firing=True, last_value=1.0, fired_at=1.0, fired=1)
        won = await asyncio.gather(
            *(
                asyncio.to_thread(s.save_rule_states, [("disk", firing, 0)], f"h{i}")
                for i, s in enumerate(hosts)
            )
        )
        assert [len(w) for w in won].count(1) == 1
        leases = await asyncio.gather(
            *(asyncio.to_thread(s.take_lease, "health", f"h{i}", 60) for i, s in enumerate(hosts))
        )
        assert leases.count(True) == 1
    finally:
        made.close()


# -- serving hosts on one PostgreSQL -------------------------------------------------------------


def cluster_config(
    data_dir: Path, url: str, server: NatsServer, rules: list[dict[str, Any]]
) -> Config:
    config = on_nats(make_config(data_dir), server)
    return config.model_copy(
        update={
            "state": config.state.model_copy(update={"backend": "postgres", "url": url}),
            "reactor": config.reactor.model_copy(
                update={"health_interval_s": 0.1, "alert_rules": rules}
            ),
        }
    )


async def until(check: Callable[[], Awaitable[bool] | bool], what: str, limit: float = 30) -> None:
    """Waits for ``check`` (asked again every 20 ms); the limit only stops a hang."""

    async def wait() -> None:
        while True:
            got = check()
            if not isinstance(got, bool):
                got = await got
            if got:
                return
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(wait(), limit)
    except TimeoutError:
        raise AssertionError(f"never: {what}") from None


@pytest.fixture
async def two_hosts(
    tmp_path: Path, postgres_url: str, nats_server: NatsServer, built: Path
) -> AsyncIterator[list[RunningHost]]:
    hosts: list[RunningHost] = []
    try:
        for name in ("a", "b"):
            config = cluster_config(tmp_path / name, postgres_url, nats_server, [RULE])
            hosts.append(await start_host(config, require_token=False, serve_http=False))
        yield hosts
    finally:
        for running in hosts:
            await running.aclose()


async def test_an_agent_deployed_through_one_host_is_listed_with_its_history_on_another(
    two_hosts: list[RunningHost],
) -> None:
    a, b = two_hosts
    assert a.reactor.store.shared and b.reactor.store.shared
    assert not (a.config.data_dir / "reactor.sqlite3").exists()
    for name in STANDARD:
        publish_built(a.host, name)
    a.reactor.ensure_graphs()
    name = f"cl{uuid.uuid4().hex[:6]}"
    cid, _ = a.reactor.agents.put_definition(
        {"agent_name": "Cluster Agent", "version": "1.0.0", "flux_graph_dsl_yaml": agent(name)}
    )
    deployed = await a.reactor.agents.manage("deploy", agent_definition_cid=cid)
    assert deployed["status"] == "active"

    assert [s["name"] for s in b.reactor.agents.summaries()] == [name]
    shown = b.reactor.agents.show(name)
    assert shown["serving"]["definition_cid"] == cid
    assert [(v["operation"], v["state"]) for v in shown["history"]] == [("deploy", "serving")]

    await b.reactor.agents.manage("retire", agent_id=name)  # retired through B
    await until(lambda: name in a.reactor.agents.stopped, "A sees B's retire")
    assert [v["operation"] for v in a.reactor.agents.show(name)["history"]] == [
        "deploy",
        "retire",
    ]


async def test_a_rule_on_two_hosts_fires_once_and_another_host_takes_over(
    two_hosts: list[RunningHost], nats_server: NatsServer
) -> None:
    alerts: list[dict[str, Any]] = []
    nc = await nats.connect(nats_server.url, **nats_server.connect_options())
    try:
        got = asyncio.Event()

        async def on_alert(msg: Any) -> None:
            alerts.append(json.loads(msg.data))
            got.set()

        await nc.subscribe(ALERT_SUBJECT, cb=on_alert)
        await nc.flush()
        await asyncio.wait_for(got.wait(), 30)
        held = two_hosts[0].reactor.store.lease("health")
        assert held is not None
        [leader] = [h for h in two_hosts if h.reactor.holder == held[0]]
        [other] = [h for h in two_hosts if h is not leader]

        # The other host read the firing state since (it evaluates, not holding the
        # lease): without the lease and the shared states it would have fired too.
        def other_saw_it() -> bool:
            state = other.reactor.evaluator.states.get("disk")
            return state is not None and state.firing and state.fired == 1

        await until(other_saw_it, "the other host reads the rule's shared state")
        # Meanwhile one host evaluates: every saved evaluation is the leader's.
        store = other.reactor.store
        seen: list[tuple[str, float]] = []

        def evaluations() -> bool:
            _, by, at = store.rule_states()["disk"]
            if not seen or seen[-1][1] != at:
                seen.append((by, at))
            return len(seen) >= 4

        await until(evaluations, "a few more evaluations")
        assert {by for by, _ in seen} == {leader.reactor.holder}
        health = other.reactor.metrics.registry.get_sample_value("system_health_status_current")
        assert health == 0.0  # a critical rule firing: on every host's /metrics
        await other.bus.nc.flush()  # anything it published has reached the server...
        await nc.flush()  # ...and us
        assert len(alerts) == 1 and alerts[0]["rule"]["name"] == "disk"

        # The leader stops (and gives the lease up): the other evaluates from now on,
        # from the shared state: the rule still firing, not fired again.
        two_hosts.remove(leader)
        await leader.aclose()

        def evaluated_by_other() -> bool:
            row = store.rule_states().get("disk")
            return row is not None and row[1] == other.reactor.holder

        await until(evaluated_by_other, "the other host takes over the evaluation")
        first = store.rule_states()["disk"][2]
        await until(lambda: store.rule_states()["disk"][2] > first, "it evaluates again")
        await other.bus.nc.flush()
        await nc.flush()
        assert len(alerts) == 1
        assert store.rule_states()["disk"][0].fired == 1
    finally:
        await nc.close()


def test_a_host_killed_while_evaluating_is_replaced_and_the_alert_is_not_repeated(
    tmp_path: Path, postgres_url: str, nats_server: NatsServer, built: Path
) -> None:
    """Two ``ionflux up`` processes; the one holding the health lease is killed with
    SIGKILL (nothing given up): once its lease lapses the other evaluates, from the
    shared state (the rule still firing: fired once)."""

    async def body() -> None:
        alerts: list[dict[str, Any]] = []
        got = asyncio.Event()
        nc = await nats.connect(nats_server.url, **nats_server.connect_options())

        async def on_alert(msg: Any) -> None:
            alerts.append(json.loads(msg.data))
            got.set()

        await nc.subscribe(ALERT_SUBJECT, cb=on_alert)
        await nc.flush()
        db = PgDatabase(postgres_url, size=1)
        hosts: list[UpProcess] = []
        token = nats_server.credentials.token
        try:
            for name in ("a", "b"):
                data = tmp_path / name
                data.mkdir()
                (data / "ionflux.yaml").write_text(
                    json.dumps(
                        {
                            "nats": {"url": nats_server.url, "token": token},
                            "state": {"backend": "postgres", "url": postgres_url},
                            "reactor": {"health_interval_s": 0.1, "alert_rules": [RULE]},
                        }
                    )
                )
                hosts.append(UpProcess(data, nats_url=nats_server.url).start(timeout=60))
            store = ReactorStore(None, database=db)
            await asyncio.wait_for(got.wait(), 60)

            def pid_of(holder: str) -> int:
                return int(holder.split(":")[-2])

            held = store.lease("health")
            assert held is not None
            [leader] = [h for h in hosts if h.proc is not None and h.proc.pid == pid_of(held[0])]
            [other] = [h for h in hosts if h is not leader]
            assert other.proc is not None
            leader.kill()

            def evaluated_by_other() -> bool:
                row = store.rule_states().get("disk")
                return row is not None and pid_of(row[1]) == other.proc.pid  # type: ignore[union-attr]

            await until(evaluated_by_other, "the other host takes over", limit=60)
            first = store.rule_states()["disk"][2]
            await until(lambda: store.rule_states()["disk"][2] > first, "it evaluates again")
            assert store.rule_states()["disk"][0].fired == 1  # recorded before any alert
            await nc.flush()
            assert len(alerts) == 1
        finally:
            for host in hosts:
                host.kill()
            db.close()
            await nc.close()

    asyncio.run(body())
