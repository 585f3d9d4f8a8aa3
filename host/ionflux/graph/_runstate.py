"""The run as a durable state machine: what to do with a run, given what is recorded.

Pure (no I/O, no clock: the caller passes ``now``), like ``Scheduler`` below it:
the driver (``_engine``) reads the record, asks here, and acts.

A run's life: ``accepted`` (recorded before anyone is told: the 202, the
JetStream ack, the CLI), ``running`` (a host drives it and renews its lease),
then one ended status: ``success``, ``failure``, ``partial_success_with_errors``,
``cancelled``, ``needs_attention`` (a node that declared ``idempotent: false``
was in flight when its host died: a person decides), or ``interrupted`` (a
sub-run or a debugger run whose host died; the parent's node runs again).

A run may also wait, recorded and driven by nobody (its lease released):
``awaiting_approval`` (its grant is missing or too narrow: approving the consent
reopens it, denying or ``graph.approval_timeout_s`` ends it), ``waiting`` (a
node's timer) or ``paused`` (an operator). ``control`` says what an operator's
pause, resume, cancel or retry does to a run in each status.

Resume: the steps recorded done (``success``, ``skipped``) keep their recorded
outputs and do not run again; every other node runs (again): at least once per
step, exactly one recorded result per run key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    """What the driver does with a run it was asked for (by key or by id)."""

    ANSWER = "answer"  # ended: answer its recorded result, run nothing
    DRIVE = "drive"  # ours (accepted here, or its lease is ours): run it
    TAKE_OVER = "take_over"  # nobody drives it (lease ran out, owner gone): claim, resume
    WAIT = "wait"  # another live driver has it: wait for its result


@dataclass(frozen=True, slots=True)
class Seen:
    """What the driver knows of one recorded run."""

    status: str
    lease_owner: str | None
    orphaned: bool  # lease ran out, or its owning process on this machine is gone


OPEN = frozenset({"accepted", "running"})


def next_action(seen: Seen, me: str) -> Action:
    if seen.status not in OPEN:
        return Action.ANSWER
    if seen.lease_owner == me:
        return Action.DRIVE
    if seen.orphaned:
        return Action.TAKE_OVER
    return Action.WAIT


@dataclass(frozen=True, slots=True)
class RecordedStep:
    node_id: str
    status: str  # running | success | skipped | failure | cancelled | waiting
    outputs: Any = None
    wake_at: float | None = None  # a ``waiting`` step: when its timer is due


@dataclass(frozen=True, slots=True)
class Resume:
    """How a run goes on from its record."""

    done: Mapping[str, RecordedStep]  # settled from the record, not run again
    attention: tuple[str, ...]  # non-idempotent nodes that were in flight: stop the run
    waited: Mapping[str, float] = dataclasses.field(default_factory=dict)  # timers set


def resume_from(idempotent: Mapping[str, bool], recorded: Iterable[RecordedStep]) -> Resume:
    """Steps recorded ``success`` or ``skipped`` are done; a node recorded
    ``running`` (in flight when its host died) whose node says ``idempotent:
    false`` needs a person; every other node runs (again)."""
    done: dict[str, RecordedStep] = {}
    attention: list[str] = []
    waited: dict[str, float] = {}
    for step in recorded:
        if step.node_id not in idempotent:
            continue  # a node of an older version of the graph: not this plan's
        if step.status in ("success", "skipped"):
            done[step.node_id] = step
        elif step.status == "running" and not idempotent[step.node_id]:
            attention.append(step.node_id)
        elif step.status == "waiting" and step.wake_at is not None:
            waited[step.node_id] = step.wake_at
    return Resume(done, tuple(sorted(attention)), waited)


def attention_error(nodes: Iterable[str]) -> dict[str, Any]:
    names = ", ".join(repr(n) for n in nodes)
    return {
        "kind": "needs_attention",
        "message": f"node {names} (idempotent: false) was in flight when the host driving "
        "this run stopped; it may have run. Check its effect, then retry the run from that "
        "step or cancel it",
        "nodes": sorted(nodes),
    }


class Control(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    RETRY = "retry"


class Effect(StrEnum):
    """What the driver does for an operator's control."""

    SIGNAL = "signal"  # driven (or queued): the host driving it acts at its next step
    REOPEN = "reopen"  # back to accepted, given back: the next host resumes it
    END = "end"  # nobody drives it: ended in the history at once


_DRIVEN = frozenset({"accepted", "running"})
_EFFECTS: dict[Control, dict[str, Effect]] = {
    Control.PAUSE: {s: Effect.SIGNAL for s in _DRIVEN},
    Control.CANCEL: {
        **{s: Effect.SIGNAL for s in _DRIVEN},
        **{s: Effect.END for s in ("awaiting_approval", "waiting", "paused", "needs_attention")},
    },
    Control.RESUME: {s: Effect.REOPEN for s in ("paused", "needs_attention", "awaiting_approval")},
    Control.RETRY: {
        s: Effect.REOPEN
        for s in ("failure", "partial_success_with_errors", "needs_attention", "cancelled")
    },
}


def control(action: Control, status: str) -> Effect | None:
    """What ``action`` does to a run in ``status``; None: not allowed (HTTP 409)."""
    return _EFFECTS[action].get(status)


def allowed_from(action: Control) -> tuple[str, ...]:
    return tuple(_EFFECTS[action])


def waits_for(consent: str | None, *, expired: bool) -> str | None:
    """What an ``awaiting_approval`` run does, given its consent's status
    (pending | approved | denied | expired, None when it is gone) and whether
    its ``graph.approval_timeout_s`` ran out: ``resume``, ``denied``,
    ``expired``, or None (it goes on waiting)."""
    if consent == "approved":
        return "resume"
    if consent == "denied":
        return "denied"
    if consent in ("expired", None) or expired:
        return "expired"
    return None
