"""The engine: loads graphs, runs them, records them. The thin driver around
the pure parts (``Planner``, ``Scheduler``, templates).

``await engine.run(graph_ref, input, mode=...)`` returns a ``RunResult``;
problems of the run itself (input against ``input_schema``, a failing node,
output against ``output_schema``) are in the result and the run record, not
raised. A reference that names no graph raises ``GraphNotFound``; a graph
that does not validate raises ``GraphValidationError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ionwall import CallContext, Gate, Masker

from .._errors import (
    ConsentRequired,
    GraphError,
    GraphNotFound,
    GuestError,
    InvalidRunTransition,
    IonfluxError,
    RunBudgetExceeded,
    RunLogNotStored,
    RunNotRecorded,
    SchemaViolation,
    TemplateError,
)
from ..config import Config
from ._budget import RunBudget
from ._content_cache import PureCatalog, content_key, lookup
from ._context import (
    Head,
    RunContext,
    Running,
    RunTrigger,
    cancelled_error,
    node_scope,
    requested_scopes,
    run_output,
    run_scope,
    runs_in_lane,
    step_order,
)
from ._debug import pause
from ._dryrun import dry_run
from ._durable import HISTORY, RUN_LOG, HealthLike, Leases, recorded_result
from ._history import RunHistory, RunRecord, RunRow, new_run_id
from ._placement import Costs, cost_key, groups, measure
from ._plan import Plan, PlannedNode, Planner, TransformInfo
from ._recorder import RunRecorder, ValuePod, ValueWriter, json_text
from ._repository import GraphRepository, GraphVersion
from ._result import MODES, Mode, RunResult, StepResult
from ._runstate import (
    Action,
    Control,
    Effect,
    RecordedStep,
    Resume,
    Seen,
    allowed_from,
    attention_error,
    control,
    next_action,
    resume_from,
    waits_for,
)
from ._scheduler import NodeSpec, NodeStatus, RunStatus, Scheduler
from ._schema import apply_defaults, check
from ._seams import (
    Authorizer,
    Debugger,
    HostInvoker,
    Invoker,
    NoAuthorizer,
)
from ._step import (
    Called,
    ChildRunFailed,
    Outcome,
    Rendered,
    error_dict,
    execute,
    render,
    run_once,
)
from ._workers import Workers

if TYPE_CHECKING:
    from ..host import Host


# A run that ends sooner is written in one transaction with its steps; a longer
# one's row is written this long after it starts, so it shows as running.
_START_AFTER_S = 0.02

_T = TypeVar("_T")

# A lane's node that ended, with the node the lane went on to.
_Advanced = tuple[PlannedNode, Outcome, str]
# How long a lane may run nodes before it reports them to the loop.
_LANE_REPORT_S = 0.01

# How often a request for a run another live host drives looks at its record.
_WAIT_S = 0.1

# Kept for callers of the engine's old names.
_Head = Head


class Engine:
    def __init__(
        self,
        config: Config,
        *,
        invoker: Invoker,
        repository: GraphRepository,
        history: RunHistory,
        pod: ValuePod | None = None,
        authorizer: Authorizer | None = None,
        health: HealthLike | None = None,
    ):
        self.config = config
        # Where a run history or run log that cannot be written shows (``/healthz``).
        self.health = health
        self.leases = Leases(history, config.graph.run_lease_s)
        # Set by a graceful stop: runs cancelled then are given back, not ended.
        self.stopping = False
        self.invoker = invoker
        self.repository = repository
        self.history = history
        self.pod = pod
        self._writer = ValueWriter(pod) if pod is not None else None
        self.authorizer: Authorizer = authorizer or NoAuthorizer()
        # What runs record (previews, values and run logs in the pod) is masked;
        # the values nodes pass to each other are not.
        self.masker = Masker(config.ionwall.secret_values, config.ionwall.sensitive_fields)
        history.content_cache_entries = config.graph.content_cache_entries
        # A real host's catalog tells the planner which transforms are pure (and the
        # digest of their limits), for `cache: content` nodes.
        host = getattr(invoker, "host", None)
        catalog = PureCatalog(invoker, host) if host is not None else invoker
        self.planner = Planner(
            transforms=catalog,
            graphs=repository,
            transform_names=dict(config.graph.transform_names),
            max_subgraph_depth=config.graph.max_subgraph_depth,
            template_budget=config.graph.template_budget(),
            document_limits=config.documents.limits(),
        )
        self._plans: dict[str, Plan] = {}
        # What each transform's calls take, moving averages of (CPU, I/O wait)
        # seconds: ``_groups`` packs light and CPU-bound ones on as few threads as pay.
        self._costs: Costs = {}
        self.workers = Workers(config.graph.concurrency)
        # Operator controls (pause, cancel) of runs driven here, and their tasks in
        # flight: a step checks one dict, set by a control arriving in this process
        # or read with the leases (``Leases.on_control``).
        self._controls: dict[str, Control] = {}
        self._live: dict[str, dict[asyncio.Task[Outcome | None], Running]] = {}
        self.leases.on_control = self._signal
        # Called (on the loop) with a run reopened here (resumed, retried, approved):
        # the dispatcher drives it now rather than at its next look.
        self.nudge: Callable[[str], None] | None = None

    @classmethod
    def for_host(cls, host: Host, *, authorizer: Authorizer | None = None) -> Engine:
        """The engine over a real host: its registry, its pod, history under data_dir."""
        data = host.config.data_dir
        pod: Any = host.pod
        return cls(
            host.config,
            invoker=HostInvoker(host),
            repository=GraphRepository(
                data / "graphs.sqlite3", pod=pod, document_limits=host.config.documents.limits()
            ),
            history=RunHistory(data / "runs.sqlite3"),
            pod=pod,
            authorizer=authorizer,
            health=getattr(host, "health", None),
        )

    def flush(self, timeout: float | None = None) -> None:
        """Waits until every value and run log written so far is in the pod."""
        if self._writer is not None:
            self._writer.flush(timeout)

    def close(self) -> None:
        self.leases.close()
        self.workers.close()
        if self._writer is not None:
            self._writer.close()
        self.history.close()
        self.repository.close()

    # -- graphs ------------------------------------------------------------------

    def validate(self, text: str, file: str | None = None) -> Plan:
        """Plans ``text``; raises ``GraphValidationError`` with every problem."""
        return self.planner.load(text, file)

    def load(self, ref: str) -> Plan:
        """A validated plan for a file path, deployed name, ``name@version`` or CID."""
        found = self.repository.resolve(ref)
        cached = self._plans.get(found.cid)
        if cached is not None:
            return cached
        origin = found.origin if Path(found.origin).suffix in (".yaml", ".yml") else None
        plan = self.planner.plan(self.planner.parse(found.text, origin or found.origin))
        cid = self.repository.remember(found.text, plan.name, plan.graph.version)
        plan = dataclasses.replace(plan, cid=cid)
        self._plans[found.cid] = plan
        return plan

    def deploy(self, file: Path, message: str) -> tuple[GraphVersion, bool]:
        """Validates ``file`` and appends it as a new version of its graph."""
        text = file.read_text(encoding="utf-8")
        plan = self.validate(text, str(file))
        return self.repository.deploy(text, plan.name, plan.graph.version, message)

    # -- runs --------------------------------------------------------------------

    async def run(
        self,
        graph_ref: str | Plan,
        input: Any = None,
        *,
        mode: Mode = "run_all",
        trigger: RunTrigger | None = None,
        debugger: Debugger | None = None,
        run_id: str | None = None,
        input_checked: bool = False,
        run_key: str | None = None,
    ) -> RunResult:
        """Runs a graph once; the result says how it went (see the module docstring).

        ``run_id``: the id to run under (a trigger that promised one to its caller);
        default a new ULID. ``input_checked``: the caller already checked ``input``
        (with defaults applied) against the graph's ``input_schema``. ``run_key``:
        unique in the run history (a message id, an ``Idempotency-Key``): a run
        already recorded under it is not started again; its recorded result is
        answered (or it is resumed, if nobody drives it any more)."""
        if mode not in MODES:
            raise GraphError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        if run_key is not None:
            found = self.history.find_key(run_key)
            if found is not None:
                return await self._known(found)
        plan = self._cid_plan(graph_ref)
        return await self._run(
            plan,
            input,
            mode,
            trigger or RunTrigger(),
            debugger,
            depth=0,
            chain=(plan.name,),
            run_id=run_id,
            input_checked=input_checked,
            run_key=run_key,
        )

    def _cid_plan(self, graph_ref: str | Plan) -> Plan:
        plan = graph_ref if isinstance(graph_ref, Plan) else self.load(graph_ref)
        if not plan.cid:
            text = plan.source.text
            plan = dataclasses.replace(
                plan, cid=self.repository.remember(text, plan.name, plan.graph.version)
            )
        return plan

    # -- durable runs ----------------------------------------------------------------

    def accept(
        self,
        graph_ref: str | Plan,
        input: Any,
        *,
        trigger: RunTrigger,
        run_key: str,
        run_id: str | None = None,
    ) -> tuple[str, RunRecord | None]:
        """Records a run as ``accepted`` (its input stored), committed before it
        returns: from then on the run is not lost, whoever drives it. Returns the run
        id and None; or, when a run is recorded under ``run_key`` already, its id
        and its record (nothing is written). Raises ``RunNotRecorded``."""
        plan = self._cid_plan(graph_ref)
        run_id = run_id or new_run_id()
        recorder = RunRecorder(self.history, self._writer, run_id, masker=self.masker)
        row = self._start_row(
            plan, run_id, input, "run_all", trigger, recorder, None, run_key, "accepted"
        )[0]
        try:
            found = self.history.accept(row)
        except (sqlite3.Error, OSError) as exc:
            raise self._not_recorded(run_id, "that it accepted the run", exc) from exc
        self._recorded()
        if found is not None:
            return found.run_id, found
        self.leases.keep(run_id)
        return run_id, None

    async def resume(self, run_id: str) -> RunResult | None:
        """Resumes a run nobody drives any more (its host died) from its first step
        not recorded done; None when another host took it first."""
        record = self.history.get(run_id)
        if record is None:
            return None
        if not record.ended and not self.history.claim(
            run_id, self.leases.owner, self.leases.expiry(), now=time.time()
        ):
            return None
        record = self.history.get(run_id)
        assert record is not None
        return await self._known(record)

    def orphans(self) -> list[str]:
        """Runs that have not ended and that nobody drives (see ``resume``)."""
        return [r.run_id for r in self.history.orphans(now=time.time())]

    def stop(self) -> None:
        """A graceful stop: runs cancelled from now on are given back to the run
        history (resumed by the next host) rather than recorded ``cancelled``; runs
        accepted here and not started yet are given back too."""
        self.stopping = True

    def release(self) -> None:
        """Gives back every run this process holds (after a graceful stop's drain)."""
        self.leases.close()  # renews nothing from now on
        self.leases.kept.clear()
        with contextlib.suppress(Exception):
            self.history.release_owner(self.leases.owner)

    # -- waiting runs and operator controls --------------------------------------------

    def control(
        self,
        run_id: str,
        action: Control | str,
        *,
        by: str = "owner",
        from_step: str | None = None,
        input: Any = None,
        has_input: bool = False,
    ) -> RunRecord:
        """An operator's ``pause``, ``resume``, ``cancel`` or ``retry`` of a run (by
        id or prefix); returns its record after. A run driven here is told at once;
        one driven by another host is told when that host renews its leases. Raises
        ``GraphNotFound`` and ``InvalidRunTransition`` (a status that does not allow
        it). ``retry``: from its failed steps, or ``from_step`` (a node id, or its
        1-based place in the graph) and what depends on it; ``input``: the input
        that step runs with (recorded), when ``has_input``."""
        action = Control(action)
        record = self.history.find(run_id)
        if record is None:
            raise GraphNotFound(f"no run {run_id!r} (see: ionflux runs list)")
        effect = control(action, record.status)
        if effect is None or (action is not Control.CANCEL and record.parent_run_id is not None):
            raise InvalidRunTransition(
                record.run_id, record.status, action.value, allowed_from(action)
            )
        changed = False
        if effect is Effect.SIGNAL:
            changed = self.history.request_control(record.run_id, action.value)
            if changed:
                self._signal(record.run_id, action.value)
        elif effect is Effect.END:
            changed = self.history.end(
                record.run_id,
                (record.status,),
                RunStatus.CANCELLED.value,
                [*(record.error_details or []), _cancelled_by_operator(by)],
                now=time.time(),
            )
        else:
            redo, overrides = self._redo(record, from_step, input, has_input)
            changed = self.history.reopen(
                record.run_id, (record.status,), redo=redo, overrides=overrides
            )
            if changed and self.nudge is not None:
                self.nudge(record.run_id)
        after = self.history.get(record.run_id)
        assert after is not None
        if not changed:  # its status changed meanwhile
            raise InvalidRunTransition(
                record.run_id, after.status, action.value, allowed_from(action)
            )
        return after

    def _redo(
        self, record: RunRecord, from_step: str | None, input: Any, has_input: bool
    ) -> tuple[list[str], dict[str, Any] | None]:
        """The nodes a retry runs again (the step and what depends on it) and the
        input it is given."""
        if from_step is None:
            if has_input:
                raise GraphError("--input edits the input of one step: name it with --from-step")
            return [], None
        plan = self._cid_plan(record.graph_cid)
        node = from_step
        if node not in plan.nodes and node.isdigit():
            ordered = sorted(plan.nodes, key=lambda n: plan.nodes[n].index)
            if 1 <= int(node) <= len(ordered):
                node = ordered[int(node) - 1]
        if node not in plan.nodes:
            raise GraphError(
                f"graph {plan.name} has no step {from_step!r}; its steps: {', '.join(plan.nodes)}"
            )
        redo, stack = {node}, [node]
        while stack:
            for following in plan.dependents[stack.pop()]:
                if following not in redo:
                    redo.add(following)
                    stack.append(following)
        return sorted(redo), ({node: input} if has_input else None)

    def _signal(self, run_id: str, action: str) -> None:
        """On the loop: pause or cancel a run driven here (nothing if it is not)."""
        if run_id not in self.leases.driving and run_id not in self.leases.kept:
            return
        self._controls[run_id] = Control(action)
        if action == Control.CANCEL:
            stop_calls = getattr(self.invoker, "cancel", None)
            if stop_calls is not None:
                stop_calls(run_id)  # guest calls in flight stop at their next epoch tick
        for task, running in self._live.get(run_id, {}).items():
            if action == Control.CANCEL:
                task.cancel()
            elif running.stop is not None:
                running.stop.set()  # a lane starts no next node; the one in flight ends

    def wake(self) -> list[str]:
        """Looks at the waiting runs: an ``awaiting_approval`` one whose consent was
        approved is reopened (resumed by whoever looks next), denied or expired
        (IONWALL's expiry or ``graph.approval_timeout_s``) fails; a ``waiting`` one
        whose time came is reopened. Returns the ids reopened."""
        now = time.time()
        reopened: list[str] = []
        status_of = getattr(self.authorizer, "consent_status", None)
        for record in self.history.waiting():
            due = record.wake_at is not None and record.wake_at <= now
            if record.status == RunStatus.WAITING:
                if due and self.history.reopen(record.run_id, (record.status,)):
                    reopened.append(record.run_id)
                continue
            consent = status_of(record.consent_id) if status_of and record.consent_id else None
            if status_of is None and not due:
                continue  # nobody here can tell: it waits for its expiry
            decision = waits_for(consent, expired=due)
            if decision == "resume":
                if self.history.reopen(record.run_id, (record.status,)):
                    reopened.append(record.run_id)
            elif decision is not None:
                self.history.end(
                    record.run_id,
                    (record.status,),
                    RunStatus.FAILURE.value,
                    [_approval_error(decision, record.consent_id, self.config)],
                    now=now,
                )
        return reopened

    async def _known(self, record: RunRecord) -> RunResult:
        """A run already recorded: answered, driven, taken over or waited for."""
        while True:
            seen = Seen(
                record.status,
                record.lease_owner,
                self.history.orphaned(record, now=time.time()),
            )
            action = next_action(seen, self.leases.owner)
            if action is Action.ANSWER:
                return recorded_result(self.history, record)
            driving = self.leases.driving.get(record.run_id)
            if driving is not None:
                return await asyncio.shield(driving)
            if action is Action.DRIVE:
                return await self._resume(record)
            if action is Action.TAKE_OVER and self.history.claim(
                record.run_id, self.leases.owner, self.leases.expiry(), now=time.time()
            ):
                return await self._resume(record)
            # Another live host drives it: its result lands in the history.
            await asyncio.sleep(_WAIT_S)
            found = self.history.get(record.run_id)
            assert found is not None
            record = found

    async def _resume(self, record: RunRecord) -> RunResult:
        plan = self._cid_plan(record.graph_cid)
        if record.control in (Control.PAUSE, Control.CANCEL):
            self._controls[record.run_id] = Control(record.control)
        details = dict(record.trigger_details or {})
        caller = details.get("caller")
        subject = str(caller) if caller else "local-user"
        if not caller and record.trigger_type not in ("manual", "rerun"):
            subject = "anonymous"
        recorded = [
            RecordedStep(
                s.node_id,
                s.status,
                json.loads(s.outputs_json) if s.outputs_json else None,
                s.end_time if s.status == "waiting" else None,
            )
            for s in self.history.steps(record.run_id)
        ]
        mode: Mode = record.mode if record.mode in MODES else "run_all"
        return await self._run(
            plan,
            record.input,
            mode,
            RunTrigger(record.trigger_type, details, subject),
            None,
            depth=0,
            chain=(plan.name,),
            run_id=record.run_id,
            input_checked=True,
            run_key=record.run_key,
            resumed=(record, recorded),
        )

    def _recorded(self) -> None:
        if self.health is not None:
            self.health.ok(HISTORY)

    def _not_recorded(self, run_id: str, doing: str, exc: BaseException) -> RunNotRecorded:
        reason = f"{type(exc).__name__}: {exc}"
        if self.health is not None:
            self.health.degraded(HISTORY, reason)
        return RunNotRecorded(run_id, doing, reason)

    def _start_row(
        self,
        plan: Plan,
        run_id: str,
        input: Any,
        mode: Mode,
        trigger: RunTrigger,
        recorder: RunRecorder,
        parent: tuple[str, str] | None,
        run_key: str | None,
        status: str,
        started: float | None = None,
    ) -> tuple[RunRow, Any]:
        """The run's row (not written) and its input with the schema's defaults."""
        value = apply_defaults(plan.graph.input_schema, {} if input is None else input)
        input_text = json_text(value)
        masked = recorder.masker.value(value)
        shown = input_text if masked == value else json_text(masked)
        _, input_cid = recorder.encoded(shown)
        row = self.history.start_run(
            run_id=run_id,
            graph_name=plan.name,
            graph_version=plan.graph.version,
            graph_cid=plan.cid,
            trigger_type=trigger.type,
            trigger_details=dict(trigger.details) if trigger.details else None,
            mode=mode,
            start_time=time.time() if started is None else started,
            input=value,
            input_cid=input_cid,
            parent_run_id=parent[0] if parent else None,
            parent_node_id=parent[1] if parent else None,
            input_text=input_text,
            input_shown=shown,
            write=False,
            run_key=run_key,
            lease=(self.leases.owner, self.leases.expiry()) if parent is None else None,
            status=status,
        )
        return row, value

    async def rerun(self, run_id: str, *, mode: Mode = "run_all") -> RunResult:
        """Runs a recorded run again: the same graph version and input."""
        record = self.history.find(run_id)
        if record is None:
            raise GraphError(f"no run {run_id!r}")
        trigger = RunTrigger("rerun", {"rerun_of": record.run_id, "trigger": record.trigger_type})
        return await self.run(record.graph_cid, record.input, mode=mode, trigger=trigger)

    async def _run(
        self,
        plan: Plan,
        input: Any,
        mode: Mode,
        trigger: RunTrigger,
        debugger: Debugger | None,
        *,
        depth: int,
        chain: tuple[str, ...],
        parent: tuple[str, str] | None = None,
        run_id: str | None = None,
        input_checked: bool = False,
        budget: RunBudget | None = None,
        subruns: dict[int, asyncio.Semaphore] | None = None,
        run_key: str | None = None,
        resumed: tuple[RunRecord, list[RecordedStep]] | None = None,
    ) -> RunResult:
        run_id = run_id or new_run_id()
        if depth != 0:  # a sub-run is driven (and resumed) with its parent
            return await self._drive(
                plan, input, mode, trigger, debugger, depth, chain, parent, run_id,
                input_checked, budget, subruns, run_key, resumed,
            )  # fmt: skip
        self.leases.hold(run_id)
        if resumed is not None and resumed[0].status == "accepted":
            forget = getattr(self.invoker, "forget", None)
            if forget is not None:
                forget(run_id)  # retried after a cancel: its calls run again
        result: RunResult | None = None
        try:
            result = await self._drive(
                plan, input, mode, trigger, debugger, depth, chain, parent, run_id,
                input_checked, budget, subruns, run_key, resumed,
            )  # fmt: skip
            return result
        finally:
            self._controls.pop(run_id, None)
            self.leases.let_go(run_id, result)

    async def _drive(
        self,
        plan: Plan,
        input: Any,
        mode: Mode,
        trigger: RunTrigger,
        debugger: Debugger | None,
        depth: int,
        chain: tuple[str, ...],
        parent: tuple[str, str] | None,
        run_id: str,
        input_checked: bool,
        budget: RunBudget | None,
        subruns: dict[int, asyncio.Semaphore] | None,
        run_key: str | None,
        resumed: tuple[RunRecord, list[RecordedStep]] | None,
    ) -> RunResult:
        budget = RunBudget.for_run(
            self.config.graph.max_nodes_per_run,
            self.config.graph.max_fuel_per_run,
            plan.name,
            plan.graph.budget,
            parent=budget,
        )
        recorder = RunRecorder(self.history, self._writer, run_id, masker=self.masker)
        restore: Resume | None = None
        if resumed is None:
            started = time.time()
            start_row, value = self._start_row(
                plan, run_id, input, mode, trigger, recorder, parent, run_key, "running", started
            )
            recorder.defer_start(start_row, _START_AFTER_S)
        else:
            record, recorded = resumed
            started, value = record.start_time, record.input
            if record.status == "accepted":
                try:
                    self.history.mark_running(run_id)
                except (sqlite3.Error, OSError) as exc:
                    raise self._not_recorded(run_id, "that the run started", exc) from exc
            idempotent = {n: p.node.idempotent for n, p in plan.nodes.items()}
            restore = resume_from(idempotent, recorded)
        scope = run_scope(plan, run_id, value, trigger, started)
        errors: list[dict[str, Any]] = []
        steps: dict[str, StepResult] = {}
        status = RunStatus.FAILURE
        output: Any = None
        requested: list[str] = []
        to_ask: list[str] = []
        waits: dict[str, float] = {}
        try:
            if not input_checked:
                check("input", plan.input_validator, value)
            requested = requested_scopes(plan, scope)
            auth = self.authorizer.authorize(
                subject=trigger.subject,
                graph=plan.name,
                version=plan.graph.version,
                cid=plan.cid,
                scopes=requested,
                dry_run=mode == "dry_run_validate_only",
            )
            to_ask = list(auth.missing)
            ctx = RunContext(
                plan,
                run_id,
                mode,
                depth,
                chain,
                trigger,
                auth,
                scope,
                debugger,
                recorder,
                budget,
                {} if subruns is None else subruns,
                overrides=(resumed[0].overrides or {}) if resumed is not None else {},
                waited=restore.waited if restore is not None else {},
            )
            waits = ctx.waits
            if restore is not None and restore.attention:
                status = RunStatus.NEEDS_ATTENTION
                errors.append(attention_error(restore.attention))
            elif mode == "dry_run_validate_only":
                steps = dry_run(plan, scope)
                failed = any(s.error is not None for s in steps.values())
                status = RunStatus.FAILURE if failed else RunStatus.SUCCESS
            else:
                status, steps = await self._execute(ctx, restore.done if restore else {})
            errors += [s.error for s in steps.values() if s.error is not None]
            if ctx.stopped_by is not None:
                status = RunStatus.FAILURE  # not a cancellation: the run was refused more work
                errors.append(error_dict(ctx.stopped_by))
            if status in (RunStatus.SUCCESS, RunStatus.PARTIAL) and mode != "dry_run_validate_only":
                output = run_output(plan, scope)
                check("output", plan.output_validator, output)
        except asyncio.CancelledError:
            if self.stopping and parent is None:
                # A graceful stop: the run is given back, and the next host resumes it.
                with contextlib.suppress(Exception):
                    recorder.flush()
                    self.history.release([run_id], self.leases.owner)
                raise
            with contextlib.suppress(RunNotRecorded):
                self._finish(recorder, RunStatus.CANCELLED, None, [cancelled_error()], steps, plan)
            raise
        except ConsentRequired as exc:
            status = RunStatus.FAILURE
            errors.append(error_dict(exc))
            if parent is None and mode == "run_all":
                status = RunStatus.AWAITING_APPROVAL
        except (SchemaViolation, TemplateError, IonfluxError) as exc:
            status = RunStatus.FAILURE
            errors.append(error_dict(exc))
        if status is RunStatus.CANCELLED and run_id in self._controls:
            errors.append(_cancelled_by_operator())
        ordered = [steps[n] for n in step_order(plan, steps)]
        result = RunResult(
            execution_id=run_id,
            graph_name=plan.name,
            graph_version=plan.graph.version,
            graph_cid=plan.cid,
            mode=mode,
            overall_status=status.value,
            output=output,
            steps=ordered,
            started_at=started,
            ended_at=time.time(),
            error_details=errors or None,
            fuel_used=sum(s.fuel_used for s in ordered),
            levels=[list(level) for level in plan.levels],
            requested_scopes=requested,
            scopes_to_ask=to_ask,
            parent_run_id=parent[0] if parent else None,
        )
        if status in (RunStatus.AWAITING_APPROVAL, RunStatus.PAUSED, RunStatus.WAITING):
            wake_at = min(waits.values()) if status is RunStatus.WAITING else None
            return self._suspend(recorder, status, errors, result, wake_at)
        return await self._close(recorder, status, output, errors or None, steps, result)

    def _suspend(
        self,
        recorder: RunRecorder,
        status: RunStatus,
        errors: list[dict[str, Any]],
        result: RunResult,
        wake_at: float | None = None,
    ) -> RunResult:
        """Records a run waiting (for its owner's consent, a timer, or paused), its
        lease released and its steps so far kept; nobody drives it until it is
        reopened (``wake``, an operator's resume)."""
        consent = next((e.get("consent_id") for e in errors if e.get("consent_id")), None)
        if status is RunStatus.AWAITING_APPROVAL:
            wake_at = time.time() + self.config.graph.approval_timeout_s
        try:
            suspended = self.history.suspend(
                recorder.run_id,
                status=status.value,
                error_details=errors or None,
                wake_at=wake_at,
                consent_id=consent,
                steps=recorder.take(),
                start=recorder.take_start(),
            )
        except (sqlite3.Error, OSError) as exc:
            doing = f"that the run is {status.value}"
            raise self._not_recorded(recorder.run_id, doing, exc) from exc
        self._recorded()
        if not suspended:  # another host took it over and closed it: its result stands
            record = self.history.get(recorder.run_id)
            assert record is not None
            return recorded_result(self.history, record)
        return result

    async def _close(
        self,
        recorder: RunRecorder,
        status: RunStatus,
        output: Any,
        errors: list[dict[str, Any]] | None,
        steps: dict[str, StepResult],
        result: RunResult,
    ) -> RunResult:
        """Stores the run log in the pod, then closes the run in the history, in
        that order: a run whose log could not be stored is recorded as failed
        (``RunLogNotStored``), never as a success with a CID that names nothing."""
        output_preview, output_cid = recorder.value(output)
        result = dataclasses.replace(result, output_cid=output_cid)
        log_text = recorder.run_log(result)
        summary_cid = recorder.text_cid(log_text)
        if summary_cid is not None and recorder.writer is not None:
            try:
                await asyncio.shield(
                    asyncio.wrap_future(recorder.writer.put(log_text.encode("utf-8")))
                )
            except asyncio.CancelledError:
                # Cancelled (a parent stopped) after the run's work ended: it is closed
                # as it ended, without a run log it could not wait for.
                with contextlib.suppress(Exception):
                    self.history.finish_run(
                        recorder.run_id,
                        status=status.value,
                        end_time=time.time(),
                        output_preview=output_preview,
                        output_cid=output_cid,
                        error_details=errors,
                        fuel_used=sum(s.fuel_used for s in steps.values()),
                        step_results_summary_cid=None,
                        steps=recorder.take(),
                        start=recorder.take_start(),
                        output=output,
                    )
                raise
            except Exception as exc:
                failed = RunLogNotStored(recorder.run_id, f"{type(exc).__name__}: {exc}")
                if self.health is not None:
                    self.health.degraded(RUN_LOG, str(failed))
                status, summary_cid = RunStatus.FAILURE, None
                errors = [*(errors or []), failed.to_dict()]
                output, output_preview, output_cid = None, None, None
                result = dataclasses.replace(
                    result,
                    overall_status=status.value,
                    error_details=errors,
                    output=None,
                    output_cid=None,
                )
            else:
                if self.health is not None:
                    self.health.ok(RUN_LOG)
        result = dataclasses.replace(result, step_results_summary_cid=summary_cid)
        try:
            closed = self.history.finish_run(
                recorder.run_id,
                status=status.value,
                end_time=time.time(),
                output_preview=output_preview,
                output_cid=output_cid,
                error_details=errors,
                fuel_used=sum(s.fuel_used for s in steps.values()),
                step_results_summary_cid=summary_cid,
                steps=recorder.take(),
                start=recorder.take_start(),
                output=output,
                # Refused for a missing grant: not final for its trigger (which asks
                # again later), so the run gives its key back. SEAM: awaiting_approval.
                forget_key=status is RunStatus.FAILURE
                and any(e.get("kind") == "consent_required" for e in errors or ()),
            )
        except (sqlite3.Error, OSError) as exc:
            raise self._not_recorded(recorder.run_id, "the end of the run", exc) from exc
        self._recorded()
        if not closed:  # another host took it over and closed it: its result stands
            record = self.history.get(recorder.run_id)
            assert record is not None
            return recorded_result(self.history, record)
        return result

    def _finish(
        self,
        recorder: RunRecorder,
        status: RunStatus,
        output: Any,
        errors: list[dict[str, Any]] | None,
        steps: dict[str, StepResult],
        plan: Plan,
        result: RunResult | None = None,
    ) -> RunResult:
        output_preview, output_cid = recorder.value(output)
        summary_cid = None
        if result is not None:
            result = dataclasses.replace(result, output_cid=output_cid)
            log_text = recorder.run_log(result)
            summary_cid = recorder.text_cid(log_text)
            result = dataclasses.replace(result, step_results_summary_cid=summary_cid)
        self.history.finish_run(
            recorder.run_id,
            status=status.value,
            end_time=time.time(),
            output_preview=output_preview,
            output_cid=output_cid,
            error_details=errors,
            fuel_used=sum(s.fuel_used for s in steps.values()),
            step_results_summary_cid=summary_cid,
            steps=recorder.take(),
            start=recorder.take_start(),
        )
        if summary_cid is not None:
            # Written after the run's closing transaction: the pod write's file
            # system work would otherwise slow that commit down (~0.4 ms measured).
            recorder.put_text(log_text, summary_cid)
        if result is None:
            now = time.time()
            result = RunResult(
                recorder.run_id,
                plan.name,
                plan.graph.version,
                plan.cid,
                "run_all",
                status.value,
                None,
                list(steps.values()),
                now,
                now,
                errors,
            )
        return result

    async def _execute(
        self, ctx: RunContext, done: Mapping[str, RecordedStep]
    ) -> tuple[RunStatus, dict[str, StepResult]]:
        plan = ctx.plan
        specs = {
            node_id: NodeSpec(p.deps, plan.dependents[node_id], p.node.on_error, p.index)
            for node_id, p in plan.nodes.items()
        }
        scheduler = Scheduler(specs)
        states: dict[str, dict[str, Any]] = ctx.scope["nodes"]
        steps: dict[str, StepResult] = {}
        # A resumed run: the steps recorded done keep their outputs and do not run.
        for node_id, recorded in done.items():
            planned = plan.nodes[node_id]
            scheduler.restore(node_id, NodeStatus(recorded.status))
            states[node_id].update(outputs=recorded.outputs, status=recorded.status)
            steps[node_id] = StepResult(
                node_id,
                planned.target,
                recorded.status,
                planned.level,
                outputs=recorded.outputs,
                reason="recorded done before the run was resumed",
                step_run_id=f"{ctx.run_id}.{node_id}",
            )
        tasks: dict[asyncio.Task[Outcome | None], Running] = {}
        one_at_a_time = ctx.mode == "step_through_debug"
        controls = self._controls
        if ctx.depth == 0:
            self._live[ctx.run_id] = tasks
        try:
            while not scheduler.done:
                # A sub-run that starts after the budget ran out elsewhere in the
                # tree starts nothing (each node would be refused one by one).
                self._stop_past_budget(ctx, scheduler, tasks)
                held = controls.get(ctx.run_id) if controls else None
                if held is None and ctx.waits:
                    held = Control.PAUSE  # a timer: as paused until it is due
                if held is not None:
                    # Paused or cancelled by an operator: nothing new starts; the
                    # steps in flight end (a pause) or were stopped (a cancel).
                    if not tasks:
                        break
                room = 0 if held is not None else (1 - len(tasks) if one_at_a_time else None)
                lanes: list[Head] = []
                for node_id in scheduler.ready(room) if room is None or room > 0 else []:
                    planned = plan.nodes[node_id]
                    if planned.timed and self._waits(ctx, planned, scheduler, steps):
                        continue  # left pending: the run waits, then resumes here
                    # Counted as it starts, on the loop: a wide fan-out is refused
                    # before its nodes become tasks, not when each reaches a thread.
                    try:
                        ctx.budget.start_node()
                    except RunBudgetExceeded:
                        self._stop_past_budget(ctx, scheduler, tasks)
                        break
                    scheduler.start(node_id)
                    started = await self._start(ctx, planned, scheduler, steps)
                    if isinstance(started, tuple):
                        task, running = started
                        tasks[task] = running
                    elif started is not None:
                        lanes.append(started)
                    if scheduler.aborted:
                        break
                for group in self._groups(lanes):
                    task, running = self._launch(ctx, group, scheduler, steps)
                    tasks[task] = running
                if not tasks:
                    if scheduler.done:
                        break
                    continue
                finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    running = tasks.pop(task)
                    if task.cancelled():
                        for node_id in running.unsettled(scheduler):
                            scheduler.cancelled(node_id)
                        continue
                    outcome = task.result()
                    if outcome is not None:  # None: a lane whose last node the loop refused
                        assert running.node_id is not None
                        self._settle(ctx, plan.nodes[running.node_id], outcome, scheduler, steps)
                    if scheduler.failed or scheduler.aborted:
                        for other in tasks:
                            other.cancel()
                self._stop_past_budget(ctx, scheduler, tasks)
            held = controls.get(ctx.run_id) if controls else None
            if held is Control.PAUSE and not scheduler.done and not scheduler.failed:
                return RunStatus.PAUSED, steps  # the pending nodes run when it resumes
            if held is None and ctx.waits and not scheduler.failed:
                return RunStatus.WAITING, steps
            if held is Control.CANCEL and not scheduler.done:
                scheduler.abort("cancelled by an operator")
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            scheduler.abort("the run was cancelled")
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            if ctx.depth == 0:
                self._live.pop(ctx.run_id, None)
            for node_id, status in scheduler.status.items():
                if node_id not in steps and status in (
                    NodeStatus.CANCELLED,
                    NodeStatus.SKIPPED,
                    NodeStatus.RUNNING,
                ):
                    planned = plan.nodes[node_id]
                    steps[node_id] = StepResult(
                        node_id,
                        planned.target,
                        NodeStatus.CANCELLED.value
                        if status is NodeStatus.RUNNING
                        else status.value,
                        planned.level,
                        reason=scheduler.reasons.get(node_id),
                    )
                    self._record(ctx, steps[node_id])
                    states[node_id]["status"] = steps[node_id].status
        return scheduler.run_status(), steps

    def _waits(
        self,
        ctx: RunContext,
        planned: PlannedNode,
        scheduler: Scheduler,
        steps: dict[str, StepResult],
    ) -> bool:
        """Whether a timed node is not due yet: its wake time is recorded (a step
        ``waiting``, written with the run's suspension) and the run waits for it. A
        ``until`` that is not a time fails the node."""
        now = time.time()
        wake = ctx.waited.get(planned.id)
        problem: GraphError | None = None
        if ctx.depth != 0 or ctx.mode != "run_all":
            problem = GraphError(
                f"node {planned.id!r} waits ('delay'/'until'): a timer runs only in a "
                "top-level run_all run, not in a sub-graph, a debugger or a dry run"
            )
        elif wake is None:
            try:
                wake = _wake_time(planned, node_scope(ctx, planned, 1), now)
            except (TemplateError, ValueError) as exc:
                problem = GraphError(f"node {planned.id!r}: 'until' is not a time: {exc}")
        if problem is not None or wake is None:
            scheduler.start(planned.id)
            error = error_dict(problem or GraphError("no wake time"), planned.node)
            self._settle(ctx, planned, Outcome("failure", now, now, error=error), scheduler, steps)
            return True
        if wake <= now:
            return False
        ctx.waits[planned.id] = wake
        step = StepResult(
            planned.id,
            planned.target,
            "waiting",
            planned.level,
            started_at=now,
            ended_at=wake,
            reason=f"waits until {datetime.fromtimestamp(wake, UTC).isoformat()}",
        )
        steps[planned.id] = self._record(ctx, step)
        return True

    def _stop_past_budget(
        self,
        ctx: RunContext,
        scheduler: Scheduler,
        tasks: Mapping[asyncio.Task[Outcome | None], Running],
    ) -> None:
        """Once the whole run's budget ran out (here or in any run of the tree), no
        node of this run starts: pending nodes are cancelled, running ones stopped."""
        if ctx.stopped_by is not None:
            return
        exceeded = ctx.budget.exceeded
        if exceeded is None:
            return
        ctx.stopped_by = exceeded
        scheduler.abort(f"stopped: {exceeded.budget} of the run's budget used up")
        for task in tasks:
            task.cancel()

    async def _start(
        self,
        ctx: RunContext,
        planned: PlannedNode,
        scheduler: Scheduler,
        steps: dict[str, StepResult],
    ) -> tuple[asyncio.Task[Outcome | None], Running] | Head | None:
        """Renders the node and starts it as a task, or settles it at once (skipped by
        ``if`` or by the debugger, a template that fails). A node that runs as one
        blocking call is returned as a ``Head``, for ``_groups`` to place."""
        now = time.time()
        try:
            first = render(planned, node_scope(ctx, planned, 1))
            if ctx.overrides and planned.id in ctx.overrides and first.run:
                first = dataclasses.replace(first, inputs=ctx.overrides[planned.id])
        except TemplateError as exc:
            self._settle(
                ctx,
                planned,
                Outcome("failure", now, time.time(), error=error_dict(exc, planned.node)),
                scheduler,
                steps,
            )
            return None
        if not first.run:
            self._settle(
                ctx,
                planned,
                Outcome("skipped", now, now, reason="'if' was false"),
                scheduler,
                steps,
            )
            return None
        action = await pause(ctx, planned, first, steps)
        if action == "skip":
            self._settle(
                ctx,
                planned,
                Outcome(
                    "skipped",
                    now,
                    time.time(),
                    inputs=first.inputs,
                    reason="skipped in the debugger",
                ),
                scheduler,
                steps,
            )
            return None
        if action == "abort":
            scheduler.abort("aborted in the debugger")
            scheduler.reasons[planned.id] = "aborted in the debugger"
            scheduler.cancelled(planned.id)
            return None

        if runs_in_lane(ctx, planned):
            return Head(planned, first, now)

        if not planned.node.idempotent:
            # Known to be in flight before it is called: if the host dies now, the
            # run stops in needs_attention on resume instead of calling it again.
            try:
                ctx.recorder.running(planned.id, planned.target, now)
            except (sqlite3.Error, OSError) as exc:
                doing = f"that node {planned.id!r} started"
                raise self._not_recorded(ctx.run_id, doing, exc) from exc

        async def call(inputs: Any, attempt: int) -> Called:
            if attempt > 1:
                ctx.budget.start_node()  # every retry is a node call of its own
            return await self._call(ctx, planned, inputs)

        def rerender(attempt: int) -> Rendered:
            again = render(planned, node_scope(ctx, planned, attempt))
            if ctx.overrides and planned.id in ctx.overrides and again.run:
                again = dataclasses.replace(again, inputs=ctx.overrides[planned.id])
            return again

        task: asyncio.Task[Outcome | None] = asyncio.create_task(
            execute(planned, first, rerender, call), name=planned.id
        )
        return task, Running(planned.id)

    def _groups(self, heads: list[Head]) -> list[list[Head]]:
        return groups(self._costs, heads)

    def _launch(
        self,
        ctx: RunContext,
        group: list[Head],
        scheduler: Scheduler,
        steps: dict[str, StepResult],
    ) -> tuple[asyncio.Task[Outcome | None], Running]:
        if len(group) == 1:
            (head,) = group
            running = Running(head.planned.id, threading.Event())
            lane = self._lane(
                ctx, head.planned, head.rendered, head.started, running, scheduler, steps
            )
            return asyncio.create_task(lane, name=head.planned.id), running
        members = tuple(head.planned.id for head in group)
        running = Running(None, threading.Event(), members=members)
        task = asyncio.create_task(
            self._group(ctx, group, running, scheduler, steps), name="+".join(members)
        )
        return task, running

    async def _group(
        self,
        ctx: RunContext,
        group: list[Head],
        running: Running,
        scheduler: Scheduler,
        steps: dict[str, StepResult],
    ) -> None:
        """Runs independent light nodes back to back on one worker thread and settles
        them on the loop when the last one ends."""
        stop = running.stop
        assert stop is not None

        def calls() -> list[tuple[PlannedNode, Outcome]]:
            done: list[tuple[PlannedNode, Outcome]] = []
            for head in group:
                if stop.is_set():
                    break
                call = self._blocking_call(ctx, head.planned)
                done.append(
                    (head.planned, run_once(head.planned, head.rendered, call, time.time()))
                )
            return done

        done = await self._off_loop(calls, running=running)
        for planned, outcome in done:
            if scheduler.status[planned.id] is NodeStatus.RUNNING:
                self._settle(ctx, planned, outcome, scheduler, steps)
        return None

    async def _lane(
        self,
        ctx: RunContext,
        planned: PlannedNode,
        first: Rendered,
        started: float,
        running: Running,
        scheduler: Scheduler,
        steps: dict[str, StepResult],
    ) -> Outcome | None:
        """Runs ``planned`` and then, while each node's only dependent is ready and
        needs nothing the loop does (a timeout, retries, a sub-graph, the debugger),
        that dependent, on one worker thread: a linear chain pays one hop to the
        thread, not one per node. The nodes but the last are settled on the loop
        (``_advance``) in batches: at the latest every ``_LANE_REPORT_S`` while the
        lane runs, and the rest when it ends, so a fast chain does not wake the
        loop once per node and a slow one stays observable as it goes. The last
        node's outcome is returned."""
        loop = asyncio.get_running_loop()
        stop = running.stop
        assert stop is not None
        plan = ctx.plan

        costs = self._costs

        def chain() -> tuple[str, Outcome, list[_Advanced]]:
            current, rendered, began = planned, first, started
            batch: list[_Advanced] = []
            reported = time.monotonic()
            while True:
                outcome = run_once(current, rendered, self._blocking_call(ctx, current), began)
                following = plan.successors.get(current.id)
                if outcome.status != "success" or following is None or stop.is_set():
                    return current.id, outcome, batch
                after = plan.nodes[following]
                if not runs_in_lane(ctx, after) or after.id in ctx.overrides:
                    return current.id, outcome, batch
                # The loop settles `current` later; `after` reads its outputs now.
                scope = node_scope(ctx, after, 1)
                scope["nodes"] = {
                    **scope["nodes"],
                    current.id: {"outputs": outcome.outputs, "status": "success", "error": None},
                }
                try:
                    next_rendered = render(after, scope)
                except TemplateError:
                    return current.id, outcome, batch  # the loop starts `after`, reports it
                if not next_rendered.run:
                    return current.id, outcome, batch
                try:
                    ctx.budget.start_node()
                except RunBudgetExceeded:
                    return current.id, outcome, batch  # the loop stops the run
                batch.append((current, outcome, after.id))
                now = time.monotonic()
                # Reported before a node measured slow, too: what the lane did so far
                # is recorded (and a crash does not run it again) while that one runs.
                cost = costs.get(cost_key(after))
                if now - reported >= _LANE_REPORT_S or (
                    cost is not None and cost[0] + cost[1] >= _LANE_REPORT_S
                ):
                    loop.call_soon_threadsafe(self._advance, ctx, running, batch, scheduler, steps)
                    batch, reported = [], now
                current, rendered, began = after, next_rendered, time.time()

        last, outcome, batch = await self._off_loop(chain, running=running)
        self._advance(ctx, running, batch, scheduler, steps)
        return outcome if running.node_id == last else None

    def _advance(
        self,
        ctx: RunContext,
        running: Running,
        batch: list[_Advanced],
        scheduler: Scheduler,
        steps: dict[str, StepResult],
    ) -> None:
        """On the loop: a lane's nodes ended, each followed by the next in the lane."""
        for planned, outcome, following in batch:
            if running.closed or running.node_id != planned.id:
                return  # cancelled (recorded as such), or the loop refused this node
            self._settle(ctx, planned, outcome, scheduler, steps)
            if scheduler.status[following] is NodeStatus.PENDING and not (
                scheduler.failed or scheduler.aborted
            ):
                scheduler.start(following)
                running.node_id = following
            else:
                running.node_id = None
                assert running.stop is not None
                running.stop.set()

    def _blocking_call(self, ctx: RunContext, planned: PlannedNode) -> Callable[[Any], Called]:
        transform = planned.transform
        assert transform is not None
        call_ctx = CallContext(
            subject=transform.cid,
            transform=transform.name,
            run_id=ctx.run_id,
            node_id=planned.id,
            grant_id=ctx.authorization.grant_id,
        )
        gate: Gate | None = ctx.authorization.gate

        costs, key = self._costs, cost_key(planned)
        budget = ctx.budget
        history = self.history if planned.node.cache == "content" else None
        grant_id = ctx.authorization.grant_id

        def call(inputs: Any) -> Called:
            cache_key = None
            if history is not None:  # `cache: content`: a hit makes no call, asks no gate
                cache_key = content_key(transform, inputs, grant_id, planned.node.outputs)
                if cache_key is not None:
                    hit, outputs = lookup(history, cache_key)
                    if hit:
                        return Called(outputs, 0, cached=True, cache_key=cache_key)
            # A guest computes or waits in an import: the thread's CPU time is the
            # first (the wait for the GIL is not in it), the imports' time the second.
            cpu, wait = time.thread_time(), 0.0
            try:
                done = self.invoker.invoke(transform, inputs, ctx=call_ctx, gate=gate)
                wait = done.wait_s
            except GuestError as exc:  # a failed call burnt fuel too (all of it, if exhausted)
                with contextlib.suppress(RunBudgetExceeded):
                    budget.spend_fuel(getattr(exc, "fuel_used", 0) or 0)
                raise
            finally:  # a failed call is measured too, as all compute
                measure(costs, key, time.thread_time() - cpu, wait)
            budget.spend_fuel(done.fuel_used)
            return Called(done.value, done.fuel_used, cache_key=cache_key)

        return call

    async def _call(self, ctx: RunContext, planned: PlannedNode, inputs: Any) -> Called:
        if planned.transform is not None:
            return await self._call_transform(ctx, planned, planned.transform, inputs)
        assert planned.subgraph is not None
        ref = planned.subgraph
        if len(ctx.chain) > self.config.graph.max_subgraph_depth:
            raise GraphError(
                f"sub-graph nesting deeper than graph.max_subgraph_depth "
                f"({self.config.graph.max_subgraph_depth}): {' -> '.join([*ctx.chain, ref.name])}"
            )
        if ref.name in ctx.chain:
            raise GraphError("sub-graph cycle refused: " + " -> ".join([*ctx.chain, ref.name]))
        child = self.load(f"{ref.name}@{ref.version}" if ref.version else ref.name)
        # A fan-out through sub-graphs would start every child run at once (40 x 40
        # is 1,600 runs, each recorded), and the loop would serve nothing else
        # meanwhile: at most graph.concurrency runs per depth of one tree are in
        # flight. One semaphore per depth: a parent waits on its children's, never
        # on its own, so nothing waits on itself.
        depth = ctx.depth + 1
        slots = ctx.subruns.setdefault(depth, asyncio.Semaphore(self.config.graph.concurrency))
        async with slots:
            exceeded = ctx.budget.exceeded
            if exceeded is not None:  # ran out while this call waited: start nothing
                raise exceeded
            result = await self._run(
                child,
                inputs,
                ctx.mode,
                RunTrigger(
                    "subgraph",
                    {"parent_run_id": ctx.run_id, "node_id": planned.id},
                    ctx.trigger.subject,
                ),
                ctx.debugger,
                depth=depth,
                chain=(*ctx.chain, ref.name),
                parent=(ctx.run_id, planned.id),
                budget=ctx.budget,
                subruns=ctx.subruns,
            )
        if result.overall_status not in (RunStatus.SUCCESS, RunStatus.PARTIAL):
            raise ChildRunFailed(result.execution_id, result.overall_status, result.error_details)
        return Called(result.output, result.fuel_used, result.execution_id)

    async def _call_transform(
        self, ctx: RunContext, planned: PlannedNode, transform: TransformInfo, inputs: Any
    ) -> Called:
        return await self._off_loop(self._blocking_call(ctx, planned), inputs)

    async def _off_loop(
        self, fn: Callable[..., _T], *args: Any, running: Running | None = None
    ) -> _T:
        return await self.workers.off_loop(fn, *args, running=running)

    def _settle(
        self,
        ctx: RunContext,
        planned: PlannedNode,
        outcome: Outcome,
        scheduler: Scheduler,
        steps: dict[str, StepResult],
    ) -> None:
        node_id = planned.id
        if outcome.status == "success":
            scheduler.succeed(node_id)
        elif outcome.status == "skipped":
            scheduler.skip(node_id, outcome.reason or "skipped")
        else:
            scheduler.fail(node_id)
        state = ctx.scope["nodes"][node_id]
        state["status"] = outcome.status
        state["outputs"] = outcome.outputs
        state["error"] = outcome.error
        step = StepResult(
            node_id=node_id,
            target=planned.target,
            status=outcome.status,
            level=planned.level,
            started_at=outcome.started_at,
            ended_at=outcome.ended_at,
            attempts=outcome.attempts,
            inputs=outcome.inputs,
            outputs=outcome.outputs,
            error=outcome.error,
            reason=outcome.reason,
            fuel_used=outcome.fuel_used,
            child_run_id=outcome.child_run_id,
            cached=outcome.cached,
            cache_key=outcome.cache_key,
        )
        steps[node_id] = self._record(ctx, step, durable=not planned.node.idempotent)

    def _record(self, ctx: RunContext, step: StepResult, *, durable: bool = False) -> StepResult:
        return ctx.recorder.step(step, durable=durable)


def _cancelled_by_operator(by: str = "an operator") -> dict[str, Any]:
    return {"kind": "cancelled", "message": f"the run was cancelled by {by}"}


def _approval_error(decision: str, consent_id: str | None, config: Config) -> dict[str, Any]:
    if decision == "denied":
        return {
            "kind": "consent_denied",
            "message": f"consent {consent_id} was denied: the run does not go on",
            "consent_id": consent_id,
        }
    return {
        "kind": "approval_expired",
        "message": f"consent {consent_id} was not approved in time (graph.approval_timeout_s "
        f"is {config.graph.approval_timeout_s:g} s, or IONWALL expired the request); run it "
        "again to ask anew",
        "consent_id": consent_id,
    }


def _wake_time(planned: PlannedNode, scope: dict[str, Any], now: float) -> float:
    """When a timed node is due: ``delay`` after ``now``, or its ``until`` (ISO 8601;
    without a zone, UTC)."""
    if planned.node.delay is not None:
        return now + planned.node.delay
    assert planned.wake is not None
    value = planned.wake.render(scope)
    if isinstance(value, datetime):
        when = value
    else:
        when = datetime.fromisoformat(str(value).strip())
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
