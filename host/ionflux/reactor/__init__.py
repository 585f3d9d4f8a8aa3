"""The ION Reactor (seed 000): master plans that really run, agents with a
lifecycle, health rules that act.

    from ionflux.reactor import Reactor
    reactor = Reactor(engine, wall=wall)   # a serving host has one: running.reactor
    cid, plan = reactor.put_plan(text)                   # a master plan, into IONPOD
    reactor.consent_for(cid).text()                      # the ONE prompt, in the seed's words
    result = await reactor.run_plan(cid, {"title": "t"}) # a run of ion_reactor_execute_master_plan
    await reactor.agents.manage("retire", agent_id="digest")
    reactor.agents.summaries(); reactor.agents.history("digest")
    await reactor.evaluate()        # alert rules; those firing -> ionflux.system.critical_alert

The parts: ``_plans`` (the plan format and its validation), ``_executor`` (runs a
plan's steps as child runs, with their error strategies), ``_consent`` (one
consent per plan, the authorizer holding its grant), ``_agents`` (definitions and
the lifecycle), ``_health`` (alert rules, host metrics), ``_metrics`` (the seed's
metric names), ``_store`` (the index of plans, agent versions, confirmations),
``_reactor`` (the facade and the host-native nodes).
"""

from ._agents import OPERATIONS, AgentDefinition, Agents
from ._consent import PlanAuthorizer, PlanConsent
from ._executor import Execution, StepLog
from ._health import ALERT_SUBJECT, AlertRule, Evaluator, RuleState, parse_rule
from ._metrics import ReactorMetrics
from ._plans import Checked, MasterPlan, OnError, Step, parse_plan, plan_from_data, validate
from ._reactor import (
    ADMIN,
    EXECUTE_GRAPH,
    EXECUTOR,
    GRAPHS,
    GRAPHS_DIR,
    HEALTH_CHECK,
    HEALTH_GRAPH,
    MANAGE_GRAPH,
    Reactor,
)
from ._store import AgentVersion, Confirmation, ReactorStore

__all__ = [
    "ADMIN",
    "ALERT_SUBJECT",
    "EXECUTE_GRAPH",
    "EXECUTOR",
    "GRAPHS",
    "GRAPHS_DIR",
    "HEALTH_CHECK",
    "HEALTH_GRAPH",
    "MANAGE_GRAPH",
    "OPERATIONS",
    "AgentDefinition",
    "AgentVersion",
    "Agents",
    "AlertRule",
    "Checked",
    "Confirmation",
    "Evaluator",
    "Execution",
    "MasterPlan",
    "OnError",
    "PlanAuthorizer",
    "PlanConsent",
    "Reactor",
    "ReactorMetrics",
    "ReactorStore",
    "RuleState",
    "Step",
    "StepLog",
    "parse_plan",
    "parse_rule",
    "plan_from_data",
    "validate",
]
