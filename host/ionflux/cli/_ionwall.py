"""``ionflux consent|grants|audit|token``: the owner's side of IONWALL.

IONWALL's data lives in ``<data_dir>/ionwall``; its policy is the file named
by ``ionwall.policy_file`` in the configuration. Every IONWALL error is one
line on stderr and exit code 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from ionwall import (
    ConsentStatus,
    Ionwall,
    ScopeError,
    TokenError,
    decode_public_key,
    parse_duration,
    parse_scope,
)
from ionwall import PermissionDenied as IonwallDenied

from ._app import App, pass_app

_ATTR = "_ionwall_instance"

if TYPE_CHECKING:  # click >= 8.2 types ParamType as generic; older clicks cannot subscript it
    _DurationBase = click.ParamType[timedelta]
    _ScopeBase = click.ParamType[str]
else:
    _DurationBase = _ScopeBase = click.ParamType


def ionwall_for(app: App) -> Ionwall:
    """The ``Ionwall`` of ``app``'s data directory, opened once per ``App``."""
    cached = vars(app).get(_ATTR)
    if isinstance(cached, Ionwall):
        return cached
    from ..host import open_ionwall

    wall = open_ionwall(app.config)
    vars(app)[_ATTR] = wall
    app._closers.append(wall)
    return wall


class _Duration(_DurationBase):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _Scope(_ScopeBase):
    name = "SCOPE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return str(parse_scope(str(value)))
        except ScopeError as exc:
            self.fail(str(exc), param, ctx)


DURATION = _Duration()
SCOPE = _Scope()


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


# -- consent -------------------------------------------------------------------


@click.group()
def consent() -> None:
    """Consent requests: what transforms ask for, and your answers."""


