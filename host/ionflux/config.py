"""Host configuration: defaults, then a YAML file, then the environment.

Every setting has a default that runs the host with nothing configured: a
local store under the data directory and a nats-server the host starts
itself. The file is ``$IONFLUX_CONFIG`` or ``<data_dir>/ionflux.yaml``; any
setting can be overridden by an environment variable, ``IONFLUX_`` plus the
dotted path with ``__`` between levels (``IONFLUX_LIMITS__FUEL=1000000``,
``IONFLUX_STORE__BACKEND=kubo``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ionwall import DocumentError, DocumentLimits, load_yaml, read_text

from ._errors import ConfigError

if TYPE_CHECKING:
    from .graph._template import TemplateBudget

DEFAULT_DATA_DIR = Path.home() / ".ionflux"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Section):
    """Limits on every call of a transform. A manifest may lower them, or raise
    them up to ``ceiling_factor`` times these values."""

    fuel: int = Field(default=50_000_000, gt=0, description="instruction budget per call")
    timeout_ms: int = Field(default=2_000, gt=0, description="wall clock per call")
    memory_bytes: int = Field(default=64 * 1024 * 1024, gt=0, description="linear memory")
    table_elements: int = Field(default=10_000, gt=0)
    instances: int = Field(default=10, gt=0)
    max_input_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_output_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_wasm_stack_bytes: int = Field(default=512 * 1024, gt=0)
    http_timeout_ms: int = Field(default=10_000, gt=0)
    http_max_response_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    # Per guest call, for the imports (ImportBudgetExceeded past one of them).
    max_import_calls: int = Field(
        default=1_000, gt=0, description="import calls one guest call may make"
    )
    max_audit_bytes: int = Field(
        default=512 * 1024, gt=0, description="audit log bytes one call's imports may write"
    )
    max_log_bytes: int = Field(
        default=64 * 1024, gt=0, description="guest log bytes one call may write (kept text)"
    )
    ceiling_factor: int = Field(default=4, ge=1)
    sandboxes: int = Field(
        default=64, gt=0, description="calls running at once per host process; more wait"
    )


class StoreSettings(_Section):
    backend: Literal["local", "kubo"] = "local"
    kubo_api: str = "http://127.0.0.1:5001"
    timeout_s: float = Field(default=30.0, gt=0)
    max_get_bytes: int = Field(default=256 * 1024 * 1024, gt=0)


class StateSettings(_Section):
    """Where the host keeps its state (registry, graph versions, run history)."""

    backend: Literal["sqlite", "postgres"] = Field(
        default="sqlite",
        description="sqlite: files under data_dir (one machine); postgres: shared by a cluster",
    )
    url: str | None = Field(
        default=None, description="postgres: a libpq URL, postgresql://user@host:port/db"
    )
    pool_size: int = Field(default=8, gt=0, le=200, description="postgres: connections per host")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    revocation_feed_bound_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="postgres: seconds a host goes without hearing from IONWALL's revocation "
        "feed before it denies every scoped import (fails closed) until it catches up",
    )


class NatsSettings(_Section):
    url: str | None = Field(default=None, description="None: the host starts its own nats-server")
    queue_group: str = "ionflux-hosts"
    # Credentials for an external server (``nats.url``); the server the host
    # starts makes its own token (``<data_dir>/nats/token``, mode 0600).
    token: str | None = None
    user: str | None = None
    password: str | None = None
    credentials_file: Path | None = Field(
        default=None, description="a NATS .creds file (user JWT and nkey seed)"
    )


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8620, ge=0, le=65535)
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="host processes `ionflux up` runs: one HTTP socket, one NATS queue group",
    )
    # Read while it arrives; past the limit the request is answered 413 at once.
    # 4 MiB: the largest input a transform takes (limits.max_input_bytes).
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, gt=0, description="request body limit (HTTP 413 past it)"
    )
    # A module travels base64 inside JSON (4/3 of its size): 64 MiB of body
    # carries a 48 MiB module (a Python component from componentize-py is ~40 MB).
    max_publish_body_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="body limit of POST /transforms"
    )
    max_json_depth: int = Field(
        default=64, ge=1, le=512, description="nesting of a JSON body (HTTP 422 past it)"
    )
    parse_threads: int = Field(
        default=2, ge=1, le=32, description="threads parsing and validating bodies off the loop"
    )
    metrics_public: bool = Field(
        default=False,
        description="serve /metrics without a token (a local Prometheus scraper)",
    )


class ConsoleSettings(_Section):
    """The web console ``ionflux up`` serves at ``/`` (ionflux/console)."""

    session_ttl_s: float = Field(
        default=12 * 3600, gt=0, description="a console session (and the token a link mints) lasts"
    )
    signin_link_ttl_s: float = Field(
        default=24 * 3600, gt=0, description="an unused one-time sign-in link stays valid"
    )
    max_sessions: int = Field(default=64, ge=1, description="live console sessions at most")
    max_streams: int = Field(
        default=32, ge=1, description="live views (server-sent event streams) open at once"
    )
    poll_interval_s: float = Field(
        default=0.5, gt=0, le=60, description="a live view asks the API again after this"
    )
    max_debug_runs: int = Field(
        default=4, ge=1, description="step-through debugged runs open at once on a host"
    )
    debug_pause_timeout_s: float = Field(
        default=900.0, gt=0, description="a debugged run's stop unanswered this long aborts it"
    )


class GraphSettings(_Section):
    concurrency: int = Field(default=8, gt=0)
    max_subgraph_depth: int = Field(default=3, ge=1)
    # One budget for a whole run, its sub-graphs' runs included; a graph's
    # ``budget:`` may ask for less, never more.
    max_nodes_per_run: int = Field(
        default=1_000, gt=0, description="node calls (each attempt) per run, sub-graphs included"
    )
    max_fuel_per_run: int = Field(
        default=5_000_000_000,
        gt=0,
        description="fuel per run, sub-graphs included (default 100 x limits.fuel)",
    )
    transform_names: dict[str, str] = Field(
        default_factory=dict, description="maps names used in graphs to published transforms"
    )
    # Templates are untrusted code: one render (one template string) gets this
    # budget. Steps are loop iterations, calls, filters and operators; the
    # value size counts characters and items of every intermediate value.
    template_max_steps: int = Field(
        default=100_000, gt=0, description="loop iterations, calls and operators per render"
    )
    template_max_value_bytes: int = Field(
        default=4 * 1024 * 1024,
        gt=0,
        description="characters and items of any value a template builds (and of its output)",
    )
    template_max_int_bits: int = Field(
        default=4096, ge=64, description="bits of an integer '*' or '**' may produce"
    )
    template_timeout_ms: int = Field(
        default=2_000, gt=0, description="wall clock per render (a backstop for the steps)"
    )
    # Durable runs: the host driving a run renews its lease; a run whose lease ran
    # out (or whose process on this machine is gone) is resumed by the next host
    # that looks, at start and every resume_interval_s.
    run_lease_s: float = Field(
        default=30.0, gt=0, description="seconds a run's lease lasts unless renewed"
    )
    resume_interval_s: float = Field(
        default=5.0, gt=0, description="how often `ionflux up` looks for runs to resume"
    )
    # A run whose grant is missing waits (awaiting_approval) this long for the
    # owner's answer, then fails with approval_expired.
    approval_timeout_s: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="how long a run awaiting consent waits before it fails (approval_expired)",
    )
    # Steps of `cache: content` nodes whose outputs later calls may reuse; past it,
    # the oldest entries go (0: none kept).
    content_cache_entries: int = Field(
        default=10_000, ge=0, description="content-cache entries kept (oldest evicted)"
    )

    def template_budget(self) -> TemplateBudget:
        from .graph._template import TemplateBudget

        return TemplateBudget(
            max_steps=self.template_max_steps,
            max_value_bytes=self.template_max_value_bytes,
            max_int_bits=self.template_max_int_bits,
            timeout_s=self.template_timeout_ms / 1000,
        )


class DocumentSettings(_Section):
    """Budgets of every YAML document the host reads: manifests, graphs, the
    policy file (the configuration file itself is read with the defaults)."""

    max_bytes: int = Field(default=1024 * 1024, gt=0, description="text size, checked first")
    max_depth: int = Field(default=64, ge=2, le=512, description="nesting of maps and lists")
    max_nodes: int = Field(
        default=100_000, gt=0, description="scalars, maps and lists, aliases counted as copies"
    )
    max_alias_expansion: int = Field(
        default=100_000,
        ge=0,
        description="nodes and scalar characters all aliases re-use together",
    )

    def limits(self) -> DocumentLimits:
        return DocumentLimits(
            max_bytes=self.max_bytes,
            max_depth=self.max_depth,
            max_nodes=self.max_nodes,
            max_alias_expansion=self.max_alias_expansion,
            hint=_DOCUMENT_HINT,
        )


# How an owner raises a document budget (the lower layer's refusal ends with it).
_DOCUMENT_HINT = (
    "raise documents.<limit> in ionflux.yaml (or IONFLUX_DOCUMENTS__<LIMIT>) if the document "
    "is trusted"
)


class IonwallSettings(_Section):
    policy_file: Path | None = None
    secret_values: list[str] = Field(default_factory=list)
    sensitive_fields: list[str] = Field(
        default_factory=lambda: ["password", "secret", "token", "api_key", "authorization"]
    )


class EgressSettings(_Section):
    """Where the ``http`` import may connect beyond the public internet."""

    allow_addresses: list[str] = Field(
        default_factory=list,
        description="internal addresses transforms may reach (a grant must still name the "
        "host): 10.0.0.0/8, 127.0.0.1:8080, [::1]:8080; empty: public addresses only",
    )

    @field_validator("allow_addresses")
    @classmethod
    def _parse(cls, value: list[str]) -> list[str]:
        from .runtime._egress import parse_allowed

        for entry in value:
            parse_allowed(entry)  # its ValueError names the entry
        return value


class LogSettings(_Section):
    """How ``ionflux up`` writes its log (stderr)."""

    format: Literal["text", "json"] = Field(
        default="text",
        description="text: one readable line; json: one JSON object a line, with run_id, "
        "graph, node and grant_id where known (--log-format)",
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class TracingSettings(_Section):
    """OpenTelemetry traces (``pip install 'ionflux-host[otel]'``); off by default."""

    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector to send spans to, e.g. http://127.0.0.1:4318/v1/traces; "
        "unset: no tracing",
    )
    service_name: str = "ionflux"
    sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="share of new traces recorded (a span costs tens of µs); a trace "
        "continued from a caller's traceparent follows the caller's choice",
    )


class RuntimeSettings(_Section):
    """The engine that runs components (the Extism SDK runs Extism plugins)."""

    engine: Literal["native", "wasmtime"] = Field(
        default="native",
        description="native: the PyO3 extension over the wasmtime crate for components "
        "whose imports are the world's (others on wasmtime-py); wasmtime: wasmtime-py only",
    )


class ReactorSettings(_Section):
    """The ION Reactor (``ionflux.reactor``): master plans, agents, health rules."""

    max_plan_steps: int = Field(default=64, gt=0, le=10_000, description="steps in one plan")
    max_plan_bytes: int = Field(
        default=256 * 1024, gt=0, description="a plan or agent definition's text"
    )
    max_alternative_depth: int = Field(
        default=3, ge=0, le=10, description="alternative plans started from alternative plans"
    )
    max_step_retries: int = Field(default=10, ge=0, le=100, description="retries of one step")
    max_backoff_s: float = Field(
        default=300.0, gt=0, description="the longest wait between two attempts of a step"
    )
    health_interval_s: float = Field(
        default=15.0, ge=0, description="how often the alert rules are evaluated (0: never)"
    )
    max_alert_rules: int = Field(default=64, gt=0, le=10_000)
    alert_rules: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the seed's alerting_rules: metric, condition, severity, "
        "notification_channel, and optionally emergency_plan, pre_authorized",
    )
    drain_timeout_s: float = Field(
        default=30.0, gt=0, description="retire: how long runs in flight may take to end"
    )


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IONFLUX_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = DEFAULT_DATA_DIR
    limits: Limits = Limits()
    store: StoreSettings = StoreSettings()
    state: StateSettings = StateSettings()
    nats: NatsSettings = NatsSettings()
    http: HttpSettings = HttpSettings()
    console: ConsoleSettings = ConsoleSettings()
    graph: GraphSettings = GraphSettings()
    ionwall: IonwallSettings = IonwallSettings()
    egress: EgressSettings = EgressSettings()
    documents: DocumentSettings = DocumentSettings()
    log: LogSettings = LogSettings()
    tracing: TracingSettings = TracingSettings()
    reactor: ReactorSettings = ReactorSettings()
    runtime: RuntimeSettings = RuntimeSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file (passed as init kwargs), which beats defaults.
        return (env_settings, init_settings)


def load_config(path: Path | None = None, **overrides: Any) -> Config:
    """Loads the configuration; ``overrides`` (e.g. ``data_dir=``) beat everything."""
    file_values: dict[str, Any] = {}
    candidate = path or _env_path("IONFLUX_CONFIG")
    if candidate is None:
        data_dir = overrides.get("data_dir") or _env_path("IONFLUX_DATA_DIR") or DEFAULT_DATA_DIR
        default_file = Path(data_dir) / "ionflux.yaml"
        candidate = default_file if default_file.is_file() else None
    if candidate is not None:
        # The file's own budgets cannot come from the file: the defaults apply.
        limits = DocumentSettings().limits()
        try:
            loaded = load_yaml(read_text(candidate, limits), str(candidate), limits)
        except OSError as exc:
            raise ConfigError(f"{candidate}: cannot read configuration: {exc}") from exc
        except DocumentError as exc:
            raise ConfigError(f"cannot read configuration: {exc}", reason=exc) from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{candidate}: configuration must be a mapping")
        file_values = loaded or {}
    try:
        config = Config(**file_values)
        if overrides:
            merged = config.model_dump() | {k: v for k, v in overrides.items() if v is not None}
            config = Config.model_validate(merged)
    except ValidationError as exc:
        where = f"{candidate}: " if candidate else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{where}invalid configuration: {problems}") from exc
    return config


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None
