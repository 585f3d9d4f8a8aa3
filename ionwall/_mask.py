"""Masking: what must never reach a log (the audit log, run logs) in clear.

Two rules, after the seeds' ``sensitive_fields_to_mask_in_log``:

* every occurrence of a configured secret value, anywhere in any string, is
  replaced by ``***``;
* the value of a mapping key named like a sensitive field is replaced by
  ``***`` whatever it holds. Names are compared without case, ``_`` or ``-``,
  and a key matches when it contains a sensitive name: ``api_key``,
  ``X-Api-Key`` and ``db_password`` all match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
DEFAULT_SENSITIVE_FIELDS = ("password", "secret", "token", "api_key", "authorization")
_SCALARS = frozenset({int, float, bool, type(None)})
_KNOWN_KEYS = 4096


def _normalise(name: str) -> str:
    return re.sub(r"[-_\s]", "", name.lower())


class Masker:
    """Masks secret values and sensitive fields; cheap when there is nothing to mask."""

    __slots__ = ("_fields", "_known", "_secrets")

    def __init__(
        self,
        secret_values: Iterable[str] = (),
        sensitive_fields: Iterable[str] = DEFAULT_SENSITIVE_FIELDS,
    ) -> None:
        values = sorted({v for v in secret_values if v}, key=len, reverse=True)
        self._secrets = re.compile("|".join(map(re.escape, values))) if values else None
        self._fields = tuple(n for n in (_normalise(f) for f in sensitive_fields) if n)
        # Mapping keys repeat (the same fields in every record): each is judged once.
        self._known: dict[str, bool] = {}

    def text(self, text: str) -> str:
        """``text`` with every secret value replaced by ``***``."""
        if self._secrets is None:
            return text
        return self._secrets.sub(MASK, text)

    def is_sensitive(self, field: str) -> bool:
        known = self._known.get(field)
        if known is None:
            name = _normalise(field)
            known = any(f in name for f in self._fields)
            if len(self._known) < _KNOWN_KEYS:  # keys chosen by callers: bounded
                self._known[field] = known
        return known

    def value(self, value: Any) -> Any:
        """A copy of ``value`` (JSON-like data) with secrets and sensitive fields masked."""
        kind = type(value)
        if kind is str:
            return value if self._secrets is None else self._secrets.sub(MASK, value)
        if kind in _SCALARS:
            return value
        if kind is dict or isinstance(value, Mapping):
            return self._mapping(value)
        if kind is list or isinstance(value, list | tuple):
            return [self._item(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def _mapping(self, value: Mapping[Any, Any]) -> dict[Any, Any]:
        # ``value``'s rule for each entry, with the common leaves (a known key, a
        # scalar, a string when there are no secrets) decided here: a run records
        # every step's values, and a call per leaf cost more than the copy.
        out: dict[Any, Any] = {}
        known = self._known
        plain_str = self._secrets is None
        for k, v in value.items():
            if type(k) is str:
                sensitive = known.get(k)
                if sensitive is None:
                    sensitive = self.is_sensitive(k)
            else:
                sensitive = isinstance(k, str) and self.is_sensitive(k)
            if sensitive:
                out[k] = MASK
                continue
            kind = type(v)
            out[k] = v if kind in _SCALARS or (plain_str and kind is str) else self.value(v)
        return out

    def _item(self, v: Any) -> Any:
        kind = type(v)
        if kind in _SCALARS or (kind is str and self._secrets is None):
            return v
        return self.value(v)
