"""The ``Authorizer`` over IONWALL: a run of a graph needs a grant covering the
union of its nodes' scopes; without one IONWALL creates a consent request and
the run fails with ``ConsentRequired`` (its message says how to answer).

The subject IONWALL sees is the graph version's CID, the name is the graph's:
"graph digest (bafk…) wants read_pod_data:reports/*. Allow?". A dry run asks
nothing: it lists the live grants of that CID and reports what they do not cover.
"""

from __future__ import annotations

from datetime import UTC, datetime

import ionwall
from ionwall import Ionwall, IonwallError, UnknownConsent, covers

from .._errors import ConsentRequired, PermissionDenied
from ._seams import Authorization


class IonwallAuthorizer:
    def __init__(self, wall: Ionwall):
        self.wall = wall

    def authorize(
        self,
        *,
        subject: str,
        graph: str,
        version: str,
        cid: str,
        scopes: list[str],
        dry_run: bool,
    ) -> Authorization:
        del subject  # IONWALL grants are per graph version; the caller is in the run record
        if dry_run:
            return Authorization(missing=tuple(self._uncovered(cid, scopes)))
        if not scopes:
            return Authorization()  # nothing to grant: every import stays denied by default
        try:
            grant = self.wall.authorize(cid, f"graph {graph}", version, scopes)
        except ionwall.ConsentRequired as exc:  # the message says how to answer
            raise ConsentRequired(exc.request) from None
        except IonwallError as exc:  # a scope that does not parse, …
            raise PermissionDenied(", ".join(scopes), str(exc), cid) from exc
        return Authorization(grant_id=grant.id, gate=self.wall.gate(grant.id))

    def consent_status(self, consent_id: str) -> str | None:
        """pending | approved | denied | expired; None for a consent IONWALL does not know."""
        try:
            return self.wall.consent(consent_id).status.value
        except UnknownConsent:
            return None

    def _uncovered(self, cid: str, scopes: list[str]) -> list[str]:
        now = datetime.now(UTC)
        granted = [
            s
            for g in self.wall.grants()
            if g.subject == cid and g.status(now) == "active"
            for s in g.scopes
        ]
        return [s for s in scopes if not any(covers(g, s) for g in granted)]


RUN_CONTROL = "run-control"  # the audit decision of an operator's control of a run


def control_scope(graph: str) -> str:
    """The scope an operator's pause, resume, cancel or retry of ``graph``'s runs needs."""
    return f"control_run:{graph}"


def audit_control(
    wall: Ionwall, *, run_id: str, graph: str, graph_cid: str, action: str, by: str, detail: str
) -> None:
    """One entry in IONWALL's audit chain for an operator's control of a run
    (``ionflux audit tail`` shows it); raises ``AuditError`` if it cannot be written."""
    wall.audit.append(
        subject=graph_cid,
        transform=f"graph {graph}",
        scope=control_scope(graph),
        allowed=True,
        reason=f"{action} of run {run_id} by {by}{detail}",
        run_id=run_id,
        decision=RUN_CONTROL,
    )
