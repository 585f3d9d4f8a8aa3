"""``Ionwall``: consent, grants, the gate, tokens and the audit log, over one data directory.

The data directory holds ``signing_key.pem`` (0600), ``ionwall.db`` (consents
and grants, SQLite WAL), ``revocations.counter`` (see ``_store``),
``audit.jsonl``, ``audit.head`` and ``audit.checkpoints``. Several processes may share it.

With ``state_url`` (a cluster: ``state.backend: postgres``) the data directory
holds only the signing key: consents, grants, revocations, every host's
public key and the audit chains are in PostgreSQL (``_pgstore``,
``_pgaudit``), the counter becomes the revocation feed's stamp (a value in
memory that LISTEN/NOTIFY moves), and a host whose feed has been silent past
its bound denies every call until it has caught up.

The gate re-checks the grant on every call: revocation through a counter
that every process maps from one file (a memory read; a revocation in any
process stops the next call of a run already in progress), expiry against the
clock, the policy's always-deny list, then the scopes. The answer for a (grant, concrete scope)
is kept until the grant expires or the counter moves. Every decision is
written to the audit log; a decision that cannot be recorded is a denial.
A plain gate writes it before returning the decision; a write-behind gate
(``gate(..., write_behind=True)``, what the host uses) queues the entries of
denials and result-only calls, and its ``flush()`` writes them in one batch:
the barrier before anything of the run is handed on.

A gate trusts the grant id the host hands it: the host picks the grant a
run is started under (a graph's grant covers the calls of all its nodes), so
the gate does not compare the grant's subject with the calling module.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._audit import (
    CONSENT_APPROVED,
    CONSENT_DENIED,
    CONSENT_REQUESTED,
    GRANT_REVOKED,
    TOKEN_ISSUED,
    AuditEntry,
    AuditLog,
    AuditReport,
    AuditTicket,
)
from ._consent import ConsentRequest, ConsentStatus, fingerprint, render_prompt
from ._errors import (
    AuditError,
    ConsentAlreadyAnswered,
    ConsentRequired,
    PolicyError,
    ScopeError,
    UnknownConsent,
    UnknownGrant,
)
from ._gate import CallContext, Decision
from ._grants import Grant, GrantKind
from ._keys import encode_public_key, key_id, load_or_create_key, verify_cid_signature
from ._mask import Masker
from ._policy import Policy
from ._scope import Scope, covering, narrow, narrow_all, parse_scope, parse_scopes
from ._store import GrantStore, StateStore
from ._token import Claims, issue_token, verify_token

if TYPE_CHECKING:
    from ._pgstore import RevocationFeed

WRITE_BEHIND_ACTIONS = frozenset({"emit_log", "read_config", "read_pod_data"})
"""Actions whose effect stays inside the run until it returns: a write-behind
gate may record their allowed calls after the fact (see ``Ionwall.gate``)."""

_DECISIONS_MAX = 4096
_UNKNOWN_KIDS_MAX = 1024
_UNKNOWN_KID_RETRY_S = 2.0
# (grant id, concrete scope) -> (allowed, reason, the policy applied, the grant's expiry)
_Decisions = dict[tuple[str, str], tuple[bool, str, Policy, float]]


@dataclass(frozen=True, slots=True)
class _GrantState:
    """What the gate needs of a grant, kept in memory between revocations."""

    scopes: tuple[Scope, ...]
    expires_at: float
    revoked_at: datetime | None


class Ionwall:
    """IONWALL over ``data_dir``, applying ``policy``."""

    def __init__(
        self,
        data_dir: Path,
        policy: Policy | None = None,
        *,
        masker: Masker | None = None,
        clock: Callable[[], float] = time.time,
        state_url: str | None = None,
        revocation_feed_bound: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``state_url`` (``postgresql://…``): consents, grants, revocations, published
        keys and the audit chains live in that database, shared by every host
        of a cluster (``data_dir`` then holds only this host's signing key);
        None: everything in ``data_dir`` (SQLite and files, one machine).
        ``revocation_feed_bound``: with ``state_url``, how many seconds of
        silence from the revocation feed (measured by ``monotonic``) this host
        tolerates before it denies every scoped call (``RevocationFeedLost``)."""
        self.data_dir = Path(data_dir)
        self.policy = policy or Policy()
        self.masker = masker or Masker()
        self._clock = clock
        self._key = load_or_create_key(self.data_dir)
        self._public = self._key.public_key()
        self.kid = key_id(self._public)
        # Tokens whose signature already verified (see verify_token).
        self._verified_tokens: dict[str, Claims] = {}
        self.public_key = encode_public_key(self._public)
        self.revocation_feed: RevocationFeed | None = None
        self._peer_keys: dict[str, Ed25519PublicKey] = {self.kid: self._public}
        self._unknown_kids: dict[str, float] = {}  # kid -> when to ask the database again
        self._monotonic = monotonic
        self._store: StateStore
        if state_url is None:
            self._store = GrantStore(self.data_dir)
            self.audit = AuditLog(self.data_dir, self.masker, key=self._key)
        else:
            self._open_shared(state_url, revocation_feed_bound)
        self._states: dict[str, _GrantState] = {}
        self._states_stamp = b""  # no stamp reads as empty: the first call loads
        self._states_lock = threading.Lock()
        self._decisions: _Decisions = {}  # emptied with _states

    def _open_shared(self, url: str, bound: float) -> None:
        from ._pg import Database
        from ._pgaudit import PgAuditLog
        from ._pgstore import PgGrantStore

        self._db = Database(url)
        try:
            store = PgGrantStore(self._db, feed_bound=bound, monotonic=self._monotonic)
            try:
                store.publish_key(self._public)
                self.audit = PgAuditLog(
                    self.data_dir, self._db, self.masker, key=self._key,
                    published=store.public_key, hosts=store.hosts,
                )  # fmt: skip
            except BaseException:
                store.close()
                raise
        except BaseException:
            self._db.close()
            raise
        self._store = store
        self._pg_keys = store.public_key
        feed = self.revocation_feed = store.feed
        self._feed_lost = feed.lost
        # Only a cluster host pays for the feed's check on the gate's path.
        self._decide = self._decide_fenced  # type: ignore[method-assign]

    def close(self) -> None:
        self.audit.close()  # first: its last entries may go to the database
        self._store.close()
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()

    def __enter__(self) -> Ionwall:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # -- authorize -----------------------------------------------------------

    def authorize(
        self,
        subject: str,
        transform: str,
        version: str,
        requested_scopes: Sequence[str],
        publisher: str | None = None,
        signature: str | None = None,
    ) -> Grant:
        """The grant a run of ``subject`` may start under, or ``ConsentRequired``.

        A live grant answering the identical request is reused; so is an
        identical pending request (no duplicate prompts). A request signed by
        a trusted publisher is approved by the policy without asking.
        Raises ``ScopeError`` for a scope that does not parse.
        """
        scopes = parse_scopes(requested_scopes)
        texts = tuple(str(s) for s in scopes)
        signature_valid = (
            None
            if publisher is None
            else signature is not None and verify_cid_signature(publisher, subject, signature)
        )
        fp = fingerprint(subject, transform, version, texts, publisher, signature_valid)
        trusted = self.policy.trusted(publisher) if signature_valid else None
        auto: tuple[Scope, ...] | None = None
        if trusted is not None:
            allowed = self.policy.allowed_part(scopes)
            capped = self.policy.auto_approvable(trusted, scopes)
            if set(capped) == set(allowed):
                auto = allowed
        now = self._now()
        with self._store.write() as conn:
            live = self._store.live_grant_for(fp, now.timestamp())
            if live is not None:
                return live
            pending = self._store.pending_by_fingerprint(conn, fp)
            if pending is not None and pending.expires_at <= now:
                self._store.answer_consent(
                    conn, pending.id, ConsentStatus.EXPIRED, at=now, by="expiry"
                )
                pending = None
            if pending is None:
                request = ConsentRequest(
                    id=_new_id("c"),
                    subject=subject,
                    transform=transform,
                    version=version,
                    scopes=texts,
                    publisher=publisher,
                    signature_valid=signature_valid,
                    created_at=now,
                    expires_at=now + self.policy.consent_expires_after,
                    status=ConsentStatus.PENDING,
                )
                self._store.insert_consent(conn, request, fp)
                self._owner_decision(
                    CONSENT_REQUESTED, request.subject, request.transform, request.scopes,
                    f"consent {request.id} asks for it ({transform} {version})",
                )  # fmt: skip
                if auto is not None and trusted is not None:
                    by = f"policy: trusted publisher {trusted.name}"
                    grant = self._grant(
                        conn, request, auto, self.policy.lifetime(None), GrantKind.POLICY, fp, now
                    )
                    self._store.answer_consent(
                        conn, request.id, ConsentStatus.APPROVED, at=now, by=by, grant_id=grant.id
                    )
                    self._approved(request, grant, by)
                    return grant
                pending = request
        raise ConsentRequired(pending)

    # -- consents ------------------------------------------------------------

    def consents(self, status: ConsentStatus | str | None = None) -> list[ConsentRequest]:
        """Consent requests, oldest first; unanswered ones past their time show as expired."""
        wanted = None if status is None else ConsentStatus(status)
        out = [self._aged(r) for r in self._store.consents()]
        return [r for r in out if wanted is None or r.status is wanted]

    def consent(self, consent_id: str) -> ConsentRequest:
        request = self._store.consent(consent_id)
        if request is None:
            raise UnknownConsent(consent_id)
        return self._aged(request)

    def prompt(self, consent_id: str) -> str:
        """The consent prompt for ``consent_id``, in words a person understands."""
        return render_prompt(self.consent(consent_id), self.policy)

    def _aged(self, request: ConsentRequest) -> ConsentRequest:
        if request.status is ConsentStatus.PENDING and request.expires_at <= self._now():
            return replace(request, status=ConsentStatus.EXPIRED)
        return request

    def approve(
        self,
        consent_id: str,
        *,
        expires: timedelta | None = None,
        only: Sequence[str] | None = None,
        by: str = "owner",
    ) -> Grant:
        """Turns a pending request into a grant of its scopes (or of ``only`` those).

        A grant never widens the request: each scope of ``only`` is narrowed to
        what was requested, and one that matches no requested scope is a
        ``ScopeError``. Scopes the policy always denies are left out. Raises
        ``UnknownConsent``, ``ConsentAlreadyAnswered`` or ``PolicyError``
        (lifetime past the maximum).
        """
        approved = parse_scopes(only) if only else None
        now = self._now()
        with self._store.write() as conn:
            request = self._pending(conn, consent_id, now)
            lifetime = self.policy.lifetime(expires)
            requested = parse_scopes(request.scopes)
            scopes = requested
            if approved is not None:
                for a in approved:
                    if not any(narrow(r, a) is not None for r in requested):
                        raise ScopeError(
                            str(a),
                            f"not part of consent request {consent_id} "
                            f"(it asks for: {', '.join(request.scopes)})",
                        )
                scopes = narrow_all(requested, approved)
            kept = self.policy.allowed_part(scopes)
            if not kept:
                raise PolicyError(
                    f"your policy always denies every scope approved for {consent_id}; "
                    f"deny it with `ionflux consent deny {consent_id}`"
                )
            fp = fingerprint(
                request.subject, request.transform, request.version, request.scopes,
                request.publisher, request.signature_valid,
            )  # fmt: skip
            grant = self._grant(conn, request, kept, lifetime, GrantKind.CONSENT, fp, now)
            self._store.answer_consent(
                conn, consent_id, ConsentStatus.APPROVED, at=now, by=by, grant_id=grant.id
            )
            # Recorded before the transaction commits: a decision that cannot be
            # recorded is not taken (AuditError, and the grant is rolled back).
            self._approved(request, grant, by)
        return grant

    def deny(self, consent_id: str, *, by: str = "owner") -> ConsentRequest:
        """Refuses a pending request. Raises ``UnknownConsent`` or ``ConsentAlreadyAnswered``."""
        now = self._now()
        with self._store.write() as conn:
            request = self._pending(conn, consent_id, now)
            self._store.answer_consent(conn, consent_id, ConsentStatus.DENIED, at=now, by=by)
            self._owner_decision(
                CONSENT_DENIED, request.subject, request.transform, request.scopes,
                f"consent {consent_id} denied by {by}",
            )  # fmt: skip
        return self.consent(consent_id)

    def _approved(self, request: ConsentRequest, grant: Grant, by: str) -> None:
        self._owner_decision(
            CONSENT_APPROVED, grant.subject, grant.transform, grant.scopes,
            f"consent {request.id} approved by {by} until {grant.expires_at.isoformat()}",
            grant.id,
        )  # fmt: skip

    def _owner_decision(
        self,
        decision: str,
        subject: str,
        transform: str,
        scopes: Sequence[str],
        reason: str,
        grant_id: str | None = None,
    ) -> None:
        """One audit entry per scope for a decision of the owner (or the policy)."""
        for scope in scopes:
            self.audit.append(
                subject=subject,
                transform=transform,
                scope=scope,
                allowed=decision != CONSENT_DENIED,
                reason=reason,
                grant_id=grant_id,
                decision=decision,
            )

    def _pending(self, conn: Any, consent_id: str, now: datetime) -> ConsentRequest:
        request = self._store.consent(consent_id, conn)
        if request is None:
            raise UnknownConsent(consent_id)
        if request.status is ConsentStatus.PENDING and request.expires_at <= now:
            raise ConsentAlreadyAnswered(consent_id, ConsentStatus.EXPIRED.value)
        if request.status is not ConsentStatus.PENDING:
            raise ConsentAlreadyAnswered(consent_id, request.status.value)
        return request

    def _grant(
        self,
        conn: Any,
        request: ConsentRequest,
        scopes: Sequence[Scope],
        lifetime: timedelta,
        kind: GrantKind,
        fp: str | None,
        now: datetime,
    ) -> Grant:
        grant = self._signed_grant(request.subject, request.transform, scopes, lifetime, kind, now)
        grant = replace(grant, consent_id=request.id)
        self._store.insert_grant(conn, grant, fp)
        return grant

    def _signed_grant(
        self,
        subject: str,
        transform: str,
        scopes: Sequence[Scope],
        lifetime: timedelta,
        kind: GrantKind,
        now: datetime,
    ) -> Grant:
        grant_id = _new_id("g")
        texts = tuple(str(s) for s in scopes)
        token = issue_token(
            self._key, subject, texts, lifetime, token_id=grant_id, now=now.timestamp()
        )
        return Grant(
            id=grant_id,
            subject=subject,
            transform=transform,
            scopes=texts,
            created_at=now,
            # the token's exp is whole seconds; the grant ends when the token does
            expires_at=datetime.fromtimestamp(
                int(now.timestamp()) + max(1, int(lifetime.total_seconds())), UTC
            ),
            token=token,
            kind=kind,
        )

    # -- grants --------------------------------------------------------------

    def grants(self) -> list[Grant]:
        """Every grant, oldest first (see ``Grant.status`` for active/expired/revoked)."""
        return self._store.grants()

    def grant(self, grant_id: str) -> Grant:
        grant = self._store.grant(grant_id)
        if grant is None:
            raise UnknownGrant(grant_id)
        return grant

    def revoke(self, grant_id: str) -> Grant:
        """Revokes a grant (and its token): the next gate check anywhere refuses it."""
        if not self._store.revoke(grant_id, self._now()):
            raise UnknownGrant(grant_id)
        # After the revocation took effect: it must stand even if it cannot be recorded.
        grant = self.grant(grant_id)
        self._owner_decision(
            GRANT_REVOKED, grant.subject, grant.transform, grant.scopes,
            f"grant {grant_id} revoked", grant_id,
        )  # fmt: skip
        return grant

    # -- the gate ------------------------------------------------------------

    def gate(self, grant_id: str | None, *, write_behind: bool = False) -> _GrantGate:
        """The gate for one run started under ``grant_id`` (None: every call is denied).

        ``write_behind=True`` trades the order "recorded, then used" for
        speed, for result-only actions (``WRITE_BEHIND_ACTIONS``) and for
        denials: their entries are queued and written together (one write,
        one head update) by the gate's ``flush()``, which whoever runs the
        guest must call before it hands on anything of the run (output,
        error or logs), failing the run if it raises ``AuditError``. So an allowed
        log line, config read or pod read may already have happened when
        its entry turns out to be unwritable; what it produced never leaves
        the run. Every other allowed call (writes, publishing, fetching, …)
        is written before it is used, after everything queued before it,
        as with a plain gate: nothing leaves the sandbox while an earlier
        decision is unrecorded.
        """
        return _GrantGate(self, grant_id, AuditTicket() if write_behind else None)

    def grant_live(self, grant_id: str) -> bool:
        """Whether ``grant_id`` exists, is not revoked and has not expired; as
        cheap as a gate check without the audit entry, for callers that keep a
        grant between runs."""
        if self.revocation_feed is not None and self.revocation_feed.lost() is not None:
            return False
        state = self._state(grant_id)
        return state is not None and state.revoked_at is None and self._clock() < state.expires_at

    def check(self, grant_id: str | None, ctx: CallContext, scope: str) -> Decision:
        """One gate decision, written to the audit log before it is returned."""
        return self._check(grant_id, ctx, scope, None)

    def _check(
        self, grant_id: str | None, ctx: CallContext, scope: str, ticket: AuditTicket | None
    ) -> Decision:
        """``check``; with ``ticket`` (a write-behind gate's), the entry of a
        denial or of an allowed result-only call (``WRITE_BEHIND_ACTIONS``) is
        only queued on it, and the gate's ``flush()`` is the barrier. Any other
        allowed call is written before it is returned, after everything queued
        before it. A decision whose entry cannot be written is a denial."""
        allowed, reason = self._decide(grant_id, scope)
        if ticket is not None and allowed and scope.partition(":")[0] not in WRITE_BEHIND_ACTIONS:
            ticket = None  # used outside the run at once: recorded first
        try:
            self.audit._record(
                subject=ctx.subject,
                transform=ctx.transform,
                scope=scope,
                allowed=allowed,
                reason=reason,
                run_id=ctx.run_id,
                node_id=ctx.node_id,
                grant_id=grant_id,
                ticket=ticket,
            )
        except AuditError as exc:
            return Decision(False, scope, f"the decision cannot be recorded: {exc}")
        return Decision(allowed, scope, reason)

    def flush(self) -> None:
        """Writes every audit entry queued by write-behind gates so far."""
        self.audit.flush()

    def _decide_fenced(self, grant_id: str | None, scope: str) -> tuple[bool, str]:
        """``_decide`` on a cluster host: nothing is allowed while the revocation
        feed is lost (a revocation elsewhere may have gone unseen)."""
        lost = self._feed_lost()
        if lost is not None:
            return False, str(lost)
        return Ionwall._decide(self, grant_id, scope)

    def _decide(self, grant_id: str | None, scope: str) -> tuple[bool, str]:
        if grant_id is not None and self._store.revocation_stamp() == self._states_stamp:
            # The same call gets the same answer until the grant expires or a
            # revocation anywhere moves the stamp (which empties the cache).
            hit = self._decisions.get((grant_id, scope))
            if hit is not None and hit[2] is self.policy and self._clock() < hit[3]:
                return hit[0], hit[1]
        state, decisions = (None, None) if grant_id is None else self._lookup(grant_id)
        try:
            asked = parse_scope(scope)
        except ScopeError as exc:
            return False, f"unparseable scope: {exc.problem}"
        if grant_id is None:
            return False, "no grant"
        if state is None or decisions is None:
            return False, f"unknown grant {grant_id}"
        if state.revoked_at is not None:
            return False, f"grant {grant_id} was revoked at {state.revoked_at.isoformat()}"
        if self._clock() >= state.expires_at:
            ended = datetime.fromtimestamp(state.expires_at, UTC).isoformat()
            return False, f"grant {grant_id} expired at {ended}"
        never = self.policy.denies(asked)
        if never is not None:
            decision = False, f"the policy always denies {never}"
        else:
            granted = covering(state.scopes, asked)
            if granted is None:
                decision = False, f"not covered by grant {grant_id}"
            else:
                decision = True, f"granted by {grant_id} ({granted})"
        if len(decisions) < _DECISIONS_MAX:  # bounded: scopes come from guest arguments
            decisions[(grant_id, scope)] = (*decision, self.policy, state.expires_at)
        return decision

    def _state(self, grant_id: str) -> _GrantState | None:
        return self._lookup(grant_id)[0]

    def _lookup(self, grant_id: str) -> tuple[_GrantState | None, _Decisions]:
        """The grant's state and the decision cache of the same generation."""
        stamp = self._store.revocation_stamp()
        if stamp != self._states_stamp:
            with self._states_lock:
                if stamp != self._states_stamp:
                    # states before decisions, read back in the other order below:
                    # whoever holds the new decision cache holds new states too
                    self._states = {}
                    self._decisions = {}
                    self._states_stamp = stamp
        decisions = self._decisions
        states = self._states
        state = states.get(grant_id)
        if state is None:
            grant = self._store.grant(grant_id)  # read after the stamp: never staler than it
            if grant is None:
                return None, decisions
            state = _GrantState(
                parse_scopes(grant.scopes), grant.expires_at.timestamp(), grant.revoked_at
            )
            states[grant_id] = state
        return state, decisions

    # -- tokens --------------------------------------------------------------

    def issue_token(
        self, scopes: Sequence[str], expires_in: timedelta | None = None, *, subject: str = "owner"
    ) -> Grant:
        """A caller token (recorded as a grant, so it can be listed and revoked)."""
        parsed = parse_scopes(scopes)
        if not parsed:
            raise ScopeError("", "a token needs at least one scope")
        lifetime = self.policy.lifetime(expires_in)
        now = self._now()
        grant = self._signed_grant(subject, "(token)", parsed, lifetime, GrantKind.TOKEN, now)
        with self._store.write() as conn:
            self._store.insert_grant(conn, grant, None)
            self._owner_decision(
                TOKEN_ISSUED, subject, "(token)", grant.scopes,
                f"caller token {grant.id} issued until {grant.expires_at.isoformat()}", grant.id,
            )  # fmt: skip
        return grant

    def verify_token(self, token: str, required_scope: str | None = None) -> Claims:
        """The claims of ``token`` if this IONWALL issued it and it still holds.

        The one check for every caller: raises ``TokenInvalid`` (malformed,
        forged, alg not EdDSA), ``TokenExpired``, ``TokenNotYetValid``,
        ``TokenRevoked`` or, when ``required_scope`` is not covered,
        ``PermissionDenied``. On a cluster a token issued by any host verifies
        (under the key its host published, found by the token's ``kid``), and
        a host that lost the revocation feed raises ``RevocationFeedLost``.
        """
        if self.revocation_feed is not None:
            lost = self.revocation_feed.lost()
            if lost is not None:
                raise lost
        return verify_token(
            token,
            public_key=self._public,
            required_scope=required_scope,
            is_revoked=self._revocation_reason,
            now=self._clock(),
            verified=self._verified_tokens,
            key_for=None if self.revocation_feed is None else self._key_for,
        )

    def _key_for(self, kid: str) -> Ed25519PublicKey | None:
        """The key a host of the cluster published under ``kid``; a kid no host
        published is asked again only after a while (a flood of forged kids
        costs no query each)."""
        key = self._peer_keys.get(kid)
        if key is not None:
            return key
        now = self._monotonic()
        if self._unknown_kids.get(kid, 0.0) > now:
            return None
        key = self._pg_keys(kid)
        if key is None or key_id(key) != kid:
            if len(self._unknown_kids) >= _UNKNOWN_KIDS_MAX:
                self._unknown_kids.clear()
            self._unknown_kids[kid] = now + _UNKNOWN_KID_RETRY_S
            return None
        self._peer_keys[kid] = key
        return key

    def _revocation_reason(self, token_id: str) -> str | None:
        state = self._state(token_id)
        if state is None:
            return "its grant no longer exists"
        if state.revoked_at is not None:
            return f"grant {token_id} was revoked at {state.revoked_at.isoformat()}"
        return None

    # -- audit ---------------------------------------------------------------

    def audit_tail(self, n: int = 20) -> list[AuditEntry]:
        return self.audit.tail(n)

    def audit_verify(self, public_key: Ed25519PublicKey | None = None) -> AuditReport:
        """The audit log checked: chain, signed checkpoints (against ``public_key``,
        default this IONWALL's own key) and head."""
        return self.audit.verify(public_key)


class _GrantGate:
    """The gate of one run: every check consults the grant afresh."""

    __slots__ = ("_grant_id", "_ionwall", "_ticket")

    def __init__(
        self, ionwall: Ionwall, grant_id: str | None, ticket: AuditTicket | None = None
    ) -> None:
        self._ionwall = ionwall
        self._grant_id = grant_id
        self._ticket = ticket

    @property
    def grant_id(self) -> str | None:
        return self._grant_id

    def check(self, ctx: CallContext, scope: str) -> Decision:
        return self._ionwall._check(self._grant_id, ctx, scope, self._ticket)

    def flush(self) -> None:
        """The run's durability barrier: returns once every decision of this
        gate is on disk; raises ``AuditError`` if one could not be written."""
        if self._ticket is not None:
            self._ionwall.audit._wait(self._ticket)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"
