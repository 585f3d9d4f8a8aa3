"""The host: publishes transforms and invokes them, one fresh sandbox per call.

``Host`` ties the parts together: the registry of published manifests, the
IONPOD store the module bytes live in (re-hashed on every read), the sandbox
runtime with its compile cache, and the gate every import call passes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx
import jsonschema

import ionwall
from ionwall import CallContext, Decision, Gate, Ionwall, Masker, load_policy

from ._errors import (
    AuditNotWritten,
    CidMismatch,
    ConsentRequired,
    GuestError,
    InvalidInput,
    InvalidOutput,
    InvalidPublisherSignature,
    IonfluxError,
    ManifestError,
    ModuleError,
    UnknownTransform,
)
from ._health import Health, WatchedBackend, disk_probe
from .config import Config, Limits
from .manifest import LimitOverrides, Manifest, load_manifest, module_path
from .registry import PublishedTransform, Registry
from .runtime import (
    Bus,
    CallLimits,
    CallResult,
    EgressPolicy,
    ImportBudget,
    ImportEnv,
    Loaded,
    Runtime,
    endpoint,
    pinned_client,
    wasm_kind,
)
from .runtime.extism import ExtismLoaded, check_plugin
from .state import open_state

if TYPE_CHECKING:
    from .state import PgDatabase
    from .store import BlockBackend, Pod


@dataclass
class Invocation(CallResult):
    """The outcome of one successful call of a published transform."""

    transform: PublishedTransform = field(kw_only=True)
    #: The output, parsed once by ``invoke`` (and checked against the output schema).
    value: Any = field(kw_only=True)


def effective_limits(defaults: Limits, overrides: LimitOverrides) -> CallLimits:
    """A manifest may lower any limit, or raise it up to ``ceiling_factor`` times the default."""

    def pick(name: str) -> int:
        default: int = getattr(defaults, name)
        asked: int | None = getattr(overrides, name)
        return default if asked is None else min(asked, default * defaults.ceiling_factor)

    return CallLimits(
        fuel=pick("fuel"),
        timeout_ms=pick("timeout_ms"),
        memory_bytes=pick("memory_bytes"),
        table_elements=defaults.table_elements,
        instances=pick("instances"),
        max_input_bytes=pick("max_input_bytes"),
        max_output_bytes=pick("max_output_bytes"),
    )


def import_budget(defaults: Limits, overrides: LimitOverrides) -> ImportBudget:
    """One call's import budgets, overridden by the manifest as ``effective_limits``."""

    def pick(name: str) -> int:
        default: int = getattr(defaults, name)
        asked: int | None = getattr(overrides, name)
        return default if asked is None else min(asked, default * defaults.ceiling_factor)

    return ImportBudget(
        max_import_calls=pick("max_import_calls"),
        max_audit_bytes=pick("max_audit_bytes"),
        max_log_bytes=pick("max_log_bytes"),
    )


@dataclass(slots=True)
class _Prepared:
    transform: PublishedTransform
    loaded: Loaded | ExtismLoaded
    limits: CallLimits
    budget: ImportBudget
    input_validator: jsonschema.protocols.Validator | None
    output_validator: jsonschema.protocols.Validator | None


def open_ionwall(config: Config) -> Ionwall:
    """IONWALL as ``config`` says: its policy and masking, and with ``state.backend:
    postgres`` its consents, grants, revocations and audit chains in the shared
    database (this host's signing key stays in ``data_dir/ionwall``)."""
    settings = config.ionwall
    shared = config.state.backend == "postgres"
    return Ionwall(
        config.data_dir / "ionwall",
        load_policy(settings.policy_file),
        masker=Masker(settings.secret_values, settings.sensitive_fields),
        state_url=config.state.url if shared else None,
        revocation_feed_bound=config.state.revocation_feed_bound_s,
    )