@consent.command("list")
@click.option("--all", "show_all", is_flag=True, help="Answered requests too, not only pending.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def consent_list(app: App, show_all: bool, as_json: bool) -> None:
    """Lists pending consent requests (all of them with --all)."""
    wall = ionwall_for(app)
    requests = wall.consents(None if show_all else ConsentStatus.PENDING)
    if as_json:
        _echo_json([r.to_dict() for r in requests])
        return
    if not requests:
        click.echo("no consent requests" if show_all else "no pending consent requests")
        return
    for r in requests:
        click.echo(
            f"{r.id}  {r.status.value:<8}  {r.transform} {r.version}  "
            f"{_when(r.created_at)}  {', '.join(r.scopes)}"
        )


@consent.command("show")
@click.argument("consent_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def consent_show(app: App, consent_id: str, as_json: bool) -> None:
    """Shows a consent request as a prompt: who asks, what for, for how long."""
    wall = ionwall_for(app)
    if as_json:
        _echo_json(wall.consent(consent_id).to_dict())
    else:
        click.echo(wall.prompt(consent_id))


@consent.command("approve")
@click.argument("consent_id")
@click.option("--expires", type=DURATION, help="Grant lifetime, e.g. 30d, 12h (policy default).")
@click.option(
    "--only",
    "only",
    type=SCOPE,
    multiple=True,
    help="Grant only this scope (repeatable); never wider than what was requested.",
)
@pass_app
def consent_approve(
    app: App, consent_id: str, expires: timedelta | None, only: Sequence[str]
) -> None:
    """Approves a consent request: its scopes (or only those named) become a grant."""
    grant = ionwall_for(app).approve(consent_id, expires=expires, only=list(only) or None)
    click.echo(f"approved {consent_id}: grant {grant.id} until {_when(grant.expires_at)}")
    for scope in grant.scopes:
        click.echo(f"  {scope}")


@consent.command("deny")
@click.argument("consent_id")
@pass_app
def consent_deny(app: App, consent_id: str) -> None:
    """Denies a consent request: the transform does not run."""
    ionwall_for(app).deny(consent_id)
    click.echo(f"denied {consent_id}")


# -- grants --------------------------------------------------------------------


@click.group()
def grants() -> None:
    """Grants: what you allowed, until when; revoke them at any time."""


@grants.command("list")
@click.option("--all", "show_all", is_flag=True, help="Expired and revoked grants too.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def grants_list(app: App, show_all: bool, as_json: bool) -> None:
    """Lists active grants (all of them with --all)."""
    now = datetime.now(UTC)
    found = [g for g in ionwall_for(app).grants() if show_all or g.status(now) == "active"]
    if as_json:
        _echo_json([{**g.to_dict(), "status": g.status(now)} for g in found])
        return
    if not found:
        click.echo("no grants" if show_all else "no active grants")
        return
    for g in found:
        click.echo(
            f"{g.id}  {g.status(now):<7}  {g.kind.value:<7}  {g.transform}  {g.subject}  "
            f"until {_when(g.expires_at)}  {', '.join(g.scopes)}"
        )


@grants.command("revoke")
@click.argument("grant_id")
@pass_app
def grants_revoke(app: App, grant_id: str) -> None:
    """Revokes a grant: the next call under it is refused, even in a running graph."""
    grant = ionwall_for(app).revoke(grant_id)
    click.echo(f"revoked {grant.id} at {_when(grant.revoked_at)}")


# -- audit ---------------------------------------------------------------------


@click.group()
def audit() -> None:
    """The audit log: every allow and deny, and every consent request, approval,
    denial, revocation and caller token, hash-chained."""


@audit.command("tail")
@click.option("-n", "count", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON entry per line.")
@pass_app
def audit_tail(app: App, count: int, as_json: bool) -> None:
    """Shows the last entries of the audit log."""
    for e in ionwall_for(app).audit_tail(count):
        if as_json:
            click.echo(json.dumps(e.to_dict(), ensure_ascii=False))
            continue
        where = "/".join(x for x in (e.run_id, e.node_id) if x) or "-"
        click.echo(
            f"#{e.index} {e.time} {e.decision.upper():<5} {e.scope}  "
            f"{e.transform} ({e.subject}) run {where}: {e.reason}"
        )


@audit.command("verify")
@click.option(
    "--public-key",
    help="Check the signed checkpoints against this key (ed25519:…) instead of the "
    "data directory's own: for a copy of the log, or a key that may have been replaced.",
)
@pass_app
def audit_verify(app: App, public_key: str | None) -> None:
    """Checks the hash chain and its signed checkpoints; exits non-zero naming the
    first bad entry. Says which entries a signature covers and which (the last
    ones, not yet signed) only the hash chain protects."""
    key = None
    if public_key is not None:
        try:
            key = decode_public_key(public_key)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--public-key") from None
    report = ionwall_for(app).audit_verify(key)
    if not report.ok:
        click.echo(str(report), err=True)
        sys.exit(1)
    click.echo(str(report))


# -- token ---------------------------------------------------------------------


@click.group()
def token() -> None:
    """Tokens for HTTP and NATS callers."""


@token.command("issue")
@click.option("--scope", "scopes", type=SCOPE, multiple=True, required=True, help="Repeatable.")
@click.option("--expires", type=DURATION, default="1h", show_default=True)
@click.option("--subject", default="owner", show_default=True, help="Who the token is for.")
@pass_app
def token_issue(app: App, scopes: Sequence[str], expires: timedelta, subject: str) -> None:
    """Prints a signed token (JWT) holding the scopes; its grant id goes to stderr."""
    grant = ionwall_for(app).issue_token(list(scopes), expires, subject=subject)
    click.echo(f"grant {grant.id} until {_when(grant.expires_at)}", err=True)
    click.echo(grant.token)


@token.command("verify")
@click.argument("jwt")
@click.option("--scope", "required", type=SCOPE, help="Also require this scope.")
@pass_app
def token_verify(app: App, jwt: str, required: str | None) -> None:
    """Prints the token's claims, or why it is refused (exit code 1)."""
    try:
        claims = ionwall_for(app).verify_token(jwt.strip(), required)
    except (TokenError, IonwallDenied) as exc:
        click.echo(f"refused: {exc}", err=True)
        sys.exit(1)
    _echo_json(claims.to_dict())


commands = (consent, grants, audit, token)

__all__ = ["audit", "commands", "consent", "grants", "ionwall_for", "token"]
