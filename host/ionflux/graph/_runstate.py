"""The run as a durable state machine: what to do with a run, given what is recorded.

Pure (no I/O, no clock: the caller passes ``now``), like ``Scheduler`` below it:
the driver (``_engine``) reads the record, asks here, and acts.

A run's life: ``accepted`` (recorded before anyone is told: the 202, the
JetStream ack, the CLI), ``running`` (a host drives it and renews its lease),
then one ended status: ``success``, ``failure``, ``partial_success_with_errors``,
``cancelled``, ``needs_attention`` (a node that declared ``idempotent: false``
was in flight when its host died: a person decides), or ``interrupted`` (a
sub-run or a debugger run whose host died; the parent's node runs again).

Resume: the steps recorded done (``success``, ``skipped``) keep their recorded
outputs and do not run again; every other node runs (again): at least once per
step, exactly one recorded result per run key.
"""

from __future__ import annotations

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
    status: str  # running | success | skipped | failure | cancelled
    outputs: Any = None


@dataclass(frozen=True, slots=True)
class Resume:
    """How a run goes on from its record."""

    done: Mapping[str, RecordedStep]  # settled from the record, not run again
    attention: tuple[str, ...]  # non-idempotent nodes that were in flight: stop the run


def resume_from(idempotent: Mapping[str, bool], recorded: Iterable[RecordedStep]) -> Resume:
    """Steps recorded ``success`` or ``skipped`` are done; a node recorded
    ``running`` (in flight when its host died) whose node says ``idempotent:
    false`` needs a person; every other node runs (again)."""
    done: dict[str, RecordedStep] = {}
    attention: list[str] = []
    for step in recorded:
        if step.node_id not in idempotent:
            continue  # a node of an older version of the graph: not this plan's
        if step.status in ("success", "skipped"):
            done[step.node_id] = step
        elif step.status == "running" and not idempotent[step.node_id]:
            attention.append(step.node_id)
    return Resume(done, tuple(sorted(attention)))


def attention_error(nodes: Iterable[str]) -> dict[str, Any]:
    names = ", ".join(repr(n) for n in nodes)
    return {
        "kind": "needs_attention",
        "message": f"node {names} (idempotent: false) was in flight when the host driving "
        "this run stopped; it may have run. Check its effect, then retry the run from that "
        "step or cancel it",
        "nodes": sorted(nodes),
    }
