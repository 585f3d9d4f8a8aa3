"""Every error IONFLUX raises to a caller.

    IonfluxError
    ├── ConfigError                  bad configuration file or environment
    ├── DataDirError                 a file in the data directory cannot be read or written
    │   │                            (disk full, read-only, permissions): names the path
    │   ├── RunNotRecorded           the run history could not record a run (retryable: HTTP
    │   │                            503, a durable message is nak'd, /healthz degraded)
    │   └── AuditNotWritten          IONWALL's audit log could not be written, so the call's
    │                                output is withheld (HTTP 503; also an ``ionwall.AuditError``)
    ├── StateError                   the state backend (state.backend: postgres) failed
    │   ├── StateUnavailable         the state database cannot be reached or refused a statement
    │   │                            (retryable: a run's record becomes RunNotRecorded)
    │   ├── StateConflict            a unique key already taken (another host wrote it first)
    │   └── StateSchemaError         the database's schema is newer than this host, or damaged
    ├── ManifestError                a manifest that does not parse or validate (names the field)
    ├── ModuleError                  a module refused at publish or load time
    │   ├── NotWasm                  the bytes are not a wasm module or component
    │   ├── ImportOutsideWorld       the module imports something the world does not offer
    │   ├── InvalidPublisherSignature  the manifest's publisher signature does not verify
    │   └── TableTooLarge            a table past limits.table_elements (runtime/_extism_init.py)
    ├── StoreError                   IONPOD failures
    │   ├── InvalidCid               a CID string that does not parse, or an unsupported codec/hash
    │   ├── CidMismatch              bytes that do not hash to the CID they were fetched by
    │   ├── NotFound                 no content for that CID or path
    │   ├── TooLarge                 content past a size limit
    │   ├── BackendUnavailable       a remote backend (Kubo) cannot be reached
    │   └── ImportMismatch           Kubo built another root than IONPOD computed (store/_kubo.py)
    ├── UnknownTransform             no published transform by that name or CID
    ├── GuestBuildError              `ionflux new`/`ionflux build` refused or failed: names the
    │                                step (componentize-py, asc, clang, …) and the tool's output
    ├── InvalidInput                 input that is not JSON, or too large
    │   ├── BodyTooLarge             an HTTP request body past its limit (HTTP 413)
    │   ├── NotJson                  an HTTP request body that is not JSON (HTTP 422)
    │   └── JsonTooDeep              JSON nested past http.max_json_depth
    ├── GuestError                   the guest failed one call; the host goes on
    │   ├── GuestTrap                the guest trapped (unreachable, bad memory access, …)
    │   │   └── WasiRefused          a WASI call the host refuses (a timer, a socket)
    │   ├── StackOverflow            the guest exhausted its call stack
    │   ├── FuelExhausted            the instruction budget ran out
    │   ├── DeadlineExceeded         the wall-clock limit ran out
    │   ├── CallCancelled            stopped at its next epoch tick: its run was cancelled
    │   ├── MemoryLimitExceeded      the guest asked for more memory than allowed
    │   ├── OutputTooLarge           the output is past the size limit
    │   ├── InvalidOutput            the output is not JSON
    │   ├── TransformFailed          the guest returned its own error
    │   └── ImportBudgetExceeded     one call made too many imports, audit or log bytes
    ├── GraphError                   a graph that does not load, or a run that cannot go on
    │   ├── GraphValidationError     a graph that does not validate (file, line, node, field)
    │   │   └── GraphVersionExists   other text under a deployed name@version
    │   ├── GraphNotFound            no deployed graph by that name (and version)
    │   ├── TemplateError            a template that fails to render
    │   │   └── TemplateBudgetExceeded  past its steps, value size, integer bits or time
    │   ├── SchemaViolation          input or output against the graph's schema (names the path)
    │   ├── RunBudgetExceeded        a run (sub-graphs included) past its node or fuel budget
    │   ├── RunLogNotStored          the run's log could not be stored in the pod: the run
    │   │                            is recorded as failed, never as a success
    │   └── InvalidRunTransition     an operator control a run's status does not allow
    │                                (pause a run that ended, retry one that succeeded): 409
    ├── ChildRunFailed               a sub-graph's run failed; carries its result (graph/_step.py)
    ├── TriggerError                 a trigger that cannot be set up or served
    │   ├── BusUnavailable           NATS cannot be reached, or did not answer in time
    │   ├── TriggerConfigError       a graph's trigger block is invalid (triggers/_errors.py,
    │   │                            as are the four below)
    │   ├── Unauthorized             a caller without a valid IONWALL token (HTTP 401)
    │   ├── RunRefused               a trigger event refused before its run
    │   ├── ShuttingDown             the host is draining; no new runs (HTTP 503)
    │   └── Overloaded               too many runs already wait for a slot (HTTP 503)
    ├── ConsoleError                 the web console refused a request (console/)
    │   ├── CrossSiteRequest         an unsafe console request not from the console's own
    │   │                            origin, or without the session's CSRF token (HTTP 403)
    │   └── SessionLimitReached      past console.max_sessions live sessions (HTTP 503)
    ├── PermissionDenied             IONWALL refused (also an ``ionwall.PermissionDenied``)
    │   ├── AddressRefused           the http import's host resolves to an internal address
    │   └── SubjectReserved          the bus import may not publish to a host subject
    ├── ConsentRequired              nothing runs until the owner answers a consent request
    │                                (also an ``ionwall.ConsentRequired``)
    └── ReactorError                 the ION Reactor refused a plan, an agent or a rule
        ├── PlanValidationError      a master plan that does not validate (unknown agents,
        │                            missing inputs, cycles, undeclared scopes): every problem
        ├── PlanNotFound             no master plan by that name or CID
        ├── AgentNotFound            no agent by that name (or no such version of it)
        ├── AgentDefinitionError     an agent definition that does not parse (names the field)
        ├── InvalidAgentTransition   an operation the agent's status does not allow (409)
        ├── AlertRuleError           an alert rule that does not parse (names the field)
        └── ReactorLimitExceeded     past a reactor.* limit (names it)

Every class above is exported from ``ionflux`` (tests/test_error_tree.py walks the
tree and checks both). Classes live here unless the drawing names their module.
Other IONWALL errors reaching a caller are translated where they cross into
IONFLUX (e.g. ``ionwall.AuditError`` from ``Host.invoke`` is a ``DataDirError``).
Errors that cross a process boundary serialise with ``to_dict()``.
"""

