"""A graph's triggers block, typed and validated; cron fire times in a time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from ionflux.triggers import (
    NatsTrigger,
    ScheduleTrigger,
    TriggerConfigError,
    fire_times,
    next_fire,
    parse_triggers,
)


def test_the_seeds_triggers_parse() -> None:
    parsed = parse_triggers(
        "reactor",
        "0.1.0",
        [
            {"type": "manual"},
            {
                "type": "event_driven",
                "config": {"event_source": "NATS", "topic": "ionflux.reactor.execute_master_plan"},
            },
            {
                "type": "webhook",
                "config": {
                    "path": "/webhooks/invoke/reactor_execute_plan",
                    "method": "POST",
                    "authentication_method": "ionwall_jwt",
                },
            },
            {"type": "schedule", "config": {"cron": "0 9 * * 1", "timezone": "Europe/Lisbon"}},
        ],
    )
    assert parsed.manual
    assert parsed.nats == (NatsTrigger("reactor", "ionflux.reactor.execute_master_plan"),)
    assert parsed.webhooks[0].path == "/webhooks/invoke/reactor_execute_plan"
    assert parsed.webhooks[0].auth == "ionwall_jwt"
    assert parsed.schedules[0].timezone == "Europe/Lisbon"
    assert parsed.completion_subject() == "ionflux.reactor.execute_master_plan.completion"


def test_durable_and_completion_topic() -> None:
    parsed = parse_triggers(
        "g",
        "1",
        [
            {
                "type": "event_driven",
                "config": {
                    "topic": "jobs.*",
                    "delivery": "jetstream",
                    "ack_wait": "2s",
                    "completion_topic": "jobs.done",
                },
            }
        ],
    )
    t = parsed.nats[0]
    assert t.durable and t.ack_wait_s == 2.0
    assert t.completion_subject("jobs.a") == "jobs.done"
    wild = parse_triggers("g", "1", [{"type": "event_driven", "config": {"topic": "jobs.*"}}])
    assert wild.nats[0].completion_subject("jobs.a") == "jobs.a.completion"
    assert wild.completion_subject() == "ionflux.graph.g.completion"


@pytest.mark.parametrize(
    ("trigger", "field"),
    [
        ({"type": "event_driven", "config": {"topic": "bad subject"}}, "triggers.0.config.topic"),
        (
            {"type": "event_driven", "config": {"topic": "a", "event_source": "kafka"}},
            "triggers.0.config.event_source",
        ),
        (
            {"type": "event_driven", "config": {"topic": "a", "delivery": "pigeon"}},
            "triggers.0.config.delivery",
        ),
        ({"type": "webhook", "config": {"path": "no-slash"}}, "triggers.0.config.path"),
        ({"type": "webhook", "config": {"path": "/graphs/x"}}, "triggers.0.config.path"),
        (
            {"type": "webhook", "config": {"path": "/x", "method": "GET"}},
            "triggers.0.config.method",
        ),
        (
            {"type": "webhook", "config": {"path": "/x", "authentication_method": "basic"}},
            "triggers.0.config.authentication_method",
        ),
        ({"type": "schedule", "config": {"cron": "every day"}}, "triggers.0.config.cron"),
        (
            {"type": "schedule", "config": {"cron": "* * * * *", "timezone": "Mars/Olympus"}},
            "triggers.0.config.timezone",
        ),
        ({"type": "carrier_pigeon"}, "triggers.0.type"),
    ],
)
def test_bad_trigger_names_graph_and_field(trigger: dict[str, object], field: str) -> None:
    with pytest.raises(TriggerConfigError) as info:
        parse_triggers("g", "1", [trigger])
    assert info.value.field == field
    assert info.value.to_dict()["graph"] == "g"


def test_fire_times_follow_the_time_zone_across_dst() -> None:
    lisbon = ZoneInfo("Europe/Lisbon")
    spec = ScheduleTrigger("g", "0 9 * * *", "Europe/Lisbon")
    # 2026-03-29: Lisbon moves from UTC+0 to UTC+1; 09:00 local stays 09:00 local.
    start = datetime(2026, 3, 28, 10, 0, tzinfo=lisbon).timestamp()
    end = datetime(2026, 3, 30, 10, 0, tzinfo=lisbon).timestamp()
    fires = [datetime.fromtimestamp(t, lisbon) for t in fire_times(spec, start, end)]
    assert [(f.day, f.hour) for f in fires] == [(29, 9), (30, 9)]
    assert fires[0].utcoffset() != datetime(2026, 3, 28, 9, tzinfo=lisbon).utcoffset()
    assert next_fire(spec, end) > end


def test_missed_fires_are_counted_not_skipped() -> None:
    spec = ScheduleTrigger("g", "*/10 * * * *")
    now = datetime(2026, 1, 1, 12, 0, 30).timestamp()
    assert len(fire_times(spec, now - 3600, now)) == 6
