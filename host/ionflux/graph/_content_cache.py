"""Step results by content: a ``cache: content`` node reuses an earlier step's output.

A node whose transform is pure (``pure: true`` in its manifest, accepted only with
read scopes) computes the same output from the same module, input, grant and
limits. Its call is keyed by a digest of exactly those: the module CID, a digest of
the REAL rendered input (canonical JSON: sorted keys, compact), the run's grant id,
a digest of the transform's effective limits and config (a limit change never
reuses a result made under another), and the node's ``outputs`` shaping. Only the
digest is stored; the input is not. The recorded masked-input CID of a step could
not serve as key: two different secrets mask alike.

A hit is answered from the run history: the outputs of the step recorded under the
key (``run_steps.outputs_json``, the real outputs, where a done step keeps them for
resume anyway; the cache table holds key -> step only, no second copy). A miss calls
the guest as usual and its step row carries the key, so the entry is written in the
same transaction as the step's done row (``_history._insert_steps``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING, Any

from ._plan import TransformInfo

if TYPE_CHECKING:
    from ._history import RunHistory
    from ._plan import TransformCatalog

# Canonical JSON of a value: one text per value, whatever the order of its keys.
_CANONICAL = json.JSONEncoder(
    separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
)


def digest(value: Any) -> str:
    """The SHA-256 (hex) of ``value`` as canonical JSON."""
    return hashlib.sha256(_CANONICAL.encode(value).encode("utf-8")).hexdigest()


def content_key(
    transform: TransformInfo, inputs: Any, grant_id: str | None, outputs: Any
) -> str | None:
    """The key of one call, or None when it must not be cached: a transform that asks
    for scopes, run without a graph grant (the host would pick a grant per call, so
    two calls may read under different grants), or an input that is not plain JSON."""
    if grant_id is None and transform.scopes:
        return None
    try:
        data = digest(inputs)
    except (TypeError, ValueError):
        return None
    text = "\n".join((transform.cid, data, grant_id or "-", transform.fingerprint))
    if outputs is not None:
        text += "\n" + digest(outputs)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def lookup(history: RunHistory, key: str) -> tuple[bool, Any]:
    """(hit, real outputs) of the step recorded under ``key``."""
    text = history.cached_outputs(key)
    if text is None:
        return False, None
    return True, json.loads(text)


class PureCatalog:
    """The transform catalog of a real host, with what the cache keys need:
    the manifest's ``pure`` and a digest of the effective limits and config."""

    def __init__(self, inner: TransformCatalog, host: Any):
        self.inner = inner
        self.host = host

    def lookup_transform(self, name: str) -> TransformInfo | None:
        info = self.inner.lookup_transform(name)
        if info is None:
            return None
        return dataclasses.replace(info, **facts(self.host, f"{info.name}@{info.version}"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def facts(host: Any, ref: str) -> dict[str, Any]:
    """``pure`` and ``fingerprint`` of a published transform of ``host``: the
    fingerprint covers the host's limits and the manifest's overrides of them (every
    budget a call runs under), its config and ABI."""
    manifest = host.registry.get(ref).manifest
    fingerprint = digest(
        {
            "limits": host.config.limits.model_dump(mode="json"),
            "overrides": manifest.limits.model_dump(mode="json"),
            "config": manifest.config,
            "abi": manifest.abi,
        }
    )
    return {"pure": manifest.pure, "fingerprint": fingerprint}