from __future__ import annotations

from typing import Any

import ionwall as _ionwall


class IonfluxError(Exception):
    """The root of every error IONFLUX raises."""

    kind = "error"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": str(self)}


class ConfigError(IonfluxError):
    kind = "config"

    def __init__(self, message: str, *, reason: _ionwall.DocumentError | None = None):
        self.reason = reason  # the file's YAML refused (a budget passed, or malformed)
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), **_document_budget(self.reason)}


def _document_budget(reason: _ionwall.DocumentError | None) -> dict[str, Any]:
    """The budget a refused document passed, for an error's ``to_dict``."""
    if isinstance(reason, _ionwall.DocumentTooLarge):
        return {"limit": reason.limit, "value": reason.value}
    return {}


class DataDirError(IonfluxError):
    """A file of the data directory cannot be opened, read or written: the message
    names the path, what was being done and the system's reason (no space left,
    read-only file system, permission denied, file too large, ...)."""

    kind = "data_dir"


class AuditNotWritten(DataDirError, _ionwall.AuditError):
    """IONWALL could not put a call's audit entries on disk (a full disk, a damaged
    log): nothing the call produced is handed on. Translated from
    ``ionwall.AuditError`` at ``Host.invoke`` (and still one, for those who catch it);
    the message is IONWALL's, which says what to do."""

    kind = "audit_not_written"


class StateError(IonfluxError):
    """The state backend (``state.backend: postgres``) failed; the message says how."""

    kind = "state"


class StateUnavailable(StateError):
    """The state database cannot be reached, or refused a statement: nothing of the
    operation was written (its transaction is rolled back); retry once it is back."""

    kind = "state_unavailable"


class StateConflict(StateError):
    """A row under a unique key another writer (another host) took first."""

    kind = "state_conflict"


