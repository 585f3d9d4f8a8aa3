"""``Reactor``: the ION Reactor over one engine: master plans, agents, health rules.

    reactor = Reactor(engine, wall=wall, config=config)      # the CLI, a test
    reactor = await Reactor.serve(running_host)              # a serving host
    cid, plan = reactor.put_plan(Path("graphs/plans/daily_digest.yaml").read_text())
    result = await reactor.run_plan("daily_digest", {"title": "t"})

A plan runs as a run of the seed's graph ``ion_reactor_execute_master_plan``
(graphs/): fetch the plan from IONPOD, the executor node (the host-native
``master-plan-executor``, ``_executor``) runs its steps as child runs, the step
log is stored in IONPOD and the completion event published. The graph's run
asks IONWALL once for the plan (``_consent``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ionwall import Ionwall

from .._errors import (
    GraphNotFound,
    InvalidAgentTransition,
    IonfluxError,
    NotFound,
    PlanNotFound,
    ReactorLimitExceeded,
)
from ..config import Config
from ..graph import Engine, Native, NativeCall, Plan, RunResult, RunTrigger, TransformInfo
from ._agents import Agents
from ._consent import PlanAuthorizer, PlanConsent, install
from ._executor import Executor, StepLog
from ._health import ALERT_SUBJECT, AlertRule, Evaluator, Firing, HostMetrics, parse_rule
from ._metrics import ReactorMetrics
from ._plans import Checked, MasterPlan, parse_plan, plan_bytes, plan_from_data, validate
from ._store import Confirmation, ReactorStore

if TYPE_CHECKING:
    from ..state import PgDatabase
    from ..triggers import TriggerService

log = logging.getLogger("ionflux.reactor")

GRAPHS_DIR = Path(__file__).resolve().parents[3] / "graphs"
EXECUTE_GRAPH = "ion_reactor_execute_master_plan"
MANAGE_GRAPH = "ion_reactor_manage_agent_lifecycle"
HEALTH_GRAPH = "ion_reactor_monitor_system_health"
GRAPHS = (EXECUTE_GRAPH, MANAGE_GRAPH, HEALTH_GRAPH)
EXECUTOR = "master-plan-executor"
ADMIN = "reactor-agent-admin"
HEALTH_CHECK = "reactor-health-check"
COMPLETION = "reactor-plan-completion"
COMPLETION_SUBJECT = "ionflux.reactor.execute_master_plan.completion"
HEALTH = "reactor_health"  # the trigger type of a plan an alert rule started
HEALTH_LEASE = "health"  # the lease of the host evaluating a cluster's alert rules


def _native_info(name: str) -> TransformInfo:
    return TransformInfo(
        name=name, version="1.0.0", cid=f"native:{name}", fingerprint=f"native:{name}"
    )


class Reactor:
    def __init__(
        self,
        engine: Engine,
        *,
        config: Config | None = None,
        wall: Ionwall | None = None,
        triggers: TriggerService | None = None,
        bus: Any = None,
        local_files: bool = False,
        database: PgDatabase | None = None,
    ) -> None:
        self.engine = engine
        # Plans and agents named by a file path on this machine (the CLI, a test):
        # never for a serving host, where a caller names plans and agents remotely.
        self.local_files = local_files
        self.config = config or engine.config
        self.wall = wall
        self.triggers = triggers
        self.bus = bus
        # The host's state database (state.backend: postgres): the cluster's tables.
        if database is None:
            database = getattr(getattr(engine.invoker, "host", None), "state", None)
        self.store = ReactorStore(
            None if database is not None else self.config.data_dir / "reactor.sqlite3",
            database=database,
        )
        # Who this Reactor is to the other hosts (the health lease's holder).
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        registry = triggers.metrics.registry if triggers is not None else None
        self.metrics = ReactorMetrics(registry)
        engine.register_native(Native(_native_info(EXECUTOR), self._execute))
        engine.register_native(Native(_native_info(ADMIN), self._admin))
        engine.register_native(Native(_native_info(HEALTH_CHECK), self._health_check))
        engine.register_native(Native(_native_info(COMPLETION), self._completion))
        self.authorizer: PlanAuthorizer | None = None
        if wall is not None:
            self.authorizer = install(
                engine, lambda inner: PlanAuthorizer(inner, wall, self.consent_for, {EXECUTE_GRAPH})
            )
            self.authorizer.refused = self._refused
        self.agents = Agents(self)
        if triggers is not None:
            original = triggers.deployed
            triggers.deployed = lambda: [
                g for g in original() if g.graph not in self.agents.stopped
            ]
        self.rules: list[AlertRule] = self._rules(self.config.reactor.alert_rules)
        self.evaluator = Evaluator(self.rules)
        registries = [self.metrics.registry]
        if triggers is not None and triggers.metrics.registry is not self.metrics.registry:
            registries.append(triggers.metrics.registry)
        self.host_metrics = HostMetrics(engine, registries, time.time)
        self.alerts: list[dict[str, Any]] = []  # what fired, newest last (kept 100)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._evaluates = True  # the alert rules are evaluated by this process

    @classmethod
    async def serve(
        cls,
        engine: Engine,
        *,
        config: Config,
        wall: Ionwall,
        triggers: TriggerService,
        bus: Any,
        health: bool = True,
    ) -> Reactor:
        """The Reactor of a serving host (``http.start_host``): its metrics on
        /metrics, health rules evaluated every ``reactor.health_interval_s``. Its
        graphs are deployed by ``ensure_graphs`` (``ionflux plan``/``agent``, the
        first plan run), not here: a host serves only what its owner deployed.
        ``health``: evaluate the alert rules here (one process of a group of
        workers does, as one runs the schedules: an alert fires once)."""
        reactor = cls(engine, config=config, wall=wall, triggers=triggers, bus=bus)
        await reactor.sync()  # a retired agent's triggers stay off
        reactor._evaluates = health
        if reactor.config.reactor.health_interval_s > 0:
            reactor._loop = asyncio.get_running_loop().create_task(reactor._watch())
        return reactor

    async def aclose(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.store.shared:  # another host evaluates the rules from now on
            with contextlib.suppress(IonfluxError):
                await asyncio.to_thread(self.store.release_lease, HEALTH_LEASE, self.holder)
        self.store.close()

    def close(self) -> None:
        self.store.close()

    async def sync(self) -> None:
        if self.triggers is not None:
            await self.triggers.sync()

    def schedule_sync(self) -> None:
        if self.triggers is None:
            return
        with contextlib.suppress(RuntimeError):
            self._spawn(self.sync())

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def ensure_graphs(self, directory: Path | None = None) -> list[str]:
        """Deploys the three Reactor graphs (graphs/ion_reactor_*.yaml) when the
        latest deployed version is not the file's; returns those deployed."""
        folder = directory or GRAPHS_DIR
        done = []
        for name in GRAPHS:
            path = folder / f"{name}.yaml"
            if not path.is_file():
                continue
            text = path.read_text(encoding="utf-8")
            latest = self.engine.repository.latest(name)
            if latest is not None and self.engine.repository.text(latest.cid) == text:
                continue
            self.engine.deploy(path, "ION Reactor")
            done.append(name)
        return done

    # -- plans -----------------------------------------------------------------------

    def put_plan(self, data: str | bytes | dict[str, Any]) -> tuple[str, MasterPlan]:
        """Validates a plan's shape, stores it in IONPOD (canonical JSON) and names
        it; returns its CID. Agents are checked when it is validated or run."""
        settings = self.config.reactor
        plan = (
            plan_from_data(data, settings) if isinstance(data, dict) else parse_plan(data, settings)
        )
        cid = self._pod().put_bytes(plan_bytes(plan))
        self.store.name_plan(plan.name, cid, plan.version)
        return cid, plan

    def resolve_plan(self, ref: str) -> tuple[str, MasterPlan]:
        """A plan by name or CID (or, with ``local_files``, a file path: stored first)."""
        path = Path(ref)
        if self.local_files and ref.endswith((".yaml", ".yml", ".json")) and path.is_file():
            if path.stat().st_size > self.config.reactor.max_plan_bytes:
                raise ReactorLimitExceeded("max_plan_bytes", f"{ref} is too large")
            return self.put_plan(path.read_bytes())
        cid = self.store.plan_cid(ref) or ref
        return cid, self.plan_at(cid)

    def plan_at(self, cid: str) -> MasterPlan:
        try:
            data = self._pod().get_bytes(cid, max_size=self.config.reactor.max_plan_bytes)
        except (NotFound, IonfluxError) as exc:
            raise PlanNotFound(
                f"no master plan {cid!r} (not a plan name or a CID in IONPOD): {exc}"
            ) from None
        return parse_plan(data, self.config.reactor, cid)

    def check_plan(self, plan: MasterPlan) -> Checked:
        """Validates ``plan`` against the deployed agents (``_plans.validate``)."""
        return validate(plan, self._agent, self.engine.requested_scopes)

    def _agent(self, ref: str) -> Plan:
        if not self.local_files and (
            ref.endswith((".yaml", ".yml")) or "/" in ref or ref.startswith(".")
        ):
            raise GraphNotFound(f"{ref!r}: an agent is a deployed graph (name, name@version, CID)")
        name = ref.partition("@")[0]
        if name in self.agents.stopped:
            raise InvalidAgentTransition(f"agent {name!r} is retired")
        try:
            return self.engine.load(ref)
        except GraphNotFound as exc:
            raise GraphNotFound(str(exc).split(" (graphs:")[0]) from None

    def _refused(self, graph: str) -> str | None:
        return "retired" if graph in self.agents.stopped else None

    def consent_for(self, plan_cid: str, graph_scopes: Sequence[str] = ()) -> PlanConsent:
        """What running plan ``plan_cid`` asks the owner, in the seed's words: the
        plan's agents (its alternative plans' too) and the union of their scopes."""
        plan = self.plan_at(plan_cid)
        checked = self.check_plan(plan)
        agents = [checked.agents[s.step_id].name for s in plan.steps]
        scopes = set(checked.scopes)
        todo = list(checked.alternatives.values())
        seen: set[str] = set()
        while todo and len(seen) < 32:
            ref = todo.pop()
            if ref in seen:
                continue
            seen.add(ref)
            _, alt = self.resolve_plan(ref)
            alt_checked = self.check_plan(alt)
            scopes |= set(alt_checked.scopes)
            agents += [alt_checked.agents[s.step_id].name for s in alt.steps]
            todo += list(alt_checked.alternatives.values())
        return PlanConsent(
            plan_name=plan.name,
            plan_cid=plan_cid,
            version=plan.version,
            agents=tuple(dict.fromkeys(agents)),
            agent_scopes=tuple(sorted(scopes)),
            scopes=tuple(sorted(scopes | set(graph_scopes))),
        )

    def consent_text(self, consent_id: str) -> str | None:
        """The seed's prompt for a pending plan consent (None for other consents)."""
        if self.wall is None:
            return None
        request = self.wall.consent(consent_id)
        if not request.transform.startswith("ION Reactor Agent: Master Plan"):
            return None
        return self.consent_for(request.subject, request.scopes).text(consent_id)

    async def run_plan(
        self,
        ref: str,
        parameters: Any = None,
        *,
        mode: str = "run_all",
        subject: str = "local-user",
        trigger: str = "manual",
    ) -> RunResult:
        """Runs a plan (path, name or CID) as a run of the execute-master-plan graph."""
        cid, _ = self.resolve_plan(ref)
        params_cid = None
        if parameters is not None:
            params_cid = self._pod().put_bytes(json.dumps(parameters, sort_keys=True).encode())
        value = {"master_plan_cid": cid, "plan_parameters_cid": params_cid, "execution_mode": mode}
        if self.engine.repository.latest(EXECUTE_GRAPH) is None:
            self.ensure_graphs()
        if self.triggers is not None and mode == "run_all":
            from ..triggers import RunRequest

            request = RunRequest(
                graph=EXECUTE_GRAPH,
                input=value,
                trigger=trigger,
                completion_subject=self.triggers.completion_subject(EXECUTE_GRAPH),
                details={"caller": subject, "reactor": True},
            )
            done = await self.triggers.dispatcher.run(request)
            return done  # type: ignore[return-value]  # the engine's RunResult
        return await self.engine.run(
            EXECUTE_GRAPH,
            value,
            mode=mode,  # type: ignore[arg-type]
            trigger=RunTrigger(trigger, {"caller": subject, "reactor": True}, subject),
        )

    async def _execute(self, call: NativeCall, inputs: Any) -> Any:
        """The host-native ``master-plan-executor`` (the seed's
        MasterPlanExecutor_Transform_IONFLUXController)."""
        if not isinstance(inputs, dict) or not isinstance(inputs.get("plan_definition"), dict):
            raise PlanNotFound("the executor needs plan_definition (the fetched plan object)")
        cid = str(inputs.get("master_plan_cid") or "")
        if self.wall is not None:
            call.check(f"execute_master_plan:{cid}")
        plan = plan_from_data(inputs["plan_definition"], self.config.reactor, cid)
        checked = self.check_plan(plan)
        subject = None
        if self.authorizer is not None and call.grant_id is not None:
            agent_scopes = self.consent_for(cid).agent_scopes
            subject = self.authorizer.bind(call.grant_id, agent_scopes)
        started = time.time()

        async def alternative(ref: str) -> tuple[str, Checked]:
            alt_cid, alt = self.resolve_plan(ref)
            return alt_cid, self.check_plan(alt)

        def stepped(step: StepLog) -> None:
            log.info("plan %s step %s: %s", plan.name, step.step_id, step.status)

        executor = Executor(
            call,
            subject or call.subject,
            alternative=alternative,
            max_alternative_depth=self.config.reactor.max_alternative_depth,
            max_backoff_s=self.config.reactor.max_backoff_s,
            mask=self.engine.masker.value,
            on_step=stepped,
        )
        try:
            run = await executor.execute(checked, cid, inputs.get("runtime_parameters"))
        finally:
            if subject is not None and self.authorizer is not None:
                self.authorizer.unbind(subject)
        self.metrics.plan_done(run.status, (time.time() - started) * 1000, len(plan.steps))
        # Stored in IONPOD and published: masked as every run record is.
        mask = self.engine.masker.value
        return {
            "overall_plan_execution_status": run.status,
            "step_results_log_obj": mask(run.log()),
            "plan_error_details_array": mask(run.errors) if run.errors else None,
            "execution_id": call.run_id,
        }

    async def _completion(self, call: NativeCall, inputs: Any) -> Any:
        """Publishes the plan's completion event (the seed's message) on the seed's
        subject, which only the host may publish (it ends in ``.completion``)."""
        message = inputs.get("message") if isinstance(inputs, dict) else None
        if not isinstance(message, dict):
            raise PlanNotFound("reactor-plan-completion needs a message object")
        if self.wall is not None:
            call.check(f"publish_nats_topic:{COMPLETION_SUBJECT}")
        published = await self._publish(COMPLETION_SUBJECT, message)
        return {"published": published, "topic": COMPLETION_SUBJECT}

    # -- agents (the seed's IONFLUXController_Admin_Transform) ---------------------------

    async def _admin(self, call: NativeCall, inputs: Any) -> Any:
        if not isinstance(inputs, dict):
            raise InvalidAgentTransition("manage_agent needs an object input")
        operation = str(inputs.get("operation") or "")
        cid = inputs.get("agent_definition_cid") or None
        agent = inputs.get("agent_id_to_update_or_retire") or None
        name = agent
        if name is None and cid:
            definition = self.agents.definition(str(cid))
            name = self.engine.validate(self.agents.graph_text(definition)).name
        if name is None:
            raise InvalidAgentTransition(f"{operation} names no agent")
        if self.wall is not None:
            call.check(f"manage_agent_lifecycle:{name}")
        shown = await self.agents.manage(
            operation,
            agent_definition_cid=str(cid) if cid else None,
            agent_id=str(agent) if agent else None,
            by=f"run {call.run_id}",
        )
        return {"agent": shown}

    # -- health ------------------------------------------------------------------------

    def _rules(self, raw: list[dict[str, Any]]) -> list[AlertRule]:
        if len(raw) > self.config.reactor.max_alert_rules:
            raise ReactorLimitExceeded("max_alert_rules", f"{len(raw)} alert rules")
        return [parse_rule(r, i) for i, r in enumerate(raw)]

    def add_rule(self, raw: dict[str, Any]) -> AlertRule:
        if len(self.rules) >= self.config.reactor.max_alert_rules:
            raise ReactorLimitExceeded("max_alert_rules", "one alert rule more")
        rule = parse_rule(raw, len(self.rules))
        self.rules.append(rule)
        return rule

    async def _health_check(self, call: NativeCall, inputs: Any) -> Any:
        fired = await self.evaluate()
        return {
            "system_health_status_current": self.evaluator.status(),
            "fired": [f["rule"]["name"] for f in fired],
            "rules": self.health(),
        }

    def health(self) -> list[dict[str, Any]]:
        out = []
        for rule in self.rules:
            state = self.evaluator.states.get(rule.name)
            out.append(
                {
                    **rule.to_dict(),
                    "firing": bool(state and state.firing),
                    "value": state.last_value if state else None,
                    "fired": state.fired if state else 0,
                }
            )
        return out

    async def evaluate(self) -> list[dict[str, Any]]:
        """One evaluation of every rule; acts on those that fire; returns the alerts.
        In a cluster only the holder of the health lease evaluates (another host
        takes it once it lapses), from the rules' shared states."""
        self.agents.poll()
        if self.store.shared:
            return await self._evaluate_shared()
        values = self._values()
        now = time.time()
        fired = self.evaluator.step(values, now)
        self.metrics.health.set(self.evaluator.status())
        alerts = [await self._act(f) for f in fired]
        return alerts

    def _values(self) -> dict[str, float | None]:
        values: dict[str, float | None] = {}
        for rule in self.rules:
            try:
                values[rule.name] = self.host_metrics.value(rule)
            except Exception as exc:  # a metric that cannot be read does not fire
                log.warning("alert rule %s: cannot read %s: %s", rule.name, rule.metric, exc)
                values[rule.name] = None
        return values

    async def _evaluate_shared(self) -> list[dict[str, Any]]:
        # The lease outlives three missed evaluations: a host that died (or hangs)
        # is replaced after that; one that stops gives it up (aclose).
        ttl = max(3 * self.config.reactor.health_interval_s, 1.0)
        leads = await asyncio.to_thread(self.store.take_lease, HEALTH_LEASE, self.holder, ttl)
        saved = await asyncio.to_thread(self.store.rule_states)
        self.evaluator.load({name: state for name, (state, _, _) in saved.items()})
        if not leads:
            self.metrics.health.set(self.evaluator.status())
            return []
        before = {rule.name: self.evaluator.states[rule.name].fired for rule in self.rules}
        fired = self.evaluator.step(self._values(), time.time())
        # A rule's fire count moves by compare-and-set: of two hosts that both
        # thought they held the lease (one paused past it), one records the firing.
        states = [(r.name, self.evaluator.states[r.name], before[r.name]) for r in self.rules]
        won = await asyncio.to_thread(self.store.save_rule_states, states, self.holder)
        lost = [f for f in fired if f.rule.name not in won]
        if lost:
            log.info("alert rule(s) %s recorded by another host", [f.rule.name for f in lost])
            again = await asyncio.to_thread(self.store.rule_states)
            self.evaluator.load({name: state for name, (state, _, _) in again.items()})
        self.metrics.health.set(self.evaluator.status())
        return [await self._act(f) for f in fired if f.rule.name in won]

    async def _act(self, firing: Firing) -> dict[str, Any]:
        rule = firing.rule
        alert: dict[str, Any] = {
            "alert_id": f"al_{secrets.token_hex(8)}",
            "rule": rule.to_dict(),
            "value": firing.value,
            "severity": rule.severity,
            "notification_channel": rule.notification_channel,
            "fired_at": firing.at,
            "emergency_plan": rule.emergency_plan,
            "action": None,
            "confirmation_id": None,
        }
        if rule.emergency_plan is not None:
            try:
                _, plan = self.resolve_plan(rule.emergency_plan)
                if plan.drastic and not rule.pre_authorized:
                    confirmation = self.store.add_confirmation(
                        f"cf_{secrets.token_hex(8)}",
                        rule.name,
                        rule.emergency_plan,
                        f"{rule.metric} = {firing.value:g} ({rule.condition})",
                    )
                    alert["action"] = "awaiting_confirmation"
                    alert["confirmation_id"] = confirmation.id
                else:
                    # Its run ends with the plan's own completion event.
                    alert["action"] = "emergency_plan_started"
                    self._spawn(
                        self.run_plan(rule.emergency_plan, subject="ion-reactor", trigger=HEALTH)
                    )
            except IonfluxError as exc:
                alert["action"] = "emergency_plan_refused"
                alert["error"] = exc.to_dict()
        self.metrics.responded.inc()
        self.alerts = [*self.alerts[-99:], alert]
        await self._publish(ALERT_SUBJECT, alert)
        return alert

    def confirmations(self, status: str | None = None) -> list[Confirmation]:
        return self.store.confirmations(status)

    async def confirm(self, confirmation_id: str, *, by: str = "owner") -> RunResult:
        """A person confirms a drastic emergency plan: it runs now (its own plan
        consent still applies)."""
        found = self.store.confirmation(confirmation_id)
        if found is None or found.status != "pending":
            raise InvalidAgentTransition(
                f"no pending confirmation {confirmation_id!r}"
                + (f" (it is {found.status})" if found else "")
            )
        self.store.answer_confirmation(confirmation_id, "confirmed")
        result = await self.run_plan(found.plan, subject=by, trigger=HEALTH)
        self.store.set_confirmation_run(confirmation_id, result.execution_id)
        return result

    def refuse(self, confirmation_id: str) -> None:
        if not self.store.answer_confirmation(confirmation_id, "refused"):
            raise InvalidAgentTransition(f"no pending confirmation {confirmation_id!r}")

    async def _publish(self, subject: str, value: dict[str, Any]) -> bool:
        nc = getattr(self.bus, "nc", None)
        if nc is None:
            return False
        try:
            await nc.publish(subject, json.dumps(value, default=str).encode())
        except Exception as exc:  # no bus: the alert is still kept and counted
            log.warning("cannot publish %s: %s", subject, exc)
            return False
        return True

    async def _watch(self) -> None:
        every = self.config.reactor.health_interval_s
        synced = self.agents.stopped
        while True:
            await asyncio.sleep(every)
            try:
                if self.agents.stopped != synced:  # retired by another process
                    synced = self.agents.stopped
                    await self.sync()
                if self._evaluates:
                    await self.evaluate()
                else:
                    self.agents.poll()
                    if self.store.shared:  # the cluster's rule states, for /reactor/health
                        saved = await asyncio.to_thread(self.store.rule_states)
                        self.evaluator.load({n: state for n, (state, _, _) in saved.items()})
                        self.metrics.health.set(self.evaluator.status())
            except Exception:
                log.exception("evaluating the alert rules failed")

    def _pod(self) -> Any:
        pod = self.engine.pod
        if pod is None:
            raise PlanNotFound("this host has no IONPOD to keep master plans in")
        return pod
