"""Consent requests and the prompt a person reads before answering one.

A request names who asks (transform name, version, module CID, publisher key
and whether its signature over the CID verifies) and what for (scopes). The
prompt explains each scope in words, grouped by kind, as the seeds' IONWALL
checkpoint does: "Transform X wants to …. Allow?".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ._duration import format_duration
from ._policy import Policy
from ._scope import Scope, parse_scope


class ConsentStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    id: str
    subject: str  # the module (or graph) CID
    transform: str
    version: str
    scopes: tuple[str, ...]
    publisher: str | None  # ed25519:… when signed
    signature_valid: bool | None  # None: unsigned
    created_at: datetime
    expires_at: datetime  # an unanswered request expires then
    status: ConsentStatus
    answered_at: datetime | None = None
    answered_by: str | None = None  # "owner", or "policy: <trusted publisher>"
    grant_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subject": self.subject,
            "transform": self.transform,
            "version": self.version,
            "scopes": list(self.scopes),
            "publisher": self.publisher,
            "signature_valid": self.signature_valid,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "status": self.status.value,
            "answered_at": self.answered_at.isoformat() if self.answered_at else None,
            "answered_by": self.answered_by,
            "grant_id": self.grant_id,
        }


def fingerprint(
    subject: str,
    transform: str,
    version: str,
    scopes: Sequence[str],
    publisher: str | None,
    signature_valid: bool | None,
) -> str:
    """Identifies identical requests, so asking twice does not pile up prompts."""
    blob = json.dumps(
        [subject, transform, version, sorted(scopes), publisher, signature_valid],
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


# The kinds a prompt groups scopes under, in the order it shows them.
KINDS = ("storage", "messaging", "network", "orchestration", "logging and configuration",
         "administration")  # fmt: skip
#: The heading a prompt (and the console) shows over each kind's scopes.
KIND_TITLES = {
    "storage": "Storage (your IONPOD)",
    "messaging": "Messaging (the NATS bus)",
    "network": "Network",
    "orchestration": "Orchestration",
    "logging and configuration": "Logging and configuration",
    "administration": "Administration of IONWALL",
}
# (kind, sentence with {r}, the noun a resource names). {r} reads "the host
# api.example.com", "the subject 'ionflux.digest.*'" or, for **, "any host".
_ACTIONS: dict[str, tuple[str, str, str]] = {
    "read_pod_data": ("storage", "read data from your IONPOD at {r}", "path"),
    "write_pod_data": ("storage", "write data to your IONPOD at {r}", "path"),
    "publish_nats_topic": ("messaging", "publish messages on {r}", "subject"),
    "subscribe_nats_topic": ("messaging", "receive messages sent to {r}", "subject"),
    "http_fetch": ("network", "send HTTP requests to {r}", "host"),
    "execute_graph": ("orchestration", "run {r}", "graph"),
    "execute_master_plan": (
        "orchestration",
        "execute {r}, which may invoke other agents",
        "Master Plan",
    ),
    "manage_agent_lifecycle": ("orchestration", "deploy, update or retire {r}", "agent"),
    "control_run": ("orchestration", "pause, resume, cancel or retry the runs of {r}", "graph"),
    "emit_log": ("logging and configuration", "write messages to the run log at {r}", "level"),
    "read_config": ("logging and configuration", "read {r} you set", "configuration value"),
    "manage_ionwall": (
        "administration",
        "manage IONWALL ({r}): answer consents, revoke grants, read the audit",
        "part",
    ),
    "read_host": ("administration", "read what the host lists at {r}", "area"),
}


def describe_scope(scope: Scope | str) -> tuple[str, str]:
    """(kind, a sentence fragment a person understands) for one scope."""
    s = parse_scope(scope) if isinstance(scope, str) else scope
    kind, template, noun = _ACTIONS[s.action]
    if s.resource == "**" or (s.resource == "*" and s.action == "emit_log"):
        where = f"any {noun}"
    elif s.is_pattern:
        where = f"the {noun} '{s.resource}'"
    else:
        where = f"the {noun} {s.resource}"
    text = template.format(r=where)
    if s.action == "http_fetch" and ":" not in s.resource and s.resource != "**":
        text += " (default ports only)"
    return kind, text


def render_prompt(request: ConsentRequest, policy: Policy) -> str:
    """The consent prompt, as the owner reads it in the CLI, the API or a web page."""
    lines = [
        f"Transform '{request.transform}' {request.version} asks for your permission.",
        f"  Module CID:  {request.subject}",
        f"  Publisher:   {_publisher_line(request, policy)}",
        f"  Request id:  {request.id} ({request.status.value}, "
        f"asked {request.created_at:%Y-%m-%d %H:%M} UTC)",
        "",
        "It wants to:",
    ]
    grouped: dict[str, list[str]] = {}
    for text in request.scopes:
        kind, words = describe_scope(text)
        grouped.setdefault(kind, []).append(f"    - {words}  [{text}]")
    for kind in KINDS:
        if kind in grouped:
            lines.append(f"  {KIND_TITLES[kind]}")
            lines.extend(grouped[kind])
    if any("*" in s for s in request.scopes):
        lines.append(
            "  (in a pattern, * stands for one part of a name, ** for any number of parts)"
        )
    denied = [s for s in request.scopes if policy.denies(parse_scope(s)) is not None]
    if denied:
        lines.append(
            f"  Your policy always denies: {', '.join(denied)}; approving will not grant it."
        )
    lines += [
        "",
        f"For how long: {format_duration(policy.default_grant_lifetime)} unless you say "
        f"otherwise (at most {format_duration(policy.max_grant_lifetime)}); "
        "you can revoke it at any time.",
    ]
    if request.status is ConsentStatus.PENDING:
        lines += [
            "",
            f"Allow? ionflux consent approve {request.id} [--expires 30d] [--only SCOPE ...]",
            f"       ionflux consent deny {request.id}",
        ]
    elif request.grant_id:
        lines += ["", f"Answered: {request.status.value} by {request.answered_by} "
                      f"(grant {request.grant_id})."]  # fmt: skip
    else:
        lines += ["", f"Answered: {request.status.value}."]
    return "\n".join(lines)


def _publisher_line(request: ConsentRequest, policy: Policy) -> str:
    if request.publisher is None:
        return "unsigned: nobody vouches for this module"
    if not request.signature_valid:
        return f"{request.publisher} - signature DOES NOT verify: treat it as unsigned"
    trusted = policy.trusted(request.publisher)
    who = f" (trusted publisher: {trusted.name})" if trusted else " (not in your trusted list)"
    return f"{request.publisher} - signature over the CID verifies{who}"
