"""The engine: the public facade and the driver of one run.

``Engine`` owns loading graphs (validate, load, deploy), the settings and parts
a host gives it, and driving one run from its input to its result (``run``,
``_run``, ``_drive``: budget, authorization, input and output schemas, the
run's status). What a run does meanwhile lives next door, composed here:

- ``_runloop.RunLoop``: executing the nodes (tasks, lanes, groups, calls);
- ``_recording.RunRecording``: a run's start row, suspension and end;
- ``_durable_runs.DurableRuns``: accept, resume, take over, operator controls,
  waiting runs;
- ``_placement`` (cost model), ``_debug`` (debugger), ``_dryrun``, ``_runstate``
  and ``_durable`` (leases), the pure parts they use.

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
import functools
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ionwall import Masker

from .._errors import (
    ConsentRequired,
    GraphError,
    IonfluxError,
    RunNotRecorded,
    SchemaViolation,
    StateError,
    TemplateError,
)
from ..config import Config
from ._budget import RunBudget
from ._content_cache import PureCatalog
from ._context import (
    Head,
    RunContext,
    RunTrigger,
    cancelled_error,
    requested_scopes,
    run_output,
    run_scope,
    step_order,
)
from ._dryrun import dry_run
from ._durable import HealthLike, Leases
from ._durable_runs import DurableRuns, cancelled_by_operator
from ._history import RunHistory, RunRecord, SharedRunHistory, new_run_id
from ._native import Native, NativeCatalog
from ._placement import Costs
from ._plan import Plan, Planner
from ._recorder import RunRecorder, ValuePod, ValueWriter
from ._recording import RunRecording
from ._repository import GraphRepository, GraphVersion
from ._result import MODES, Mode, RunResult, StepResult
from ._runloop import RunLoop, Tasks
from ._runstate import (
    Control,
    RecordedStep,
    Resume,
    attention_error,
    resume_from,
)
from ._scheduler import RunStatus
from ._schema import check
from ._seams import (
    Authorizer,
    Debugger,
    HostInvoker,
    Invoker,
    NoAuthorizer,
)
from ._step import (
    error_dict,
)
from ._workers import Workers

if TYPE_CHECKING:
    from ..host import Host


# A run that ends sooner is written in one transaction with its steps; a longer
# one's row is written this long after it starts, so it shows as running.
_START_AFTER_S = 0.02

# Kept for callers of the engine's old names.
_Head = Head


class Engine:
    """Runs graphs for one host: ``run`` (and ``rerun``), the durable entry points
    (``accept``, ``resume``, ``orphans``, ``control``, ``wake``), a graceful stop
    (``stop``, ``release``). ``Engine.for_host`` builds one over a real host."""

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
        # Host-native transforms (``_native``): found before the registry's.
        self.natives: dict[str, Native] = {}
        self.planner = Planner(
            transforms=NativeCatalog(catalog, self.natives),
            graphs=repository,
            transform_names=dict(config.graph.transform_names),
            max_subgraph_depth=config.graph.max_subgraph_depth,
            template_budget=config.graph.template_budget(),
            document_limits=config.documents.limits(),
        )
        self._plans: dict[str, Plan] = {}
        # What each transform's calls take, moving averages of (CPU, I/O wait)
        # seconds: ``groups`` packs light and CPU-bound ones on as few threads as pay.
        self._costs: Costs = {}
        self.workers = Workers(config.graph.concurrency)
        # Operator controls (pause, cancel) of runs driven here, and their tasks in
        # flight: a step checks one dict, set by a control arriving in this process
        # or read with the leases (``Leases.on_control``).
        self._controls: dict[str, Control] = {}
        self._live: dict[str, Tasks] = {}
        self._records = RunRecording(self)
        self._loop = RunLoop(self, costs=self._costs, controls=self._controls, live=self._live)
        self._durable = DurableRuns(self, controls=self._controls, live=self._live)
        self.leases.on_control = self._durable.signal
        # Called (on the loop) with a run reopened here (resumed, retried, approved):
        # the dispatcher drives it now rather than at its next look.
        self.nudge: Callable[[str], None] | None = None

    @classmethod
    def for_host(cls, host: Host, *, authorizer: Authorizer | None = None) -> Engine:
        """The engine over a real host: its registry, its pod, history under data_dir."""
        data = host.config.data_dir
        pod: Any = host.pod
        shared = host.state  # state.backend: postgres, else None (SQLite files)
        return cls(
            host.config,
            invoker=HostInvoker(host),
            repository=GraphRepository(
                None if shared is not None else data / "graphs.sqlite3",
                pod=pod,
                document_limits=host.config.documents.limits(),
                database=shared,
            ),
            history=RunHistory(data / "runs.sqlite3")
            if shared is None
            else SharedRunHistory(shared),
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

    def register_native(self, native: Native) -> None:
        """Adds a host-native transform (``_native``); plans made before are dropped."""
        self.natives[native.info.name] = native
        self._plans.clear()

    def requested_scopes(self, plan: Plan, input: Any = None) -> list[str]:
        """The scopes a run of ``plan`` with ``input`` asks IONWALL for: its nodes'
        manifest scopes and the ``ionwall_approval_scope``s that read only the
        trigger and the system (as ``run`` asks them)."""
        scope = run_scope(plan, "", input, RunTrigger(), time.time())
        return requested_scopes(plan, scope)

    async def _run_native_child(
        self,
        ctx: RunContext,
        node_id: str,
        graph: Plan | str,
        input: Any,
        *,
        key: str,
        subject: str | None,
        details: Any,
    ) -> RunResult:
        """A run of ``graph`` started by a native node of ``ctx``'s run: a child run
        as a ``subgraph:`` node's (same budget, same per-depth slots, linked)."""
        child = self._cid_plan(graph)
        settings = self.config.graph
        if len(ctx.chain) > settings.max_subgraph_depth:
            raise GraphError(
                f"sub-run nesting deeper than graph.max_subgraph_depth "
                f"({settings.max_subgraph_depth}): {' -> '.join([*ctx.chain, child.name])}"
            )
        depth = ctx.depth + 1
        slots = ctx.subruns.setdefault(depth, asyncio.Semaphore(settings.concurrency))
        async with slots:
            exceeded = ctx.budget.exceeded
            if exceeded is not None:
                raise exceeded
            return await self._run(
                child,
                input,
                "run_all",
                RunTrigger(
                    "subgraph",
                    {
                        "parent_run_id": ctx.run_id,
                        "node_id": node_id,
                        "key": key,
                        **(details or {}),
                    },
                    subject or ctx.trigger.subject,
                ),
                None,
                depth=depth,
                chain=(*ctx.chain, child.name),
                parent=(ctx.run_id, f"{node_id}/{key}"),
                budget=ctx.budget,
                subruns=ctx.subruns,
            )

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
                return await self._durable.known(found)
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
        """Records a run as ``accepted`` before it is driven (``DurableRuns.accept``):
        the run id and None, or the id and record of the run already under
        ``run_key``. Raises ``RunNotRecorded``."""
        return self._durable.accept(
            graph_ref, input, trigger=trigger, run_key=run_key, run_id=run_id
        )

    async def resume(self, run_id: str) -> RunResult | None:
        """Resumes a run nobody drives any more (``DurableRuns.resume``); None when
        another host took it first."""
        return await self._durable.resume(run_id)

    def orphans(self) -> list[str]:
        """Runs that have not ended and that nobody drives (see ``resume``)."""
        return self._durable.orphans()

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
        """An operator's ``pause``, ``resume``, ``cancel`` or ``retry`` of a run
        (``DurableRuns.control``); returns its record after. Raises
        ``GraphNotFound`` and ``InvalidRunTransition``."""
        return self._durable.control(
            run_id, action, by=by, from_step=from_step, input=input, has_input=has_input
        )

    def wake(self) -> list[str]:
        """Reopens or ends the waiting runs whose consent or time came
        (``DurableRuns.wake``); returns the ids reopened."""
        return self._durable.wake()

    def _groups(self, heads: list[Head]) -> list[list[Head]]:
        """How ``heads`` are placed on worker threads (see ``RunLoop.groups``)."""
        return self._loop.groups(heads)

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
        drive = functools.partial(
            self._drive,
            plan,
            input,
            mode,
            trigger,
            debugger,
            depth=depth,
            chain=chain,
            parent=parent,
            run_id=run_id,
            input_checked=input_checked,
            budget=budget,
            subruns=subruns,
            run_key=run_key,
            resumed=resumed,
        )
        if depth != 0:  # a sub-run is driven (and resumed) with its parent
            return await drive()
        self.leases.hold(run_id)
        if resumed is not None and resumed[0].status == "accepted":
            forget = getattr(self.invoker, "forget", None)
            if forget is not None:
                forget(run_id)  # retried after a cancel: its calls run again
        result: RunResult | None = None
        try:
            result = await drive()
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
        *,
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
            start_row, value = self._records.start_row(
                plan,
                run_id,
                input,
                mode=mode,
                trigger=trigger,
                recorder=recorder,
                parent=parent,
                run_key=run_key,
                status="running",
                started=started,
            )
            recorder.defer_start(start_row, _START_AFTER_S)
        else:
            record, recorded = resumed
            started, value = record.start_time, record.input
            if record.status == "accepted":
                try:
                    self.history.mark_running(run_id)
                except (sqlite3.Error, StateError, OSError) as exc:
                    raise self._records.not_recorded(run_id, "that the run started", exc) from exc
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
                plan=plan,
                run_id=run_id,
                mode=mode,
                depth=depth,
                chain=chain,
                trigger=trigger,
                authorization=auth,
                scope=scope,
                debugger=debugger,
                recorder=recorder,
                budget=budget,
                subruns={} if subruns is None else subruns,
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
                status, steps = await self._loop.execute(ctx, restore.done if restore else {})
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
                self._records.finish(
                    recorder, RunStatus.CANCELLED, None, [cancelled_error()], steps, plan
                )
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
            errors.append(cancelled_by_operator())
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
            return self._records.suspend(recorder, status, errors, result, wake_at)
        return await self._records.close(recorder, status, output, errors or None, steps, result)
