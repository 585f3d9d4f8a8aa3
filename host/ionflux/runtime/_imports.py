"""The host side of the world's imports.

Every function here resolves the concrete scope of the call from its actual
arguments, asks the gate, and only then touches the capability. A refusal is
returned to the guest as ``error.denied`` (never a trap), so a guest can react.

The functions are registered once on a linker shared by every sandbox; the
call they belong to is found in a thread-local set by the sandbox for the
duration of one ``run`` (a call runs start to finish on one thread). No
exception may escape into wasmtime: each function answers ``error.failed``
for anything unexpected.

Each call has budgets (``ImportBudget``, in its own ``ImportEnv``, so no two
calls share a counter): import calls, the audit bytes its decisions write,
and the log bytes the host keeps. The import that crosses one answers
``error.too-large``, every later import of the call answers the same without
asking the gate (so nothing more is audited), and the call then fails with
``ImportBudgetExceeded`` (``ImportEnv.raise_if_over_budget``) whatever the
guest returned. Extism host functions reach the same ``_gated`` path.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx
from wasmtime.component import Linker, Record, Variant

from ionwall import CallContext, Gate

from .. import _tracing
from .._errors import (
    AddressRefused,
    ImportBudgetExceeded,
    IonfluxError,
    NotFound,
    PermissionDenied,
    TooLarge,
)
from ._world import WORLD_VERSION

guest_log = logging.getLogger("ionflux.guest")

MAX_LOG_LINE_BYTES = 8 * 1024

_CID_LIKE = re.compile(r"^(b[a-z2-7]{20,}|Qm[1-9A-HJ-NP-Za-km-z]{44})$")
_SUBJECT_TOKEN = re.compile(r"^[^\s.*>]+$")
_HOP_BY_HOP = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


class PodAccess(Protocol):
    """What the pod import needs from IONPOD (``ionflux.store.Pod`` provides it)."""

    def get_bytes(self, cid: str, max_size: int | None = None) -> bytes: ...
    def put_bytes(self, data: bytes) -> str: ...
    def resolve(self, path: str) -> str: ...
    def bind(self, path: str, cid: str) -> None: ...


class Bus(Protocol):
    """What the bus import needs from the message bus."""

    def publish(self, subject: str, payload: bytes) -> None: ...


@runtime_checkable
class ReservingBus(Bus, Protocol):
    """A bus that also knows subjects of its own deployment the host reserves
    (a graph's custom ``completion_topic``): the reason, or None."""

    def reserved(self, subject: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class LogLine:
    level: str
    message: str


@dataclass(frozen=True, slots=True)
class ImportBudget:
    """One call's budgets (``limits.max_import_calls`` …, after the manifest's overrides)."""

    max_import_calls: int = 1_000
    max_audit_bytes: int = 512 * 1024
    max_log_bytes: int = 64 * 1024


@dataclass
class ImportEnv:
    """Everything one call's imports may reach, and what the call has spent.
    Built per call by the host: its counters belong to that call alone."""

    gate: Gate
    ctx: CallContext
    deadline: float  # time.monotonic() by which the whole call must end
    pod: PodAccess | None = None
    bus: Bus | None = None
    http: Callable[[], httpx.Client] | None = None  # made on first use: building one costs ms
    config: Mapping[str, str] = field(default_factory=dict)
    max_pod_read_bytes: int = 4 * 1024 * 1024
    http_timeout_s: float = 10.0
    http_max_response_bytes: int = 4 * 1024 * 1024
    budget: ImportBudget = ImportBudget()
    # Records a refusal the host made itself (reserved subject, internal
    # address) in the audit log, as the gate records its own: (ctx, scope, reason).
    record_denial: Callable[[CallContext, str, str], None] | None = None
    logs: list[LogLine] = field(default_factory=list)
    calls: int = 0
    import_s: float = 0.0  # wall time spent in the imports' bodies: waiting on I/O
    audit_bytes: int = 0  # what this call's decisions add to the audit log (see _entry_size)
    log_bytes: int = 0
    over_budget: ImportBudgetExceeded | None = None
    _entry_base: int = -1

    def raise_if_over_budget(self, cause: BaseException | None = None) -> None:
        """Raises ``ImportBudgetExceeded`` if the call went past a budget."""
        if self.over_budget is not None:
            raise self.over_budget from cause

    def count_call(self) -> Variant | None:
        """Counts one import call (a bad request too): ``too-large`` once the
        call is over a budget or past ``max_import_calls``, else None."""
        self.calls += 1
        limit = self.budget.max_import_calls
        if self.over_budget is not None or self.calls > limit:
            return self.refuse_over(
                "max_import_calls",
                limit,
                f"{self.ctx.transform} made more than {limit} import calls",
            )
        return None

    def refuse_over(self, budget: str, limit: int, what: str) -> Variant:
        """Marks the call over ``budget`` (unless it already is over one) and
        answers the guest ``too-large``."""
        if self.over_budget is None:
            self.over_budget = ImportBudgetExceeded(budget, limit, what)
        return _err("too-large", str(self.over_budget))

    def entry_size(self, scope: str, reason: str) -> int:
        """The bytes one audit entry of this call takes in the log (its JSON
        line: the call's fields, scope, reason, index, time and two hashes).
        Masking may shorten what is written, never lengthen it much."""
        base = self._entry_base
        if base < 0:
            ctx = self.ctx
            base = self._entry_base = (
                _ENTRY_FIXED
                + sum(_json_len(v) for v in (ctx.subject, ctx.transform, ctx.run_id, ctx.node_id))
                + _json_len(ctx.grant_id)
            )
        return base + _json_len(scope) + _json_len(reason)

    def deny_here(self, scope: str, reason: str) -> Variant:
        """A refusal made by the host (not the gate): audited, then ``denied``."""
        if self.record_denial is not None:
            self.audit_bytes += self.entry_size(scope, reason)
            try:
                self.record_denial(self.ctx, scope, reason)
            except Exception as exc:  # unrecordable: still a denial
                reason = f"{reason} (not recorded: {exc})"
        return _err("denied", f"{scope}: {reason}")


# An audit line without its variable fields: keys, quotes, the decision, the
# index (up to 12 digits), the time (27 characters) and two sha256 hex digests.
_ENTRY_FIXED = (
    len(
        '{"decision":"allow","grant_id":,"index":,"node_id":,"prev":"","reason":,'
        '"run_id":,"scope":,"subject":,"time":"","transform":,"hash":""}\n'
    )
    + 12
    + 27
    + 2 * 64
)


def _json_len(value: str | None) -> int:
    """The UTF-8 length of ``value`` as a JSON string (``null`` for None)."""
    if value is None:
        return 4
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return len(value) + 2
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


_local = threading.local()


def current_env() -> ImportEnv | None:
    env: ImportEnv | None = getattr(_local, "env", None)
    return env


def set_env(env: ImportEnv | None) -> None:
    _local.env = env


def _err(case: str, message: str) -> Variant:
    return Variant(case, message)


def _gated(
    scope_of: Callable[..., str], refuse: Callable[..., str | None] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wraps an import: find the call, check its budgets, resolve the scope,
    refuse what the host never allows (``refuse``: a reason, or None), ask the
    gate, then act."""

    def wrap(body: Callable[..., Any]) -> Callable[..., Any]:
        name = body.__name__

        def host_func(_store: object, *args: Any) -> Any:
            tracer = _tracing.tracer
            if tracer is None:
                return gated(None, *args)
            # A child of the guest call's span (current on this thread).
            with tracer.start_as_current_span(f"import {name}") as span:
                answer = gated(span, *args)
                if isinstance(answer, Variant) and answer.tag in _ERROR_CASES:
                    span.set_attribute("ionflux.import.error", answer.tag)
                return answer

        def gated(span: Any, *args: Any) -> Any:
            env = current_env()
            if env is None:
                return _err("unavailable", "no call in progress")
            refused = env.count_call()
            if refused is not None:
                return refused
            budget = env.budget
            try:
                scope = scope_of(*args)
            except ValueError as exc:
                return _err("invalid", str(exc))
            if span is not None:
                span.set_attribute("ionflux.scope", scope)
            # Stop before the entry that would cross the budget. Its reason is
            # not known yet: counted as the scope again plus a grant id.
            base = env._entry_base
            if base < 0:
                base = env.entry_size("", "") - 4
            if env.audit_bytes + base + 2 * len(scope) + 72 > budget.max_audit_bytes:
                return env.refuse_over(
                    "max_audit_bytes",
                    budget.max_audit_bytes,
                    f"{env.ctx.transform}'s import calls would write more than "
                    f"{budget.max_audit_bytes} bytes of audit entries",
                )
            if refuse is not None:
                reason = refuse(env, *args)
                if reason is not None:
                    if span is not None:
                        span.set_attribute("ionflux.gate.decision", "deny")
                        span.set_attribute("ionflux.gate.reason", f"host: {reason}")
                    return env.deny_here(scope, reason)
            try:
                decision = env.gate.check(env.ctx, scope)
            except Exception as exc:  # a broken gate denies, it never allows
                return _err("denied", f"{scope}: gate failed: {exc}")
            env.audit_bytes += base + _json_len(scope) + _json_len(decision.reason)
            if span is not None:
                span.set_attribute("ionflux.gate.decision", "allow" if decision.allowed else "deny")
                span.set_attribute("ionflux.gate.reason", decision.reason)
            if not decision.allowed:
                return _err("denied", f"{scope}: {decision.reason}")
            began = time.perf_counter()
            try:
                return body(env, *args)
            except AddressRefused as exc:
                return env.deny_here(exc.scope, exc.reason)
            except IonfluxError as exc:
                return _err(_case_of(exc), str(exc))
            except Exception as exc:
                return _err("failed", f"{type(exc).__name__}: {exc}")
            finally:
                env.import_s += time.perf_counter() - began

        host_func.__name__ = name
        return host_func

    return wrap


_ERROR_CASES = frozenset({"denied", "too-large", "invalid", "failed", "unavailable", "not-found"})


def _case_of(exc: IonfluxError) -> str:
    if isinstance(exc, PermissionDenied):
        return "denied"
    if isinstance(exc, NotFound):
        return "not-found"
    if isinstance(exc, TooLarge):
        return "too-large"
    if exc.kind in ("invalid_cid", "invalid_input"):
        return "invalid"
    if exc.kind == "backend_unavailable":
        return "unavailable"
    return "failed"


# --- log -------------------------------------------------------------------


@_gated(lambda level, message: f"emit_log:{level}")
def log_write(env: ImportEnv, level: str, message: str) -> Variant | None:
    if len(message) > MAX_LOG_LINE_BYTES:
        message = message[:MAX_LOG_LINE_BYTES] + "…"
    size = len(message) if message.isascii() else len(message.encode("utf-8"))
    limit = env.budget.max_log_bytes
    if env.log_bytes + size > limit:
        # Nothing of the line is kept: a truncated line would read as whole.
        return env.refuse_over(
            "max_log_bytes", limit, f"{env.ctx.transform} logged more than {limit} bytes"
        )
    env.log_bytes += size
    env.logs.append(LogLine(level, message))
    guest_log.log(
        {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}.get(
            level, logging.ERROR
        ),
        "%s: %s",
        env.ctx.transform,
        message,
    )
    return None


# --- config ----------------------------------------------------------------


@_gated(lambda key: f"read_config:{_check_key(key)}")
def config_get(env: ImportEnv, key: str) -> str | None:
    return env.config.get(key)


def _check_key(key: str) -> str:
    if not key or len(key) > 256 or any(c in key for c in " \t\r\n:"):
        raise ValueError(f"invalid config key {key!r}")
    return key


# --- pod -------------------------------------------------------------------


def _pod_read_scope(reference: str) -> str:
    return f"read_pod_data:{_check_reference(reference)}"


def _check_reference(reference: str) -> str:
    if _CID_LIKE.match(reference):
        return reference
    return _check_path(reference)


def _check_path(path: str) -> str:
    parts = path.split("/")
    if (
        not path
        or len(path) > 1024
        or path.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or any(c in path for c in "\0\r\n*")
    ):
        raise ValueError(f"invalid pod path {path!r} (relative, no '.', '..', '*' or empty parts)")
    return path


@_gated(_pod_read_scope)
def pod_get(env: ImportEnv, reference: str) -> Any:
    if env.pod is None:
        return _err("unavailable", "no pod is configured")
    cid = reference if _CID_LIKE.match(reference) else env.pod.resolve(reference)
    data = env.pod.get_bytes(cid, max_size=env.max_pod_read_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return _err("invalid", f"{reference} is binary; the pod import reads text only")


@_gated(lambda path, data: f"write_pod_data:{_check_path(path)}")
def pod_put(env: ImportEnv, path: str, data: str) -> str:
    if env.pod is None:
        return _err("unavailable", "no pod is configured")  # type: ignore[return-value]
    cid = env.pod.put_bytes(data.encode("utf-8"))
    env.pod.bind(path, cid)
    return cid


# --- bus -------------------------------------------------------------------


def _subject(subject: str) -> str:
    if (
        not subject
        or len(subject) > 512
        or not all(_SUBJECT_TOKEN.match(t) for t in subject.split("."))
    ):
        raise ValueError(
            f"invalid subject {subject!r}: dot-separated tokens, no spaces or wildcards"
        )
    return subject


# Subjects the host publishes on or NATS itself owns. A guest publishing there
# could fake a run's end (completion events), answer another client's request
# (reply inboxes) or talk to the server's JetStream and system APIs.
_RESERVED_PREFIXES = (
    ("$", "NATS system, JetStream and KV subjects ($SYS, $JS, $KV, ...)"),
    ("_INBOX.", "request reply inboxes"),
    ("ionflux.graph.", "the host's graph events"),
    ("ionflux.schedule.", "the host's schedule events"),
)


def reserved_subject(subject: str) -> str | None:
    """Why the host never lets a guest publish to ``subject``, or None."""
    if subject == "completion" or subject.endswith(".completion"):
        return f"{subject} is a run completion subject, published by the host only"
    for prefix, what in _RESERVED_PREFIXES:
        if subject.startswith(prefix):
            return f"{subject} is reserved for {what}"
    return None


def _bus_refusal(env: ImportEnv, subject: str, payload: str) -> str | None:
    reason = reserved_subject(subject)
    if reason is None and isinstance(env.bus, ReservingBus):
        reason = env.bus.reserved(subject)
    return reason


@_gated(lambda subject, payload: f"publish_nats_topic:{_subject(subject)}", _bus_refusal)
def bus_publish(env: ImportEnv, subject: str, payload: str) -> Any:
    if env.bus is None:
        return _err("unavailable", "no message bus is connected to this host")
    env.bus.publish(subject, payload.encode("utf-8"))
    return None


# --- http ------------------------------------------------------------------


def http_scope(url: str) -> str:
    """``http_fetch:<host>`` or ``http_fetch:<host>:<port>`` for a non-default port."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"invalid url {url!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"invalid url {url!r}: only http and https are allowed")
    host = parsed.host.lower().rstrip(".")
    if not host:
        raise ValueError(f"invalid url {url!r}: no host")
    if parsed.userinfo:
        raise ValueError(f"invalid url {url!r}: credentials in the URL are not allowed")
    # httpx drops the port when it is the scheme's default.
    return f"http_fetch:{host}" if parsed.port is None else f"http_fetch:{host}:{parsed.port}"


@_gated(lambda req: http_scope(req.url))
def http_fetch(env: ImportEnv, req: Any) -> Any:
    """The gate decides on the name; where the name leads is checked where the
    connection is made (the host's client, ``_egress.PinnedBackend``): an
    internal address raises ``AddressRefused``, which ``_gated`` records and
    answers as ``denied``."""
    if env.http is None:
        return _err("unavailable", "outbound HTTP is not enabled on this host")
    remaining = env.deadline - time.monotonic()
    if remaining <= 0:
        return _err("unavailable", "the call's time limit has run out")
    timeout = env.http_timeout_s
    asked = getattr(req, "timeout-ms")
    if asked is not None:
        timeout = min(timeout, asked / 1000)
    timeout = min(timeout, remaining)
    headers = [(h.name, h.value) for h in req.headers if h.name.lower() not in _HOP_BY_HOP]
    body = req.body
    try:
        with env.http().stream(
            req.method.upper(),
            req.url,
            headers=headers,
            content=body.encode("utf-8") if body is not None else None,
            timeout=timeout,
        ) as resp:
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > env.http_max_response_bytes:
                    return _err(
                        "too-large",
                        f"response body is over {env.http_max_response_bytes} bytes",
                    )
                chunks.append(chunk)
            status = resp.status_code
            out_headers = list(resp.headers.multi_items())
    except httpx.TimeoutException:
        return _err("unavailable", f"request timed out after {timeout:.3f}s")
    except httpx.HTTPError as exc:
        return _err("unavailable", f"request failed: {exc}")
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        return _err("invalid", "response body is not UTF-8 text")
    return _record(
        status=status, headers=[_record(name=k, value=v) for k, v in out_headers], body=text
    )


def _record(**fields: Any) -> Record:
    rec = Record()
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


# --- registration ----------------------------------------------------------

IMPORTS: dict[str, dict[str, Callable[..., Any]]] = {
    "types": {},
    "log": {"write": log_write},
    "config": {"get": config_get},
    "pod": {"get": pod_get, "put": pod_put},
    "bus": {"publish": bus_publish},
    "http": {"fetch": http_fetch},
}


def define_imports(linker: Linker) -> None:
    with linker.root() as root:
        for interface, funcs in IMPORTS.items():
            with root.add_instance(f"ionflux:transform/{interface}@{WORLD_VERSION}") as inst:
                for name, func in funcs.items():
                    inst.add_func(name, func)