class Host:
    def __init__(
        self,
        config: Config,
        *,
        gate: Gate | None = None,
        ionwall: Ionwall | None = None,
        pod: Pod | None = None,
        bus: Bus | None = None,
    ) -> None:
        """``gate``, when given, answers every import call of every invocation
        (tests and benchmarks); otherwise IONWALL grants decide."""
        self.config = config
        self.gate = gate
        self.bus = bus
        # What is degraded now (the data disk, NATS), for /healthz and /metrics.
        self.health = Health()
        # IONWALL, the pod and the HTTP client of the http import open on first use
        # (a host whose guests call no import opens none of them); what the caller
        # passed in is used as is, and the pod is closed only if the host opened it.
        self._opening = threading.RLock()
        self._ionwall = ionwall
        if ionwall is not None:
            self._watch_audit(ionwall)
        self._pod = pod
        self._owns_pod = pod is None
        self._http: httpx.Client | None = None
        config.data_dir.mkdir(parents=True, exist_ok=True)
        # The state every host of a cluster shares (state.backend: postgres), its
        # schema migrated first; None: SQLite files under data_dir, this machine's.
        self.state: PgDatabase | None = open_state(config)
        if self.state is None:
            self.registry = Registry(config.data_dir / "registry.sqlite3")
        else:
            self.registry = Registry(database=self.state)
        self.runtime = Runtime(
            max_wasm_stack_bytes=config.limits.max_wasm_stack_bytes,
            cache_dir=config.data_dir / "cache" / "compiled",
            sandboxes=config.limits.sandboxes,
            max_memory_bytes=config.limits.memory_bytes * config.limits.ceiling_factor,
            engine=config.runtime.engine,
        )
        self._prepared: dict[str, _Prepared] = {}
        self._grants: dict[str, str] = {}  # module CID -> the grant its calls run under
        self._lock = threading.Lock()

    @property
    def ionwall(self) -> Ionwall:
        if self._ionwall is None:
            with self._opening:
                if self._ionwall is None:
                    wall = open_ionwall(self.config)
                    self._watch_audit(wall)
                    self._ionwall = wall
        return self._ionwall

    def _watch_audit(self, wall: Ionwall) -> None:
        """A failed audit write (a full disk) degrades ``health`` until one succeeds."""
        health = self.health
        probe = disk_probe(wall.audit.path.parent)

        def on_write(failure: ionwall.AuditError | None) -> None:
            if failure is None:
                health.ok("audit")
            elif isinstance(failure.__cause__, OSError):  # the disk: room may come back
                health.degraded("audit", str(failure), probe=probe)
            else:  # the log is damaged: until a write succeeds (after `audit verify`)
                health.degraded("audit", str(failure))

        wall.audit.watch_writes(on_write)

    @property
    def pod(self) -> Pod:
        if self._pod is None:
            with self._opening:
                if self._pod is None:
                    self._pod = self._open_pod()
        return self._pod

    def _open_pod(self) -> Pod:
        from .store import open_pod

        shared = None
        if self.state is not None:  # paths bound on any host resolve on every host
            from .store import PathTable

            shared = PathTable(None, database=self.state)
        pod = open_pod(self.config, paths=shared)
        # A failed block write (a full disk, Kubo gone) degrades ``health`` until
        # one succeeds. Only the pod the host opened: a pod passed in is the caller's.
        # The probe (room on the data disk) only where the blocks live there.
        local = self.config.store.backend == "local"
        probe = disk_probe(self.config.data_dir) if local else None
        pod.backend = cast("BlockBackend", WatchedBackend(pod.backend, self.health, probe=probe))
        return pod

    @cached_property
    def egress(self) -> EgressPolicy:
        """Where the http import may connect (``egress.allow_addresses``); the
        host's own API and NATS ports are refused on its own addresses."""
        own_ports = [self.config.http.port] if self.config.http.port else []
        nats = endpoint(self.config.nats.url, 4222)
        if nats is not None:
            own_ports.append(nats[1])
        return EgressPolicy(self.config.egress.allow_addresses, own_ports=own_ports)

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            with self._opening:
                if self._http is None:
                    # No redirects (each hop must pass the gate), no proxies or netrc
                    # from the environment, each connection made to the address it checked.
                    self._http = pinned_client(self.egress)
        return self._http

    def _record_denial(self, ctx: CallContext, scope: str, reason: str) -> None:
        self.ionwall.audit.append(
            subject=ctx.subject, transform=ctx.transform, scope=scope, allowed=False,
            reason=reason, run_id=ctx.run_id, node_id=ctx.node_id, grant_id=ctx.grant_id,
        )  # fmt: skip

    @cached_property
    def _no_grant_gate(self) -> Gate:
        host = self

        class _NoGrant:
            def check(self, ctx: CallContext, scope: str) -> Decision:
                return host.ionwall.check(None, ctx, scope)

        return _NoGrant()

    def _http_client(self) -> httpx.Client:
        return self.http

    def close(self) -> None:
        """Closes what the host opened (IONWALL, given or not, is closed too)."""
        self.runtime.close()
        self.registry.close()
        if self._ionwall is not None:
            self._ionwall.close()
        if self.state is not None:
            self.state.close()
        if self._http is not None:
            self._http.close()
        if self._pod is not None and self._owns_pod:
            self._pod.close()

    # --- publishing ----------------------------------------------------------

    def publish(self, manifest_file: Path, module_file: Path | None = None) -> PublishedTransform:
        """Verifies the module against the manifest's CID, stores it and registers it."""
        manifest = load_manifest(manifest_file, self.config.documents.limits())
        path = module_file or module_path(manifest, manifest_file)
        if path is None:
            raise ManifestError(
                "no module file: give module.path in the manifest or a .wasm path",
                path=str(manifest_file),
                field="module.path",
            )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModuleError(f"cannot read module {path}: {exc.strerror}") from exc
        return self.publish_bytes(manifest, data)

    def publish_bytes(self, manifest: Manifest, data: bytes) -> PublishedTransform:
        from .store import cid_for_bytes

        actual = cid_for_bytes(data)
        if actual != manifest.module.cid:
            raise CidMismatch(manifest.module.cid, actual)
        kind = wasm_kind(data)
        self._check_scopes(manifest)
        self._check_publisher(manifest)
        component = None
        if manifest.abi == "component":
            component = self.runtime.compile_checked(data)
        else:
            if kind != "module":
                raise ModuleError("abi 'extism' needs a core module, this is a component")
            check_plugin(data)
        stored = self.pod.put_bytes(data)
        if stored != actual:  # the store computed another CID: refuse loudly
            raise CidMismatch(actual, stored)
        self.pod.pin(stored)
        if component is not None:
            self.runtime.cache.put(stored, component)
        published = self.registry.add(manifest, len(data))
        with self._lock:
            self._prepared.clear()
        return published

    def _check_publisher(self, manifest: Manifest) -> None:
        """A signed manifest publishes only if the signature verifies; IONWALL
        checks it again before a trusted publisher's request is auto-approved."""
        publisher = manifest.publisher
        if publisher is None:
            return  # unsigned: its scopes need the owner's consent like any other
        cid = manifest.module.cid
        if not ionwall.verify_cid_signature(publisher.key, cid, publisher.signature):
            raise InvalidPublisherSignature(publisher.key, cid)

    def _check_scopes(self, manifest: Manifest) -> None:
        for i, scope in enumerate(manifest.scopes):
            try:
                ionwall.parse_scope(scope)
            except ionwall.ScopeError as exc:
                raise ManifestError(str(exc), field=f"scopes.{i}") from exc

    # --- consent -------------------------------------------------------------

    def authorize(self, transform: PublishedTransform) -> str | None:
        """The grant calls of ``transform`` run under, or ``ConsentRequired``.

        Kept per module between calls; each call re-checks that it is still
        live (revocation, expiry), and every import re-checks it again.
        """
        if not transform.scopes:
            return None
        grant_id = self._grants.get(transform.cid)
        if grant_id is not None and self.ionwall.grant_live(grant_id):
            return grant_id
        publisher = transform.manifest.publisher
        try:
            grant = self.ionwall.authorize(
                transform.cid,
                transform.name,
                transform.version,
                transform.scopes,
                publisher=publisher.key if publisher else None,
                signature=publisher.signature if publisher else None,
            )
        except ionwall.ConsentRequired as exc:
            raise ConsentRequired(exc.request) from None
        except ionwall.AuditError as exc:  # the consent request's entry: the disk
            raise AuditNotWritten(str(exc)) from exc
        self._grants[transform.cid] = grant.id
        return grant.id

    # --- invoking ------------------------------------------------------------

    def prepare(self, ref: str) -> _Prepared:
        # The registry answers from memory unless another process published since,
        # so a name always runs its latest version, even one published elsewhere.
        try:
            transform = self.registry.get(ref)
            key = f"{transform.name}@{transform.version}"
        except UnknownTransform:
            transform = None
            key = ref
        prepared = self._prepared.get(key)
        if prepared is not None:
            return prepared
        if transform is None:
            transform = self._unregistered(ref)
        loaded: Loaded | ExtismLoaded
        if transform.abi == "extism":
            loaded = ExtismLoaded(transform.cid, self._module_bytes(transform.cid))
        else:
            loaded = self.runtime.load(transform.cid, lambda: self._module_bytes(transform.cid))
        manifest = transform.manifest
        prepared = _Prepared(
            transform=transform,
            loaded=loaded,
            limits=effective_limits(self.config.limits, manifest.limits),
            budget=import_budget(self.config.limits, manifest.limits),
            input_validator=_validator(manifest.input_schema),
            output_validator=_validator(manifest.output_schema),
        )
        with self._lock:
            self._prepared[key] = prepared
        return prepared

    def _unregistered(self, ref: str) -> PublishedTransform:
        """A module known only by its CID (published on another host that shares
        this host's IPFS node): fetched from the store, verified block by block,
        checked against the world, and run with no manifest, hence no scopes:
        every import it calls is denied unless the caller passes a gate."""
        from .store import Cid

        try:
            cid = str(Cid.parse(ref))
        except IonfluxError:
            raise UnknownTransform(
                f"no published transform {ref!r} (see `ionflux transforms`)"
            ) from None
        if not self.pod.has(cid):
            raise UnknownTransform(f"no module {cid} in this host's store or its IPFS node")
        data = self._module_bytes(cid)
        abi = "component" if wasm_kind(data) == "component" else "extism"
        manifest = Manifest.model_validate(
            {"name": "unregistered", "version": "0.0.0", "abi": abi, "module": {"cid": cid}}
        )
        if abi == "component":
            self.runtime.cache.get(cid, lambda: self.runtime.compile_checked(data))
        else:
            check_plugin(data)
        return PublishedTransform(manifest, cid, len(data), time.time())

    def _module_bytes(self, cid: str) -> bytes:
        return self.pod.get_bytes(cid)

    def invoke(
        self,
        ref: str,
        input: str | Any,
        *,
        ctx: CallContext | None = None,
        gate: Gate | None = None,
        config: dict[str, str] | None = None,
    ) -> Invocation:
        """Runs one transform on one input in a fresh sandbox. Thread-safe."""
        prepared = self.prepare(ref)
        transform = prepared.transform
        if isinstance(input, str):
            text = input
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise InvalidInput(f"input is not JSON: {exc}") from None
        else:
            value = input
            text = _ENCODER.encode(input)
        if prepared.input_validator is not None:
            _validate(prepared.input_validator, value, InvalidInput, f"{transform.name}: input")
        gate = gate or self.gate
        barrier = None
        if gate is None:
            grant_id = (
                ctx.grant_id if ctx is not None and ctx.grant_id else self.authorize(transform)
            )
            # Without a grant every import is denied (and audited); IONWALL is
            # only opened when a guest actually calls one.
            if grant_id:
                # Write-behind: IONWALL records some decisions while the guest runs
                # on; `barrier` (below) puts them on disk before the run is handed on.
                run_gate = self.ionwall.gate(grant_id, write_behind=True)
                gate, barrier = run_gate, run_gate.flush
            else:
                gate = self._no_grant_gate
            if ctx is None or ctx.grant_id != grant_id:
                ctx = CallContext(
                    subject=transform.cid,
                    transform=transform.name,
                    run_id=ctx.run_id if ctx else None,
                    node_id=ctx.node_id if ctx else None,
                    grant_id=grant_id,
                )
        limits = prepared.limits
        env = ImportEnv(
            gate=gate,
            ctx=ctx or CallContext(subject=transform.cid, transform=transform.name),
            deadline=time.monotonic() + limits.timeout_ms / 1000,
            pod=self.pod,
            bus=self.bus,
            http=self._http_client,
            config={**transform.manifest.config, **(config or {})},
            max_pod_read_bytes=limits.max_output_bytes,
            http_timeout_s=self.config.limits.http_timeout_ms / 1000,
            http_max_response_bytes=self.config.limits.http_max_response_bytes,
            budget=prepared.budget,
            record_denial=self._record_denial,
        )
        result: CallResult
        try:
            if isinstance(prepared.loaded, Loaded):
                result = self.runtime.call(prepared.loaded, text, limits, env)
            else:
                result = prepared.loaded.call(text, limits, env)
        except GuestError as exc:
            env.raise_if_over_budget(exc)  # the budget, not what the guest did next
            raise
        finally:
            # IONWALL's durability barrier: no output, error or log of this run
            # leaves before its audit entries are on disk; if they cannot be
            # written, AuditNotWritten replaces whatever the run produced.
            if barrier is not None:
                _flush_audit(barrier)
        env.raise_if_over_budget()
        try:
            out = result.value
        except ValueError as exc:
            raise InvalidOutput(f"{transform.name}: output is not JSON: {exc}") from None
        if prepared.output_validator is not None:
            _validate(prepared.output_validator, out, InvalidOutput, f"{transform.name}: output")
        return Invocation(
            output=result.output,
            fuel_used=result.fuel_used,
            duration_s=result.duration_s,
            logs=result.logs,
            import_calls=result.import_calls,
            import_s=result.import_s,
            transform=transform,
            value=out,
        )

    async def ainvoke(
        self,
        ref: str,
        input: str | Any,
        *,
        ctx: CallContext | None = None,
        gate: Gate | None = None,
        config: dict[str, str] | None = None,
    ) -> Invocation:
        """``invoke`` on a worker thread, so the event loop keeps serving."""
        return await asyncio.to_thread(
            lambda: self.invoke(ref, input, ctx=ctx, gate=gate, config=config)
        )


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # built once, not per call


def _validator(schema: dict[str, Any] | None) -> jsonschema.protocols.Validator | None:
    return jsonschema.Draft202012Validator(schema) if schema else None


def _flush_audit(barrier: Callable[[], None]) -> None:
    """IONWALL's write-behind barrier, its failure translated at this seam."""
    try:
        barrier()
    except ionwall.AuditError as exc:
        raise AuditNotWritten(str(exc)) from exc


def _validate(
    validator: jsonschema.protocols.Validator, value: Any, error: type[Exception], what: str
) -> None:
    problem = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if problem is not None:
        where = "/".join(str(p) for p in problem.absolute_path) or "(root)"
        raise error(f"{what} at {where}: {problem.message}")
