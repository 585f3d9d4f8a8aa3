"""IONFLUX host: runs untrusted, content-addressed WebAssembly transforms,
every capability gated by IONWALL.

    from ionflux import Host, load_config
    host = Host(load_config())
    host.publish(Path("manifests/uppercase.yaml"))
    host.invoke("uppercase", {"text": "hi"}).value   # {"text": "HI"}

Every error a caller can catch is exported here (the tree is drawn in
``ionflux._errors``). Errors load eagerly; everything else on first use, so
``import ionflux.store`` loads neither wasmtime nor IONWALL's gate.
"""

from typing import TYPE_CHECKING, Any

from ._errors import (
    AddressRefused,
    AgentDefinitionError,
    AgentNotFound,
    AlertRuleError,
    AuditNotWritten,
    BackendUnavailable,
    BodyTooLarge,
    BusUnavailable,
    CallCancelled,
    CidMismatch,
    ConfigError,
    ConsentRequired,
    ConsoleError,
    CrossSiteRequest,
    DataDirError,
    DeadlineExceeded,
    FuelExhausted,
    GraphError,
    GraphNotFound,
    GraphProblem,
    GraphValidationError,
    GraphVersionExists,
    GuestBuildError,
    GuestError,
    GuestTrap,
    ImportBudgetExceeded,
    ImportOutsideWorld,
    InvalidAgentTransition,
    InvalidCid,
    InvalidInput,
    InvalidOutput,
    InvalidPublisherSignature,
    InvalidRunTransition,
    IonfluxError,
    JsonTooDeep,
    ManifestError,
    MemoryLimitExceeded,
    ModuleError,
    NotFound,
    NotJson,
    NotWasm,
    OutputTooLarge,
    PermissionDenied,
    PlanNotFound,
    PlanValidationError,
    ReactorError,
    ReactorLimitExceeded,
    RunBudgetExceeded,
    RunLogNotStored,
    RunNotRecorded,
    SchemaViolation,
    SessionLimitReached,
    StackOverflow,
    StateConflict,
    StateError,
    StateSchemaError,
    StateUnavailable,
    StoreError,
    SubjectReserved,
    TemplateBudgetExceeded,
    TemplateError,
    TooLarge,
    TransformFailed,
    TriggerError,
    UnknownTransform,
    WasiRefused,
)

if TYPE_CHECKING:
    from .config import Config, load_config
    from .graph import ChildRunFailed
    from .host import Host, Invocation
    from .manifest import Manifest, load_manifest
    from .registry import PublishedTransform
    from .runtime import TableTooLarge
    from .store import ImportMismatch
    from .triggers import (
        Overloaded,
        RunRefused,
        ShuttingDown,
        TriggerConfigError,
        Unauthorized,
    )

# name -> the module or package (under ionflux) that exports it, imported on first use
_LAZY = {
    "ChildRunFailed": "graph",
    "Config": "config",
    "Host": "host",
    "ImportMismatch": "store",
    "Invocation": "host",
    "Manifest": "manifest",
    "Overloaded": "triggers",
    "PublishedTransform": "registry",
    "RunRefused": "triggers",
    "ShuttingDown": "triggers",
    "TableTooLarge": "runtime",
    "TriggerConfigError": "triggers",
    "Unauthorized": "triggers",
    "load_config": "config",
    "load_manifest": "manifest",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "AddressRefused",
    "AgentDefinitionError",
    "AgentNotFound",
    "AlertRuleError",
    "AuditNotWritten",
    "BackendUnavailable",
    "BodyTooLarge",
    "BusUnavailable",
    "CallCancelled",
    "ChildRunFailed",
    "CidMismatch",
    "Config",
    "ConfigError",
    "ConsentRequired",
    "ConsoleError",
    "CrossSiteRequest",
    "DataDirError",
    "DeadlineExceeded",
    "FuelExhausted",
    "GraphError",
    "GraphNotFound",
    "GraphProblem",
    "GraphValidationError",
    "GraphVersionExists",
    "GuestBuildError",
    "GuestError",
    "GuestTrap",
    "Host",
    "ImportBudgetExceeded",
    "ImportMismatch",
    "ImportOutsideWorld",
    "InvalidAgentTransition",
    "InvalidCid",
    "InvalidInput",
    "InvalidOutput",
    "InvalidPublisherSignature",
    "InvalidRunTransition",
    "Invocation",
    "IonfluxError",
    "JsonTooDeep",
    "Manifest",
    "ManifestError",
    "MemoryLimitExceeded",
    "ModuleError",
    "NotFound",
    "NotJson",
    "NotWasm",
    "OutputTooLarge",
    "Overloaded",
    "PermissionDenied",
    "PlanNotFound",
    "PlanValidationError",
    "PublishedTransform",
    "ReactorError",
    "ReactorLimitExceeded",
    "RunBudgetExceeded",
    "RunLogNotStored",
    "RunNotRecorded",
    "RunRefused",
    "SchemaViolation",
    "SessionLimitReached",
    "ShuttingDown",
    "StackOverflow",
    "StateConflict",
    "StateError",
    "StateSchemaError",
    "StateUnavailable",
    "StoreError",
    "SubjectReserved",
    "TableTooLarge",
    "TemplateBudgetExceeded",
    "TemplateError",
    "TooLarge",
    "TransformFailed",
    "TriggerConfigError",
    "TriggerError",
    "Unauthorized",
    "UnknownTransform",
    "WasiRefused",
    "load_config",
    "load_manifest",
]
