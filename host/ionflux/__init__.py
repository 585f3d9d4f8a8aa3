"""IONFLUX host: runs untrusted, content-addressed WebAssembly transforms,
every capability gated by IONWALL.

    from ionflux import Host, load_config
    host = Host(load_config())
    host.publish(Path("manifests/uppercase.yaml"))
    host.invoke("uppercase", {"text": "hi"}).value   # {"text": "HI"}
"""

from ._errors import (
    AddressRefused,
    BackendUnavailable,
    CidMismatch,
    ConfigError,
    ConsentRequired,
    DataDirError,
    DeadlineExceeded,
    FuelExhausted,
    GuestError,
    GuestTrap,
    ImportBudgetExceeded,
    ImportOutsideWorld,
    InvalidCid,
    InvalidInput,
    InvalidOutput,
    InvalidPublisherSignature,
    IonfluxError,
    ManifestError,
    MemoryLimitExceeded,
    ModuleError,
    NotFound,
    NotWasm,
    OutputTooLarge,
    PermissionDenied,
    RunBudgetExceeded,
    StackOverflow,
    StoreError,
    SubjectReserved,
    TooLarge,
    TransformFailed,
    UnknownTransform,
)
from .config import Config, load_config
from .host import Host, Invocation
from .manifest import Manifest, load_manifest
from .registry import PublishedTransform

__all__ = [
    "AddressRefused",
    "BackendUnavailable",
    "CidMismatch",
    "Config",
    "ConfigError",
    "ConsentRequired",
    "DataDirError",
    "DeadlineExceeded",
    "FuelExhausted",
    "GuestError",
    "GuestTrap",
    "Host",
    "ImportBudgetExceeded",
    "ImportOutsideWorld",
    "InvalidCid",
    "InvalidInput",
    "InvalidOutput",
    "InvalidPublisherSignature",
    "Invocation",
    "IonfluxError",
    "Manifest",
    "ManifestError",
    "MemoryLimitExceeded",
    "ModuleError",
    "NotFound",
    "NotWasm",
    "OutputTooLarge",
    "PermissionDenied",
    "PublishedTransform",
    "RunBudgetExceeded",
    "StackOverflow",
    "StoreError",
    "SubjectReserved",
    "TooLarge",
    "TransformFailed",
    "UnknownTransform",
    "load_config",
    "load_manifest",
]