class StateSchemaError(StateError):
    """The state database's schema is newer than this host knows (upgrade the host),
    or its migrations do not match the files shipped (``ionflux db migrate`` says which)."""

    kind = "state_schema"


class ManifestError(IonfluxError):
    kind = "manifest"

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        field: str | None = None,
        reason: _ionwall.DocumentError | None = None,
    ):
        self.path = path
        self.field = field
        self.reason = reason  # the manifest's YAML refused (a budget passed, or malformed)
        where = ": ".join(p for p in (path, field) if p)
        super().__init__(f"{where}: {message}" if where else message)

    def to_dict(self) -> dict[str, Any]:
        field = {"field": self.field} if self.field else {}
        return {**super().to_dict(), **field, **_document_budget(self.reason)}


class ModuleError(IonfluxError):
    kind = "module"


class NotWasm(ModuleError):
    kind = "not_wasm"


class ImportOutsideWorld(ModuleError):
    kind = "import_outside_world"

    def __init__(self, imports: list[str]):
        self.imports = imports
        super().__init__(
            "module imports outside the ionflux:transform world: " + ", ".join(imports)
        )


class InvalidPublisherSignature(ModuleError):
    """The manifest's ``publisher.signature`` is not ``publisher.key``'s Ed25519
    signature over the module's CID. Refused at publish: a publisher's name on a
    module is a claim IONWALL may auto-approve on."""

    kind = "invalid_publisher_signature"

    def __init__(self, publisher: str, cid: str):
        self.publisher = publisher
        self.cid = cid
        super().__init__(
            f"publisher signature does not verify: not a signature of {cid} by {publisher} "
            "(sign the CID string with the publisher's Ed25519 key, e.g. "
            "`ionwall.sign_cid`, or drop `publisher:` to publish unsigned)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "publisher": self.publisher, "cid": self.cid}


class StoreError(IonfluxError):
    kind = "store"


class InvalidCid(StoreError):
    kind = "invalid_cid"


class CidMismatch(StoreError):
    kind = "cid_mismatch"

    def __init__(self, expected: str, actual: str):
        self.expected = expected
        self.actual = actual
        super().__init__(f"content does not match its CID: expected {expected}, got {actual}")


class NotFound(StoreError):
    kind = "not_found"


class TooLarge(StoreError):
    kind = "too_large"


class BackendUnavailable(StoreError):
    kind = "backend_unavailable"


class UnknownTransform(IonfluxError):
    kind = "unknown_transform"


class GuestBuildError(IonfluxError):
    """A transform project that cannot be made or built (cli/_new.py): the
    message names the step and ends with the tool's own output."""

    kind = "guest_build"


class InvalidInput(IonfluxError):
    kind = "invalid_input"


class BodyTooLarge(InvalidInput):
    """A request body past its limit; refused while it arrives (HTTP 413)."""

    kind = "body_too_large"

    def __init__(self, limit: int, setting: str, seen: int | None = None):
        self.limit = limit
        self.setting = setting
        got = f"{seen} bytes" if seen is not None else "more"
        super().__init__(
            f"request body too large: {got}, the limit is {limit} bytes "
            f"(raise {setting} in the host's configuration)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "limit": self.limit, "setting": self.setting}


class NotJson(InvalidInput):
    """An HTTP request body that is not JSON (HTTP 422, ``field`` is ``(body)``)."""

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": "(body)"}


class JsonTooDeep(InvalidInput):
    """JSON nested deeper than the host parses (HTTP 422)."""

    kind = "json_too_deep"

    def __init__(self, limit: int, setting: str = "http.max_json_depth"):
        self.limit = limit
        self.setting = setting
        super().__init__(
            f"JSON nested deeper than {limit} levels (raise {setting} in the host's configuration)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": "(body)", "limit": self.limit}


class GuestError(IonfluxError):
    """A guest failed one call. The host and every other call go on."""

    kind = "guest"
    #: Fuel the failed call burnt (a component's; Extism reports none): a run's
    #: fuel budget counts failed calls too.
    fuel_used: int = 0


class GuestTrap(GuestError):
    kind = "trap"


class WasiRefused(GuestTrap):
    """The guest called a WASI 0.2 function the host refuses (a timer it would
    wait on, a socket): the call traps (runtime/_wasi.py)."""

    kind = "wasi_refused"


class StackOverflow(GuestError):
    kind = "stack_overflow"


class FuelExhausted(GuestError):
    kind = "fuel_exhausted"


class DeadlineExceeded(GuestError):
    kind = "deadline_exceeded"


class CallCancelled(GuestError):
    """A call stopped at its next epoch tick because an operator cancelled its run
    (not its deadline: ``DeadlineExceeded`` is that)."""

    kind = "cancelled"


class MemoryLimitExceeded(GuestError):
    kind = "memory_limit"


class OutputTooLarge(GuestError):
    kind = "output_too_large"


class InvalidOutput(GuestError):
    kind = "invalid_output"


class TransformFailed(GuestError):
    """The guest returned ``err(...)`` from ``run``."""

    kind = "transform_failed"

    def __init__(self, case: str, message: str):
        self.case = case
        super().__init__(f"{case}: {message}")


class ImportBudgetExceeded(GuestError):
    """One call went past a per-call budget of its imports (``budget``:
    ``max_import_calls``, ``max_audit_bytes`` or ``max_log_bytes``, all under
    ``limits.``). The import that crossed it answered ``error.too-large`` and
    so did every import after it; the call fails with this error whatever the
    guest returned."""

    kind = "import_budget_exceeded"

    def __init__(self, budget: str, limit: int, what: str):
        self.budget = budget
        self.limit = limit
        super().__init__(
            f"{what}: over limits.{budget} = {limit} per call (raise it in the host "
            f"config, or in the manifest's limits up to limits.ceiling_factor times it)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "budget": self.budget, "limit": self.limit}


class PermissionDenied(IonfluxError, _ionwall.PermissionDenied):
    """IONWALL refused ``scope``; ``reason`` says why. Also an ``ionwall.PermissionDenied``."""

    kind = "permission_denied"

    def to_dict(self) -> dict[str, Any]:
        return _ionwall.PermissionDenied.to_dict(self)


class AddressRefused(PermissionDenied):
    """The http import refused to connect: ``host`` resolves only to addresses
    outside the public internet (loopback, link-local, private, …) or to this
    host's own, and ``egress.allow_addresses`` lists none of them."""

    kind = "address_refused"

    def __init__(self, host: str, port: int, reason: str):
        self.host = host
        self.port = port
        super().__init__(f"http_fetch:{host}:{port}", f"{reason} (see egress.allow_addresses)")


class SubjectReserved(PermissionDenied):
    """The bus import refused a subject the host itself publishes on
    (completion events, NATS system and reply subjects), whatever the grant says."""

    kind = "subject_reserved"

    def __init__(self, subject: str, reason: str):
        self.subject_name = subject
        super().__init__(f"publish_nats_topic:{subject}", reason)


class ConsoleError(IonfluxError):
    """The web console refused a request before it reached the API."""

    kind = "console"


class CrossSiteRequest(ConsoleError):
    """A console form sent from another site (``Sec-Fetch-Site``/``Origin``), or
    without the session's CSRF token: refused, nothing done (HTTP 403)."""

    kind = "cross_site_request"

    def __init__(self, why: str):
        super().__init__(
            f"refused: this console form did not come from the console itself ({why}); "
            "reload the console page and submit it from there"
        )


class SessionLimitReached(ConsoleError):
    """``console.max_sessions`` sessions are live: sign out of one, or wait for one
    to expire (``console.session_ttl_s``), or raise the setting (HTTP 503)."""

    kind = "too_many_sessions"

    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(
            f"the console already has console.max_sessions = {limit} live sessions; "
            "sign out of one or raise the setting"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "limit": self.limit}


class ConsentRequired(IonfluxError, _ionwall.ConsentRequired):
    """Nothing runs until the owner answers ``request``; the message says how."""

    kind = "consent_required"

    def to_dict(self) -> dict[str, Any]:
        return _ionwall.ConsentRequired.to_dict(self)


class GraphError(IonfluxError):
    kind = "graph"


class GraphProblem:
    """One problem in a graph definition, located as precisely as the source allows."""

    __slots__ = ("field", "file", "line", "message", "node")

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        node: str | None = None,
        field: str | None = None,
    ):
        self.message = message
        self.file = file
        self.line = line
        self.node = node
        self.field = field

    def __str__(self) -> str:
        where = f"{self.file or '<graph>'}:{self.line or '?'}"
        node = f" node {self.node!r}" if self.node else ""
        field = f" field {self.field!r}" if self.field else ""
        return f"{where}:{node}{field}: {self.message}".replace(": :", ":")

    def __repr__(self) -> str:
        return f"GraphProblem({self})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "node": self.node,
            "field": self.field,
            "message": self.message,
        }


class GraphValidationError(GraphError):
    """A graph failed validation; ``problems`` lists every problem found, in source order."""

    kind = "graph_validation"

    def __init__(
        self, problems: list[GraphProblem], *, reason: _ionwall.DocumentError | None = None
    ):
        self.problems = problems
        self.reason = reason  # the graph's YAML refused (a budget passed, or malformed)
        first = problems[0] if problems else GraphProblem("invalid graph")
        self.file, self.line, self.node, self.field = (
            first.file,
            first.line,
            first.node,
            first.field,
        )
        count = f"{len(problems)} problems" if len(problems) != 1 else "1 problem"
        super().__init__(f"invalid graph ({count}):\n" + "\n".join(f"  {p}" for p in problems))

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "problems": [p.to_dict() for p in self.problems],
            **_document_budget(self.reason),
        }


