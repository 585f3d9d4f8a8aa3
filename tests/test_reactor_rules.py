"""The Reactor's pure parts: alert rules (the seed's form, ``for`` held over
evaluations without a clock) and plan parsing limits and shapes."""

from __future__ import annotations

import pytest
from ionflux import AlertRuleError, PlanValidationError, ReactorLimitExceeded
from ionflux.config import ReactorSettings
from ionflux.reactor import Evaluator, parse_plan, parse_rule, plan_from_data


def test_the_seeds_rules_parse() -> None:
    rule = parse_rule(
        {
            "metric": "ionflux_controller_admin_transform_error_rate",
            "condition": "value > 0.05 for 30m",
            "severity": "critical",
            "notification_channel": "hybrid_layer_ops_pager_controller_integration_issue",
        }
    )
    assert (rule.op, rule.threshold, rule.hold_s) == (">", 0.05, 1800.0)
    labelled = parse_rule({"metric": 'run_failure_rate{graph="digest"}', "condition": "value>=1"})
    assert labelled.labels == (("graph", "digest"),) and labelled.hold_s == 0


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"metric": "x", "condition": "value > 0 for ever"}, "alert_rules[0].condition"),
        ({"metric": "x", "condition": "rate > 1"}, "alert_rules[0].condition"),
        ({"metric": "x{graph=digest}", "condition": "value > 1"}, "alert_rules[0].metric"),
        ({"metric": "x", "condition": "value > 1", "severity": "mild"}, "alert_rules[0].severity"),
        ({"metric": "x", "condition": "value > 1", "colour": "red"}, "alert_rules[0]"),
    ],
)
def test_a_bad_rule_names_its_field(rule: dict[str, object], field: str) -> None:
    with pytest.raises(AlertRuleError) as caught:
        parse_rule(rule)
    assert caught.value.field == field


def test_a_rule_fires_once_the_condition_held_for_its_duration_and_once_only() -> None:
    rule = parse_rule({"name": "r", "metric": "m", "condition": "value > 0.05 for 30m"})
    evaluator = Evaluator([rule])
    assert evaluator.step({"r": 0.1}, now=0) == []  # holds from now on
    assert evaluator.step({"r": 0.2}, now=1799) == []
    [fired] = evaluator.step({"r": 0.2}, now=1800)
    assert fired.value == 0.2 and evaluator.status() == 0.0
    assert evaluator.step({"r": 0.3}, now=2000) == []  # still firing: not again
    assert evaluator.step({"r": 0.0}, now=2100) == []  # resolved
    assert evaluator.status() == 1.0
    assert evaluator.step({"r": 0.1}, now=2200) == []  # holds again: waits its 30m again
    assert evaluator.step({"r": None}, now=9000) == []  # an unreadable metric never fires


def test_plan_limits_and_shapes() -> None:
    settings = ReactorSettings(max_plan_steps=2, max_step_retries=3, max_backoff_s=10)
    steps = [{"step_id": f"s{i}", "agent_to_call": "a"} for i in range(3)]
    with pytest.raises(ReactorLimitExceeded) as too_many:
        plan_from_data({"name": "p", "steps": steps}, settings)
    assert too_many.value.limit == "max_plan_steps"
    retry = {"strategy": "retry_with_backoff", "retries": 4}
    with pytest.raises(ReactorLimitExceeded, match="max_step_retries"):
        plan_from_data(
            {"name": "p", "steps": [{"step_id": "s", "agent_to_call": "a", "on_error": retry}]},
            settings,
        )
    slow = {"strategy": "retry_with_backoff", "retries": 1, "backoff": "1h"}
    with pytest.raises(ReactorLimitExceeded, match="max_backoff_s"):
        plan_from_data(
            {"name": "p", "steps": [{"step_id": "s", "agent_to_call": "a", "on_error": slow}]},
            settings,
        )
    with pytest.raises(PlanValidationError) as bad:
        parse_plan("name: p\nsteps:\n  - {step_id: 'bad id', agent_to_call: a}\n", settings)
    assert bad.value.problems[0]["step"] == "bad id"
    with pytest.raises(ReactorLimitExceeded, match="max_plan_bytes"):
        parse_plan("x" * 300_000, ReactorSettings())
    short = plan_from_data(
        {"name": "p", "steps": [{"step_id": "s", "agent_to_call": "a", "on_error": "skip"}]},
        settings,
    )
    assert short.steps[0].on_error.strategy == "skip"
