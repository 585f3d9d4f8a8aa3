"""Transform manifests: what a published transform is and what it asks for.

A manifest is YAML::

    name: uppercase
    version: 0.1.0
    description: Upper-cases the text field.
    abi: component              # or extism
    module:
      cid: bafkrei…             # what `ipfs add --cid-version=1 --raw-leaves` prints
      path: ../build/transforms/uppercase.wasm   # relative to the manifest
    scopes: []                  # IONWALL scopes the transform may ask for
    pure: false                 # true: same module, input, grant and limits give the same
                                # output (only read scopes: see PURE_ACTIONS); a graph node
                                # may then reuse an earlier step's output (`cache: content`)
    input_schema: {…}           # JSON Schema of run's input
    output_schema: {…}          # JSON Schema of run's output
    limits: {}                  # optional per-call overrides: fuel, timeout_ms, memory_bytes, …
    config: {}                  # optional default values for the config import
    publisher: {key: …, signature: …}   # optional Ed25519 signature over the CID

Every manifest text is read by IONWALL's bounded YAML loader (size, nesting,
nodes and alias expansion budgets, ``documents.*`` in the configuration), and
the model bounds each field: a registry row is served on every listing, so a
huge but alias-free manifest is refused too, naming the field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from ionwall import DocumentError, DocumentLimits, load_yaml, read_text

from ._errors import ManifestError

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")

# Field budgets of a manifest. Generous for anything a transform needs; a row
# past them would be stored once and served on every `GET /transforms`.
MAX_DESCRIPTION_CHARS = 4_096
MAX_SCHEMA_BYTES = 64 * 1024  # each of input_schema and output_schema, as compact JSON
MAX_SCOPES = 256
MAX_SCOPE_CHARS = 512
MAX_CONFIG_ENTRIES = 256
MAX_CONFIG_BYTES = 64 * 1024  # all keys and values together
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)

#: The scope actions a ``pure: true`` transform may ask for: reads (and its own log
#: lines). A step reused from the content cache makes no call, so it must have no
#: effect a second call would have had: no writes, no publishing, no HTTP.
PURE_ACTIONS = frozenset({"read_config", "read_pod_data", "emit_log"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModuleRef(_Strict):
    cid: str = Field(min_length=1, max_length=256)
    path: str | None = Field(default=None, max_length=4_096)


class LimitOverrides(_Strict):
    fuel: int | None = Field(default=None, gt=0)
    timeout_ms: int | None = Field(default=None, gt=0)
    memory_bytes: int | None = Field(default=None, gt=0)
    # Core instances one call may create: a componentize-py or componentize-qjs
    # component is 11-14 instances (CPython or QuickJS and their adapters).
    instances: int | None = Field(default=None, gt=0)
    max_input_bytes: int | None = Field(default=None, gt=0)
    max_output_bytes: int | None = Field(default=None, gt=0)
    max_import_calls: int | None = Field(default=None, gt=0)
    max_audit_bytes: int | None = Field(default=None, gt=0)
    max_log_bytes: int | None = Field(default=None, gt=0)


class Publisher(_Strict):
    key: str = Field(min_length=1, max_length=256, description="Ed25519 public key, base64url")
    signature: str = Field(
        min_length=1, max_length=256, description="Ed25519 signature over the CID, base64url"
    )
    name: str | None = Field(default=None, max_length=256)


class Manifest(_Strict):
    name: str
    version: str
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)
    abi: Literal["component", "extism"]
    module: ModuleRef
    scopes: list[Annotated[str, Field(max_length=MAX_SCOPE_CHARS)]] = Field(
        default_factory=list, max_length=MAX_SCOPES
    )
    # Declared by the publisher: the output depends on the module, the input, the
    # grant and the limits only. Accepted only with read scopes (``PURE_ACTIONS``).
    pure: bool = False
    input_schema: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] = Field(default_factory=dict)
    limits: LimitOverrides = LimitOverrides()
    config: dict[str, str] = Field(default_factory=dict, max_length=MAX_CONFIG_ENTRIES)
    publisher: Publisher | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be lower-case letters, digits and '-', starting with a letter")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _VERSION.match(value):
            raise ValueError("must be a semantic version such as 1.2.3")
        return value

    @field_validator("pure")
    @classmethod
    def _pure(cls, value: bool, info: ValidationInfo) -> bool:
        if value:
            scopes = info.data.get("scopes") or []
            effects = [s for s in scopes if s.partition(":")[0] not in PURE_ACTIONS]
            if effects:
                allowed = ", ".join(sorted(PURE_ACTIONS))
                raise ValueError(
                    f"a pure transform asks for read scopes only ({allowed}); "
                    f"{effects[0]!r} is not one: drop 'pure' or the scope"
                )
        return value

    @field_validator("config")
    @classmethod
    def _config_size(cls, value: dict[str, str]) -> dict[str, str]:
        size = sum(len(k) + len(v) for k, v in value.items())
        if size > MAX_CONFIG_BYTES:
            raise ValueError(
                f"{size} characters of keys and values, past the limit of {MAX_CONFIG_BYTES}"
            )
        return value

    @field_validator("input_schema", "output_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if info.context and info.context.get("checked"):
            return value  # read back from the registry: checked when it was published
        # Measured before jsonschema walks it: a shared (aliased) subtree is
        # counted as many times as it appears, as the stored JSON would hold it.
        size = _json_size(value, MAX_SCHEMA_BYTES)
        if size > MAX_SCHEMA_BYTES:
            raise ValueError(
                f"more than {MAX_SCHEMA_BYTES} bytes as JSON, past the limit of {MAX_SCHEMA_BYTES}"
            )
        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from exc
        return value


def parse_manifest(data: Any, *, path: str | None = None, checked: bool = False) -> Manifest:
    """Validates manifest data; the error names the first bad field. ``checked``
    skips re-checking the JSON Schemas of a manifest read back from the registry."""
    if not isinstance(data, dict):
        raise ManifestError("a manifest must be a YAML mapping", path=path)
    try:
        return Manifest.model_validate(data, context={"checked": checked})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        message = "field required" if first["type"] == "missing" else first["msg"]
        message = message.removeprefix("Value error, ")
        raise ManifestError(message, path=path, field=field) from exc


def parse_manifest_text(
    text: str | bytes, *, path: str = "<manifest>", limits: DocumentLimits | None = None
) -> Manifest:
    """A manifest from YAML (or JSON) text, read within ``limits`` (the
    ``documents.*`` budgets); ``path`` names it in errors (``<http>``)."""
    try:
        data = load_yaml(text, path, limits or _default_limits())
    except DocumentError as exc:
        raise _refused(exc) from exc
    return parse_manifest(data, path=path)


def load_manifest(path: Path, limits: DocumentLimits | None = None) -> Manifest:
    limits = limits or _default_limits()
    try:
        text = read_text(path, limits)
    except OSError as exc:
        raise ManifestError(f"cannot read: {exc.strerror}", path=str(path)) from exc
    except DocumentError as exc:
        raise _refused(exc) from exc
    return parse_manifest_text(text, path=str(path), limits=limits)


def _default_limits() -> DocumentLimits:
    from .config import DocumentSettings

    return DocumentSettings().limits()


def _refused(exc: DocumentError) -> ManifestError:
    where = f"line {exc.line}: " if exc.line else ""
    return ManifestError(where + exc.problem, path=exc.document, reason=exc)


def _json_size(value: Any, limit: int) -> int:
    """The compact JSON size of ``value``, counted without building it; stops
    once past ``limit`` (so a shared subtree cannot make it slow)."""
    size = 0
    stack = [value]
    while stack and size <= limit:
        item = stack.pop()
        if isinstance(item, dict):
            size += 2 + len(item)
            for key, sub in item.items():
                size += len(str(key)) + 3
                stack.append(sub)
        elif isinstance(item, list | tuple):
            size += 2 + len(item)
            stack.extend(item)
        elif isinstance(item, str):
            size += len(item) + 2
        else:
            size += len(_ENCODER.encode(item))
    return size


def module_path(manifest: Manifest, manifest_file: Path) -> Path | None:
    """The module file a manifest points at, resolved against the manifest's folder."""
    if manifest.module.path is None:
        return None
    return (manifest_file.parent / manifest.module.path).resolve()
