"""The owner's standing rules, read from YAML.

.. code-block:: yaml

    trusted_publishers:          # requests signed by these keys are approved without asking
      - name: ACME Transforms
        key: ed25519:3q2-7wAAAA…  # base64url of the raw 32-byte public key
        scopes: ["read_pod_data:reports/**", "publish_nats_topic:ionflux.**"]  # optional cap
    always_deny:                 # never granted, and refused at every call even if granted
      - http_fetch:169.254.169.254
      - write_pod_data:system/**
    max_grant_lifetime: 90d      # an approval asking for longer is refused
    default_grant_lifetime: 30d  # when an approval names no lifetime
    consent_expires_after: 7d    # unanswered consent requests expire

A policy with nothing set trusts nobody, denies nothing outright and lets
grants live up to a year. A trusted publisher's request is auto-approved only
when its signature over the CID verifies, and only for the requested scopes
within its ``scopes`` cap (all of them when there is no cap) minus
``always_deny``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from ._documents import DEFAULT_LIMITS, DocumentLimits, load_yaml, read_text
from ._duration import format_duration, parse_duration
from ._errors import DocumentError, PolicyError, ScopeError
from ._keys import decode_public_key
from ._scope import Scope, covering, narrow_all, parse_scopes


@dataclass(frozen=True, slots=True)
class TrustedPublisher:
    name: str
    key: str  # ed25519:<base64url>
    scopes: tuple[Scope, ...] | None = None  # None: no cap


@dataclass(frozen=True, slots=True)
class Policy:
    trusted_publishers: tuple[TrustedPublisher, ...] = ()
    always_deny: tuple[Scope, ...] = ()
    max_grant_lifetime: timedelta = timedelta(days=365)
    default_grant_lifetime: timedelta = timedelta(days=30)
    consent_expires_after: timedelta = timedelta(days=7)
    source: str = field(default="(default policy)", compare=False)

    def with_trusted_publisher(
        self, name: str, key: str, scopes: Iterable[str] | None = None
    ) -> Policy:
        entry = _publisher({"name": name, "key": key, "scopes": scopes}, self.source)
        return replace(self, trusted_publishers=(*self.trusted_publishers, entry))

    def with_always_deny(self, *scopes: str) -> Policy:
        return replace(self, always_deny=(*self.always_deny, *parse_scopes(scopes)))

    def with_lifetimes(
        self, *, maximum: timedelta | None = None, default: timedelta | None = None
    ) -> Policy:
        return _checked(
            replace(
                self,
                max_grant_lifetime=maximum or self.max_grant_lifetime,
                default_grant_lifetime=default or self.default_grant_lifetime,
            )
        )

    def trusted(self, publisher: str | None) -> TrustedPublisher | None:
        if publisher is None:
            return None
        return next((p for p in self.trusted_publishers if p.key == publisher), None)

    def denies(self, scope: Scope) -> Scope | None:
        """The always-deny scope that covers ``scope``, if any."""
        return covering(self.always_deny, scope)

    def allowed_part(self, scopes: Iterable[Scope]) -> tuple[Scope, ...]:
        """``scopes`` without those an always-deny scope covers."""
        return tuple(s for s in scopes if self.denies(s) is None)

    def auto_approvable(
        self, publisher: TrustedPublisher, scopes: Iterable[Scope]
    ) -> tuple[Scope, ...]:
        wanted = self.allowed_part(scopes)
        if publisher.scopes is None:
            return wanted
        return narrow_all(wanted, publisher.scopes)

    def lifetime(self, asked: timedelta | None) -> timedelta:
        """The lifetime of a new grant; raises ``PolicyError`` past the maximum."""
        if asked is None:
            return min(self.default_grant_lifetime, self.max_grant_lifetime)
        if asked <= timedelta(0):
            raise PolicyError("a grant's lifetime must be longer than zero")
        if asked > self.max_grant_lifetime:
            raise PolicyError(
                f"a grant of {format_duration(asked)} exceeds the policy's maximum grant "
                f"lifetime of {format_duration(self.max_grant_lifetime)} ({self.source})"
            )
        return asked


def load_policy(path: Path | None, limits: DocumentLimits = DEFAULT_LIMITS) -> Policy:
    """The policy in ``path`` (YAML, read within ``limits``), or the default policy
    when ``path`` is None."""
    if path is None:
        return Policy()
    try:
        data = load_yaml(read_text(path, limits), str(path), limits)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy: {exc}") from exc
    except DocumentError as exc:
        raise PolicyError(f"cannot read the policy: {exc}") from exc
    return policy_from_dict(data or {}, source=str(path))


def policy_from_dict(data: Any, *, source: str = "(policy)") -> Policy:
    if not isinstance(data, Mapping):
        raise PolicyError(f"{source}: a policy is a mapping")
    known = {
        "trusted_publishers", "always_deny", "max_grant_lifetime",
        "default_grant_lifetime", "consent_expires_after",
    }  # fmt: skip
    unknown = sorted(set(data) - known)
    if unknown:
        raise PolicyError(f"{source}: unknown policy fields {unknown} (known: {sorted(known)})")
    publishers = data.get("trusted_publishers") or []
    if not isinstance(publishers, list):
        raise PolicyError(f"{source}: trusted_publishers must be a list")
    defaults = Policy()
    policy = Policy(
        trusted_publishers=tuple(_publisher(p, source) for p in publishers),
        always_deny=_scopes(data.get("always_deny") or [], source, "always_deny"),
        max_grant_lifetime=_duration(
            data, "max_grant_lifetime", defaults.max_grant_lifetime, source
        ),
        default_grant_lifetime=_duration(
            data, "default_grant_lifetime", defaults.default_grant_lifetime, source
        ),
        consent_expires_after=_duration(
            data, "consent_expires_after", defaults.consent_expires_after, source
        ),
        source=source,
    )
    return _checked(policy)


def _checked(policy: Policy) -> Policy:
    if policy.default_grant_lifetime > policy.max_grant_lifetime:
        raise PolicyError(
            f"{policy.source}: default_grant_lifetime is longer than max_grant_lifetime"
        )
    return policy


def _publisher(item: Any, source: str) -> TrustedPublisher:
    if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
        raise PolicyError(f"{source}: each trusted publisher needs a 'key' (ed25519:…)")
    key = item["key"]
    try:
        decode_public_key(key)
    except ValueError as exc:
        raise PolicyError(f"{source}: trusted publisher key: {exc}") from exc
    scopes = item.get("scopes")
    return TrustedPublisher(
        name=str(item.get("name") or key),
        key=key,
        scopes=None if scopes is None else _scopes(scopes, source, "trusted_publishers.scopes"),
    )


def _scopes(items: Any, source: str, where: str) -> tuple[Scope, ...]:
    if isinstance(items, str) or not isinstance(items, Iterable):
        raise PolicyError(f"{source}: {where} must be a list of scopes")
    try:
        return parse_scopes(str(s) for s in items)
    except ScopeError as exc:
        raise PolicyError(f"{source}: {where}: {exc}") from exc


def _duration(data: Mapping[str, Any], name: str, default: timedelta, source: str) -> timedelta:
    value = data.get(name)
    if value is None:
        return default
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise PolicyError(f"{source}: {name}: {exc}") from exc
