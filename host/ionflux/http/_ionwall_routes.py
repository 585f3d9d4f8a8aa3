"""``/ionwall/…``: consents, grants and the audit log over HTTP.

Every route needs ``Authorization: Bearer <token>`` (checked by the host's
door before any body is read, and again here for this router on its own), a
token this IONWALL issued (``ionflux token issue --scope manage_ionwall:consents``) whose scopes
cover ``manage_ionwall:<area>`` for the route's area: ``consents``,
``grants`` or ``audit`` (``manage_ionwall:*`` covers all three). The token is
checked by ``Ionwall.verify_token``, the same check every trigger uses.

Errors are JSON, ``{"detail": {"kind": …, "message": …}}``, with:

* 401 no token, or a token refused (forged, expired, revoked, wrong alg)
* 403 a valid token whose scopes do not cover the route
* 404 unknown consent or grant id
* 409 a consent request already answered (or expired)
* 422 a bad scope, duration, status or body, or an approval the policy forbids

``GET /ionwall/audit/verify`` answers 200 with ``ok: false`` and the first
bad entry when the log was tampered with: the check itself succeeded.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ionwall import (
    ConsentAlreadyAnswered,
    ConsentStatus,
    Ionwall,
    IonwallError,
    PermissionDenied,
    PolicyError,
    RevocationFeedLost,
    ScopeError,
    TokenError,
    UnknownConsent,
    UnknownGrant,
    parse_duration,
)

from .._errors import InvalidInput
from ._bodies import Bodies, request_body
from ._guard import needs

_STATUS: list[tuple[type[IonwallError], int]] = [
    (UnknownConsent, 404),
    (UnknownGrant, 404),
    (ConsentAlreadyAnswered, 409),
    (ScopeError, 422),
    (PolicyError, 422),
    (TokenError, 401),
    (PermissionDenied, 403),
    (RevocationFeedLost, 503),
]


class ApproveBody(BaseModel):
    expires: str | None = Field(default=None, description="grant lifetime, e.g. 30d")
    only: list[str] | None = Field(default=None, description="grant only these scopes")


def _http_error(exc: IonwallError) -> HTTPException:
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return HTTPException(status_code=status, detail=exc.to_dict(), headers=headers)


def _bad_request(kind: str, message: str) -> HTTPException:
    return HTTPException(status_code=422, detail={"kind": kind, "message": message})


def ionwall_router(
    ionwall: Ionwall, *, require_token: bool = True, bodies: Bodies | None = None
) -> APIRouter:
    """The ``/ionwall`` routes over ``ionwall``.

    ``require_token=False`` is for a host bound to loopback in tests only.
    ``bodies``: the host's body reader (JSON depth limit, parsing threads).
    """
    router = APIRouter(prefix="/ionwall", tags=["ionwall"])
    reader = bodies or Bodies()

    def owner(area: str) -> Callable[..., None]:
        scope = f"manage_ionwall:{area}"

        def check(authorization: Annotated[str | None, Header()] = None) -> None:
            if not require_token:
                return
            if authorization is None or not authorization.lower().startswith("bearer "):
                raise HTTPException(
                    status_code=401,
                    detail={
                        "kind": "token_missing",
                        "message": f"send 'Authorization: Bearer <token>' with scope {scope}",
                    },
                    headers={"WWW-Authenticate": "Bearer"},
                )
            try:
                ionwall.verify_token(authorization[7:].strip(), scope)
            except IonwallError as exc:
                raise _http_error(exc) from exc

        return check

    consents = [Depends(owner("consents"))]
    grants = [Depends(owner("grants"))]
    audit = [Depends(owner("audit"))]
    on_consents = needs("manage_ionwall:consents")
    on_grants = needs("manage_ionwall:grants")
    on_audit = needs("manage_ionwall:audit")

    @router.get("/consents", dependencies=consents, openapi_extra=on_consents)
    def list_consents(status: str | None = None) -> list[dict[str, Any]]:
        try:
            wanted = None if status in (None, "all") else ConsentStatus(status)
        except ValueError as exc:
            known = ", ".join(["all", *(s.value for s in ConsentStatus)])
            raise _bad_request("invalid_status", f"unknown status {status!r} ({known})") from exc
        return [r.to_dict() for r in ionwall.consents(wanted)]

    @router.get("/consents/{consent_id}", dependencies=consents, openapi_extra=on_consents)
    def show_consent(consent_id: str) -> dict[str, Any]:
        try:
            return {**ionwall.consent(consent_id).to_dict(), "prompt": ionwall.prompt(consent_id)}
        except IonwallError as exc:
            raise _http_error(exc) from exc

    @router.post(
        "/consents/{consent_id}/approve",
        dependencies=consents,
        openapi_extra={**on_consents, **request_body(ApproveBody, required=False)},
    )
    async def approve_consent(consent_id: str, request: Request) -> dict[str, Any]:
        try:
            body = await reader.model(request, ApproveBody)
        except InvalidInput as exc:  # not JSON, or nested too deep
            raise _bad_request(exc.kind, str(exc)) from None
        try:
            expires = None if body.expires is None else parse_duration(body.expires)
        except ValueError as exc:
            raise _bad_request("invalid_duration", str(exc)) from exc
        try:
            grant = await run_in_threadpool(
                ionwall.approve, consent_id, expires=expires, only=body.only or None
            )
        except IonwallError as exc:
            raise _http_error(exc) from exc
        return grant.to_dict(include_token=True)

    @router.post("/consents/{consent_id}/deny", dependencies=consents, openapi_extra=on_consents)
    def deny_consent(consent_id: str) -> dict[str, Any]:
        try:
            return ionwall.deny(consent_id).to_dict()
        except IonwallError as exc:
            raise _http_error(exc) from exc

    @router.get("/grants", dependencies=grants, openapi_extra=on_grants)
    def list_grants() -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        return [{**g.to_dict(), "status": g.status(now)} for g in ionwall.grants()]

    @router.post("/grants/{grant_id}/revoke", dependencies=grants, openapi_extra=on_grants)
    def revoke_grant(grant_id: str) -> dict[str, Any]:
        try:
            grant = ionwall.revoke(grant_id)
        except IonwallError as exc:
            raise _http_error(exc) from exc
        return {**grant.to_dict(), "status": grant.status(datetime.now(UTC))}

    @router.get("/audit", dependencies=audit, openapi_extra=on_audit)
    def audit_tail(
        tail: Annotated[int, Query(ge=1, le=10_000)] = 20,
    ) -> dict[str, Any]:
        try:
            return {"entries": [e.to_dict() for e in ionwall.audit_tail(tail)]}
        except IonwallError as exc:
            raise _http_error(exc) from exc

    @router.get("/audit/verify", dependencies=audit, openapi_extra=on_audit)
    def audit_verify() -> dict[str, Any]:
        report = ionwall.audit_verify()
        return {**report.to_dict(), "summary": str(report)}

    return router


__all__ = ["ApproveBody", "ionwall_router"]
