"""What the console's pages show, shaped from the API's answers (pure functions).

The routes fetch JSON from the API and hand it here; templates only loop and
print. Scopes are put in the owner's words with IONWALL's own
``describe_scope``, grouped by kind in the order the CLI prompt uses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ionwall import KIND_TITLES, describe_scope

#: Statuses a run shows as done well, badly, or still going (CSS classes).
GOOD = frozenset({"success"})
BAD = frozenset({"failure", "cancelled", "interrupted", "needs_attention"})
EXPIRIES = (("", "the policy's default"), ("1h", "1 hour"), ("1d", "1 day"), ("7d", "7 days"),
            ("30d", "30 days"))  # fmt: skip


def requester(consent: Mapping[str, Any]) -> dict[str, str]:
    """Who asks: a graph, a master plan (the ION Reactor's) or a transform, by the
    name the consent request carries."""
    name = str(consent.get("transform", ""))
    reactor, plan_marker, plan = name.partition(": Master Plan ")
    if plan_marker:  # the ION Reactor's: "ION Reactor Agent: Master Plan 'name'"
        return {"kind": "plan", "name": plan.strip("'"), "by": reactor}
    for kind in ("graph", "plan", "agent"):
        if name.startswith(kind + " "):
            return {"kind": kind, "name": name[len(kind) + 1 :]}
    return {"kind": "transform", "name": name}


def grouped_scopes(scopes: Iterable[str]) -> list[dict[str, Any]]:
    """``[{title, items: [{index, scope, words}]}]`` in the prompt's order of kinds."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for index, scope in enumerate(scopes):
        try:
            kind, words = describe_scope(scope)
        except Exception:  # a scope IONWALL cannot read is shown as it is
            kind, words = "administration", scope
        groups.setdefault(kind, []).append({"index": index, "scope": scope, "words": words})
    order = [*KIND_TITLES, *sorted(k for k in groups if k not in KIND_TITLES)]
    return [
        {"title": KIND_TITLES.get(kind, kind.capitalize()), "items": groups[kind]}
        for kind in order
        if kind in groups
    ]


def approval(form: Mapping[str, Any], scopes: Sequence[str]) -> tuple[list[str] | None, str | None]:
    """The API body of an approval from the inbox's form: ``only`` (None: all, as
    asked) and ``expires``. A scope is kept when its box is ticked; its text field
    may narrow it (IONWALL refuses a narrowing that widens)."""
    expires = str(form.get("expires") or "").strip() or None
    if form.get("answer") == "all":
        return None, expires
    ticked = {str(v) for v in form.get("scope", [])}
    only = []
    for index, scope in enumerate(scopes):
        if str(index) in ticked:
            narrowed = str(form.get(f"narrow_{index}") or "").strip()
            only.append(narrowed or scope)
    return (None if only == list(scopes) else only), expires


def status_class(status: str | None) -> str:
    if status in GOOD:
        return "good"
    if status in BAD:
        return "bad"
    if status in ("awaiting_approval", "paused", "waiting"):
        return "wait"
    return "busy"


def matches(entry: Mapping[str, Any], **wanted: str | None) -> bool:
    """Whether an audit entry or grant matches every filter given (substring, any case)."""
    for key, value in wanted.items():
        if not value:
            continue
        field = entry.get(key)
        text = " ".join(map(str, field)) if isinstance(field, list) else str(field or "")
        if value.lower() not in text.lower():
            return False
    return True


def pretty(value: Any, limit: int = 4000) -> str:
    """A JSON value (or a preview string) as indented text, cut at ``limit``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return str(value)[:limit]
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "EXPIRIES",
    "approval",
    "grouped_scopes",
    "matches",
    "pretty",
    "requester",
    "status_class",
]
