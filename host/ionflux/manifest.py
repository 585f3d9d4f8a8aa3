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
    input_schema: {…}           # JSON Schema of run's input
    output_schema: {…}          # JSON Schema of run's output
    limits: {}                  # optional per-call overrides: fuel, timeout_ms, memory_bytes, …
    config: {}                  # optional default values for the config import
    publisher: {key: …, signature: …}   # optional Ed25519 signature over the CID
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import jsonschema
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from ._errors import ManifestError

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModuleRef(_Strict):
    cid: str = Field(min_length=1)
    path: str | None = None


class LimitOverrides(_Strict):
    fuel: int | None = Field(default=None, gt=0)
    timeout_ms: int | None = Field(default=None, gt=0)
    memory_bytes: int | None = Field(default=None, gt=0)
    max_input_bytes: int | None = Field(default=None, gt=0)
    max_output_bytes: int | None = Field(default=None, gt=0)
    max_import_calls: int | None = Field(default=None, gt=0)
    max_audit_bytes: int | None = Field(default=None, gt=0)
    max_log_bytes: int | None = Field(default=None, gt=0)


class Publisher(_Strict):
    key: str = Field(min_length=1, description="Ed25519 public key, base64url")
    signature: str = Field(min_length=1, description="Ed25519 signature over the CID, base64url")
    name: str | None = None


class Manifest(_Strict):
    name: str
    version: str
    description: str = ""
    abi: Literal["component", "extism"]
    module: ModuleRef
    scopes: list[str] = Field(default_factory=list)
    input_schema: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] = Field(default_factory=dict)
    limits: LimitOverrides = LimitOverrides()
    config: dict[str, str] = Field(default_factory=dict)
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

    @field_validator("input_schema", "output_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if info.context and info.context.get("checked"):
            return value  # read back from the registry: checked when it was published
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
        raise ManifestError(message, path=path, field=field) from exc


def load_manifest(path: Path) -> Manifest:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(f"cannot read: {exc.strerror}", path=str(path)) from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"not valid YAML: {exc}", path=str(path)) from exc
    return parse_manifest(data, path=str(path))


def module_path(manifest: Manifest, manifest_file: Path) -> Path | None:
    """The module file a manifest points at, resolved against the manifest's folder."""
    if manifest.module.path is None:
        return None
    return (manifest_file.parent / manifest.module.path).resolve()
