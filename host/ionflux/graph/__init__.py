"""FluxGraphs: the YAML DSL of the seeds, validated, planned and run.

    engine = Engine.for_host(host)
    result = await engine.run("digest", {"text": "..."}, mode="run_all")
    result.overall_status, result.output, result.steps, result.step_results_summary_cid

The parts: ``_source`` (YAML with line numbers), ``_model`` (the DSL),
``_template`` (sandboxed templates), ``_plan`` (validation and levels),
``_scheduler`` (pure state transitions), ``_step`` (one node's policies),
``_engine`` (the driver), ``_context`` (what one run's nodes share),
``_placement`` (cost model: which nodes share a worker thread), ``_workers``
(the threads), ``_debug`` (the debugger's turn), ``_dryrun``, ``_runstate``
(the durable run as a pure state machine: answer, drive, take over or wait; what
a resume keeps), ``_durable`` (leases, recorded results), ``_history`` (runs in
SQLite), ``_repository``
(graph versions by CID), ``_recorder`` (step rows and pod values of a run),
``_seams`` (Protocols for the host, IONWALL, the debugger), ``_ionwall``
(the IONWALL authorizer).
"""

from ._context import RunTrigger
from ._engine import Engine
from ._history import RunHistory, RunRecord, SharedRunHistory, StepRecord, new_run_id, preview
from ._ionwall import IonwallAuthorizer, audit_control, control_scope
from ._model import FluxGraph, Node, Retry, SubgraphRef, Trigger
from ._native import Native, NativeCall, NativeFn
from ._plan import GraphCatalog, Plan, PlannedNode, Planner, TransformCatalog, TransformInfo
from ._recorder import RunRecorder, ValuePod
from ._repository import GraphRepository, GraphText, GraphVersion
from ._result import MODES, Mode, RunResult, StepResult
from ._runstate import Control
from ._scheduler import NodeSpec, NodeStatus, RunStatus, Scheduler
from ._schema import apply_defaults
from ._seams import (
    Authorization,
    Authorizer,
    DebugAction,
    Debugger,
    DebugPause,
    HostInvoker,
    Invoked,
    Invoker,
    NoAuthorizer,
)
from ._source import Source, parse_yaml
from ._step import ChildRunFailed
from ._template import Template, TemplateBudget, compile_value

__all__ = [
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