class GraphVersionExists(GraphValidationError):
    """``name@version`` is deployed with other text; versions are immutable (as a
    transform's are), so a changed graph is deployed under a new ``version``."""

    def __init__(self, name: str, version: str, cid: str):
        self.name = name
        self.version = version
        self.cid = cid
        unversioned = (
            " (the graph has no 'version' field: it is 0.0.0)" if version == "0.0.0" else ""
        )
        super().__init__(
            [
                GraphProblem(
                    f"{name}@{version} is already deployed with other text (CID {cid})"
                    f"{unversioned}; versions are immutable: give the changed graph a new "
                    "version",
                    field="version",
                )
            ]
        )


class GraphNotFound(GraphError):
    kind = "graph_not_found"


class TemplateError(GraphError):
    kind = "template"

    def __init__(self, template: str, message: str):
        self.template = template
        super().__init__(f"template {template!r} failed: {message}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "template": self.template}


class TemplateBudgetExceeded(TemplateError):
    """A template went past ``limit`` (a ``graph.template_*`` setting) of ``value``;
    ``node`` and ``field`` say where the template is in the graph."""

    kind = "template_budget"

    def __init__(
        self,
        template: str,
        what: str,
        limit: str,
        value: int | float,
        *,
        node: str | None = None,
        field: str | None = None,
    ):
        self.limit = limit
        self.value = value
        self.node = node
        self.field = field
        where = " ".join(
            part
            for part in (f"node {node!r}" if node else "", f"field {field!r}" if field else "")
            if part
        )
        super().__init__(
            template,
            f"{where + ': ' if where else ''}{what}, past {limit} = {value} "
            f"(raise {limit} in the host's configuration)",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "limit": self.limit,
            "value": self.value,
            "node_id": self.node,
            "field": self.field,
        }


class SchemaViolation(GraphError):
    """``which`` is ``input`` or ``output``; ``path`` points into the offending value."""

    kind = "schema_violation"

    def __init__(self, which: str, path: str, message: str):
        self.which = which
        self.path = path
        super().__init__(f"{which} violates the graph's {which}_schema at {path}: {message}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "which": self.which, "path": self.path}


class RunBudgetExceeded(GraphError):
    """A run, its sub-graphs' runs included, used up one of its budgets: ``budget``
    is ``max_nodes`` or ``max_fuel``, ``limit`` its value, ``used`` what was spent."""

    kind = "run_budget_exceeded"

    def __init__(self, budget: str, limit: int, used: int, source: str):
        self.budget = budget
        self.limit = limit
        self.used = used
        self.source = source
        what = "node calls" if budget == "max_nodes" else "fuel"
        super().__init__(
            f"run budget exceeded: {budget} = {limit} ({used} {what} used) for the whole "
            f"run, sub-graphs included (from {source}); no further node starts. Raise "
            f"graph.{budget}_per_run in the configuration or the graph's budget.{budget} "
            "(bounded by the configuration)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "budget": self.budget, "limit": self.limit, "used": self.used}


class RunNotRecorded(DataDirError):
    """The run history could not record a run (disk full, the database locked past
    its busy timeout, an I/O error): nothing is acknowledged for it, and the
    caller may retry (HTTP 503; a durable message is nak'd and redelivered)."""

    kind = "run_not_recorded"

    def __init__(self, run_id: str, doing: str, reason: str):
        super().__init__(
            f"run {run_id}: the run history could not record {doing}: {reason}; "
            "free space in the data directory (or end what holds the database) and retry"
        )
        self.run_id = run_id

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "run_id": self.run_id}


class TriggerError(IonfluxError):
    """A trigger that cannot be set up or served (the branch is drawn above; all but
    ``BusUnavailable`` live in ``triggers/_errors.py``)."""

    kind = "trigger"


class BusUnavailable(TriggerError):
    """NATS cannot be reached, or did not answer in time (here, not in triggers:
    ``bus.py`` sits below the triggers and raises it)."""

    kind = "bus_unavailable"


class InvalidRunTransition(GraphError):
    """An operator control (pause, resume, cancel, retry) that the run's recorded
    status does not allow; the message names the status and what is allowed."""

    kind = "invalid_run_transition"

    def __init__(self, run_id: str, status: str, action: str, allowed: tuple[str, ...]):
        self.run_id = run_id
        self.status = status
        self.action = action
        super().__init__(
            f"run {run_id} is {status}: {action} is allowed only for a run that is "
            f"{' or '.join(allowed)}; see `ionflux runs show {run_id}`"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "run_id": self.run_id, "status": self.status,
                "action": self.action}  # fmt: skip


class RunLogNotStored(GraphError):
    """A run ended but its run log (the whole masked result) could not be stored in
    the pod: the run is recorded as failed with this error, never as a success."""

    kind = "run_log_not_stored"

    def __init__(self, run_id: str, reason: str):
        super().__init__(
            f"run {run_id}: its run log could not be stored in the pod: {reason}; "
            "free space in the pod's store and run it again"
        )
        self.run_id = run_id


class ReactorError(IonfluxError):
    """The ION Reactor refused a plan, an agent or a rule."""

    kind = "reactor_error"


class PlanValidationError(ReactorError):
    """A master plan that does not validate; ``problems`` lists every one, each
    ``{"step": ..., "field": ..., "problem": ...}``."""

    kind = "plan_invalid"

    def __init__(self, plan: str, problems: list[dict[str, Any]]):
        self.plan = plan
        self.problems = problems
        lines = "; ".join(
            (f"step {p['step']}: " if p.get("step") else "") + str(p["problem"]) for p in problems
        )
        super().__init__(f"master plan {plan!r} does not validate: {lines}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "plan": self.plan, "problems": self.problems}


class PlanNotFound(ReactorError):
    kind = "plan_not_found"


class AgentNotFound(ReactorError):
    kind = "agent_not_found"


class AgentDefinitionError(ReactorError):
    """An agent definition that does not parse or validate; ``field`` names where."""

    kind = "agent_definition_invalid"

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


class InvalidAgentTransition(ReactorError):
    """An operation the agent's status does not allow (retire a retired agent,
    roll back with no earlier version)."""

    kind = "invalid_agent_transition"


class AlertRuleError(ReactorError):
    """An alert rule that does not parse; ``field`` names where."""

    kind = "alert_rule_invalid"

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


class ReactorLimitExceeded(ReactorError):
    """Past a ``reactor.*`` limit; ``limit`` names the setting."""

    kind = "reactor_limit"

    def __init__(self, limit: str, message: str):
        self.limit = limit
        super().__init__(f"{message} (reactor.{limit})")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "limit": self.limit}
