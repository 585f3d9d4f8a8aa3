"""Scopes: ``action:resource``, the unit of every permission.

The action is one of a closed list (``ACTIONS``); anything else is a
``ScopeError``, so a manifest that asks for an unknown capability fails when
it is published instead of being silently allowed or ignored.

The resource may hold globs. Each action says which characters separate the
parts of its resources (``/`` for pod paths, ``.`` for NATS subjects, ``.``
and ``:`` for ``host:port``):

* ``*`` matches one or more characters within one part: it never crosses a
  separator. ``publish_nats_topic:ionflux.*`` covers ``ionflux.digest`` but not
  ``ionflux.digest.daily``; ``http_fetch:*.example.com`` covers
  ``api.example.com`` but neither ``example.com``, ``a.b.example.com`` nor
  ``api.example.com:8080``; ``read_pod_data:reports/2026-*.json`` covers
  ``reports/2026-01.json``.
* ``**`` matches one or more characters across parts:
  ``publish_nats_topic:ionflux.**`` covers every subject below ``ionflux``.
* Everything else matches itself, and a scope always matches the whole
  resource: ``http_fetch:api.example.com`` never covers
  ``api.example.com.evil.net`` or ``api.example.com:8443``.

``covers(granted, asked)`` is inclusion: every resource ``asked`` can name is
matched by ``granted``. ``asked`` may itself hold globs (a requested scope), in
which case the answer is conservative: when in doubt, not covered.
``narrow(requested, approved)`` gives what a grant may hold: never more than
either of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

from ._errors import ScopeError

#: Every action IONWALL knows, with the characters that separate the parts of
#: its resources (what ``*`` does not cross).
ACTIONS: dict[str, str] = {
    "emit_log": "",  # debug | info | warn | error
    "read_config": "./",
    "read_pod_data": "/",  # a pod path or a CID
    "write_pod_data": "/",
    "publish_nats_topic": ".",
    "subscribe_nats_topic": ".",
    "http_fetch": ".:",  # host, or host:port when not the scheme's default
    "execute_graph": "./",
    "execute_master_plan": "./",
    "manage_agent_lifecycle": "./",
    "manage_ionwall": "./",  # owner tokens: consents | grants | audit | tokens
    "read_host": "./",  # the host's HTTP API: transforms | graphs | triggers | metrics
    "control_run": "./",  # an operator's pause | resume | cancel | retry of a graph's runs
}

LOG_LEVELS = ("debug", "info", "warn", "error")

_STAR = "*"
_GLOBSTAR = "**"
_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Scope:
    """A parsed scope. Build one with ``parse_scope``; ``str()`` gives it back."""

    action: str
    resource: str

    def __str__(self) -> str:
        return f"{self.action}:{self.resource}"

    @property
    def is_pattern(self) -> bool:
        return "*" in self.resource

    def covers(self, other: Scope | str) -> bool:
        return covers(self, other)


@lru_cache(maxsize=4096)
def parse_scope(text: str) -> Scope:
    """Parses ``action:resource``; raises ``ScopeError`` naming the string."""
    if not isinstance(text, str):
        raise ScopeError(repr(text), "a scope is a string")
    action, colon, resource = text.partition(":")
    if not colon:
        raise ScopeError(text, "expected action:resource, e.g. read_pod_data:reports/*")
    if action not in ACTIONS:
        known = ", ".join(sorted(ACTIONS))
        raise ScopeError(text, f"unknown action {action!r} (known: {known})")
    if not resource:
        raise ScopeError(text, "the resource after ':' is empty (use * or ** for any)")
    if _BAD_CHARS.search(resource):
        raise ScopeError(text, "the resource contains whitespace or control characters")
    if "***" in resource:
        raise ScopeError(text, "use * for one part or ** for any number of parts, not ***")
    if ">" in resource and ACTIONS[action] == ".":
        raise ScopeError(text, "NATS '>' is not supported: use ** to cover many tokens")
    if action == "http_fetch":
        resource = resource.lower()
    if action == "emit_log" and "*" not in resource and resource not in LOG_LEVELS:
        raise ScopeError(text, f"unknown log level (known: {', '.join(LOG_LEVELS)})")
    return Scope(action, resource)


def parse_scopes(texts: Iterable[str]) -> tuple[Scope, ...]:
    """Parses each scope, dropping duplicates, keeping the order."""
    return tuple(dict.fromkeys(parse_scope(t) for t in texts))


def _as_scope(scope: Scope | str) -> Scope:
    return scope if isinstance(scope, Scope) else parse_scope(scope)


def covers(granted: Scope | str, asked: Scope | str) -> bool:
    """True when every resource ``asked`` can name is matched by ``granted``."""
    g, a = _as_scope(granted), _as_scope(asked)
    if g.action != a.action:
        return False
    if not a.is_pattern:
        return _regex(g.action, g.resource).fullmatch(a.resource) is not None
    return _includes(_tokens(g.resource), _tokens(a.resource), ACTIONS[g.action])


def covering(granted: Iterable[Scope], asked: Scope | str) -> Scope | None:
    """The first of ``granted`` that covers ``asked``, or None."""
    a = _as_scope(asked)
    for g in granted:
        if covers(g, a):
            return g
    return None


def narrow(requested: Scope | str, approved: Scope | str) -> Scope | None:
    """The part of ``requested`` that ``approved`` allows, or None.

    The answer is covered by both, so approving never widens a request:
    ``narrow("publish_nats_topic:ionflux.digest.*", "publish_nats_topic:ionflux.**")``
    is ``publish_nats_topic:ionflux.digest.*``. When neither covers the other
    the exact overlap may not be one glob; the answer is then None (nothing
    granted), which errs on the side of the owner.
    """
    r, a = _as_scope(requested), _as_scope(approved)
    if covers(a, r):
        return r
    if covers(r, a):
        return a
    return None


def narrow_all(requested: Sequence[Scope], approved: Sequence[Scope]) -> tuple[Scope, ...]:
    """Every part of ``requested`` some ``approved`` allows, without redundant entries."""
    found: list[Scope] = []
    for r in requested:
        for a in approved:
            n = narrow(r, a)
            if n is not None and n not in found:
                found.append(n)
    return tuple(s for s in found if not any(o != s and covers(o, s) for o in found))


@cache
def _regex(action: str, resource: str) -> re.Pattern[str]:
    seps = ACTIONS[action]
    one_part = f"[^{re.escape(seps)}]+" if seps else ".+"
    out: list[str] = []
    for token in _tokens(resource):
        if token == _GLOBSTAR:
            out.append(".+")
        elif token == _STAR:
            out.append(one_part)
        else:
            out.append(re.escape(token))
    return re.compile("".join(out), re.DOTALL)


@lru_cache(maxsize=4096)
def _tokens(resource: str) -> tuple[str, ...]:
    """Characters, with ``*`` and ``**`` as single tokens (a literal ``*`` cannot occur)."""
    out: list[str] = []
    i = 0
    while i < len(resource):
        if resource.startswith(_GLOBSTAR, i):
            out.append(_GLOBSTAR)
            i += 2
        else:
            out.append(resource[i])
            i += 1
    return tuple(out)


def _includes(p: tuple[str, ...], q: tuple[str, ...], seps: str) -> bool:
    """Does pattern ``p`` match every string pattern ``q`` matches?

    Each glob of ``q`` must be swallowed whole by a glob of ``p`` at least as
    wide (``**`` swallows anything, ``*`` only characters and ``*`` that stay
    within one part); literals must meet equal literals. Two globs of ``p`` are
    never adjacent (that would be ``**`` or ``***``), so no glob of ``q`` ever
    needs to be split between two of them.
    """

    @cache
    def match(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(q)
        token = p[i]
        if token == _GLOBSTAR:
            return any(match(i + 1, k) for k in range(j + 1, len(q) + 1))
        if token == _STAR:
            for k in range(j, len(q)):
                t = q[k]
                if t == _GLOBSTAR or t in seps:
                    return False
                if match(i + 1, k + 1):
                    return True
            return False
        return j < len(q) and q[j] == token and match(i + 1, j + 1)

    return match(0, 0)
