"""Scheduled triggers on a real host: runs on time in the schedule's time zone,
missed runs during downtime reported (and run once when asked), one fire per
schedule across hosts."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import nats
import pytest
from conftest import TESTING, make_config
from ionflux.http import RunningHost, start_host
from ionflux.http.testing import chain_graph, deploy, publish_wasm
from ionflux.triggers import NatsServer, ScheduleTrigger
from ionflux.triggers._schedule import MISSED_SUBJECT, KvState, schedule_key


async def serving(data_dir: Path, server: NatsServer) -> RunningHost:
    config = make_config(data_dir)
    nats_settings = config.nats.model_copy(
        update={"url": server.url, "token": server.credentials.token}
    )
    config = config.model_copy(update={"nats": nats_settings})
    running = await start_host(config, serve_http=False)
    publish_wasm(running.host, "echo", TESTING / "echo.wasm")
    return running


def schedule(cron: str, tz: str = "UTC", missed: str = "report") -> str:
    return (
        f'{{type: schedule, config: {{cron: "{cron}", timezone: {tz}, '
        f"input: {{text: tick}}, missed: {missed}}}}}"
    )


async def test_a_schedule_runs_the_graph_on_time_once_across_hosts(
    tmp_path: Path, nats_server: NatsServer, built: Path
) -> None:
    name = f"s{uuid.uuid4().hex[:8]}"
    text = chain_graph(name, nodes=1, triggers=[schedule("* * * * * *", "Asia/Kolkata")])
    a = await serving(tmp_path / "a", nats_server)
    b = await serving(tmp_path / "b", nats_server)
    try:
        await deploy(a, text)
        await deploy(b, text)

        def fired() -> list[str]:
            ran = a.engine.history.list_runs(graph=name) + b.engine.history.list_runs(graph=name)
            return [r.trigger_details["scheduled_for"] for r in ran]  # type: ignore[index]

        # Three fires of the every-second schedule, then both hosts stop starting
        # runs and finish the ones they started: the history is then complete.
        deadline = time.monotonic() + 60
        while len(set(fired())) < 3:
            assert time.monotonic() < deadline, fired()
            await asyncio.sleep(0.05)
        assert await a.triggers.dispatcher.drain(30) == 0
        assert await b.triggers.dispatcher.drain(30) == 0
        ran_a = a.engine.history.list_runs(graph=name)
        ran_b = b.engine.history.list_runs(graph=name)
        fires = fired()
        assert len(set(fires)) == len(fires)  # each fire ran on one host only
        assert all(r.status == "success" and r.trigger_type == "scheduled" for r in ran_a + ran_b)
        status = a.triggers.status()["schedules"][0]
        assert status["timezone"] == "Asia/Kolkata" and status["next_at"]
    finally:
        await a.aclose(5)
        await b.aclose(5)


@pytest.mark.parametrize("policy", ["report", "run_once"])
async def test_runs_missed_while_down_are_reported(
    tmp_path: Path, nats_server: NatsServer, built: Path, policy: str
) -> None:
    name = f"m{uuid.uuid4().hex[:8]}"
    # Every 10 minutes, but not in the minutes around now: no fire may come due
    # while the test runs (a run at 08:00 once made "reported" see one run).
    now = int(time.time() // 60) % 10
    cron = f"{(now + 5) % 10}-59/10 * * * *"
    host = await serving(tmp_path / "h", nats_server)
    nc = await nats.connect(nats_server.url, **nats_server.connect_options())
    try:
        missed_events = await nc.subscribe(MISSED_SUBJECT)
        # The host was last up two hours ago: twelve fires went by.
        kv = await host.triggers.durable._processed()  # type: ignore[union-attr]
        spec = ScheduleTrigger(name, cron, "UTC", '{"text": "tick"}', policy)  # type: ignore[arg-type]
        await KvState(kv).set_last(schedule_key(spec), time.time() - 7200)
        await deploy(host, chain_graph(name, nodes=1, triggers=[schedule(cron, missed=policy)]))
        event = json.loads((await missed_events.next_msg(timeout=5)).data)
        assert event["graph"] == name and event["missed_count"] in (12, 13)
        assert event["action"] == ("run_once" if policy == "run_once" else "reported")
        status = host.triggers.status()["schedules"][0]
        assert status["missed_total"] == event["missed_count"]
        metrics = host.triggers.metrics.render().decode()
        assert (
            f'ionflux_schedule_missed_total{{graph="{name}"}} {event["missed_count"]}.0' in metrics
        )
        # The deploy returned after the schedule was added (and, with run_once, its
        # late run spawned): once every run the triggers started has ended, the
        # history is complete. The schedule's own fires are minutes away.
        assert await host.triggers.dispatcher.drain(30) == 0
        ran = host.engine.history.list_runs(graph=name)
        assert len(ran) == (1 if policy == "run_once" else 0)
        if ran:
            assert ran[0].trigger_details["late"] is True  # type: ignore[index]
    finally:
        await nc.close()
        await host.aclose(5)
