"""JSON Schema for a run's input and output (the ``jsonschema`` library).

The seeds write OpenAPI's ``nullable: true`` beside ``type``; standard JSON
Schema has no such keyword, so it is rewritten to ``type: [T, "null"]``
before use. ``default`` values of object properties are filled into the
input before it is validated, as a user of ``input_schema`` expects.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

from .._errors import SchemaViolation


def openapi_to_jsonschema(schema: Any) -> Any:
    """A copy of ``schema`` with every ``nullable: true`` turned into a ``"null"`` type."""
    if isinstance(schema, list):
        return [openapi_to_jsonschema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: openapi_to_jsonschema(value) for key, value in schema.items() if key != "nullable"}
    if schema.get("nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            out["type"] = [*kind, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def compile_schema(schema: dict[str, Any]) -> Validator | None:
    """A validator for ``schema`` (``None`` for an empty schema); raises ``SchemaError``."""
    if not schema:
        return None
    prepared = openapi_to_jsonschema(schema)
    cls = jsonschema.validators.validator_for(prepared)
    cls.check_schema(prepared)
    validator: Validator = cls(prepared)
    return validator


def schema_problems(schema: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Why ``schema`` is not a valid JSON Schema, as (path inside it, message) pairs."""
    try:
        compile_schema(schema)
    except SchemaError as exc:
        return [(tuple(exc.absolute_path), exc.message)]
    return []


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with the ``default`` of each missing object property filled in."""
    if not isinstance(value, dict) or not isinstance(schema.get("properties"), dict):
        return value
    out = dict(value)
    for key, sub in schema["properties"].items():
        if not isinstance(sub, dict):
            continue
        if key not in out and "default" in sub:
            out[key] = sub["default"]
        elif key in out:
            out[key] = apply_defaults(sub, out[key])
    return out


# Validators whose verdict on a mapping or list depends only on its keys or its
# length: still sound when some values inside are not known yet.
_SHAPE_ONLY = frozenset(
    {
        "required",
        "additionalProperties",
        "minProperties",
        "maxProperties",
        "minItems",
        "maxItems",
        "propertyNames",
        "dependentRequired",
    }
)


def known_problems(
    validator: Validator, value: Any, unknown: dict[tuple[str | int, ...], bool]
) -> list[tuple[tuple[str | int, ...], str]]:
    """The errors of ``value`` that hold whatever its unknown parts turn out to be.

    ``unknown`` maps each position not known yet to whether it is at least known
    to be a string (a template that renders text); its placeholder in ``value``
    is ``""`` then, ``None`` otherwise. An error at an unknown position counts
    only when it is a ``type`` error of a string; an error about a mapping or
    list holding unknown positions counts only when it is about its keys or its
    length (``required``, ``additionalProperties``, ``minItems``, …).
    """
    found: list[tuple[tuple[str | int, ...], str]] = []
    for error in validator.iter_errors(value):
        at = tuple(error.absolute_path)
        if at in unknown:
            if not (unknown[at] and error.validator == "type"):
                continue
        elif error.validator not in _SHAPE_ONLY and any(
            len(u) > len(at) and u[: len(at)] == at for u in unknown
        ):
            continue
        found.append((at, error.message))
    found.sort(key=lambda item: len(item[0]), reverse=True)
    return found


def check(which: str, validator: Validator | None, value: Any) -> None:
    """Raises ``SchemaViolation`` naming the first (deepest-first) error in ``value``."""
    if validator is None:
        return
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    raise SchemaViolation(which, path, error.message)
