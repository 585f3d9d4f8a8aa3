"""The door of the HTTP API: who may call a route, and how much they may send.

``Door`` is a pure ASGI middleware around the whole app. For every request,
before any route, FastAPI included, reads a byte of its body:

1. The route is matched and its rule read from its OpenAPI extension
   ``x-ionflux-access`` (set with ``public()``, ``needs(scope)`` or
   ``needs_any(action, then=...)``). A route that declares no rule is
   refused to everyone: a new route cannot forget to ask for a token.
2. The token (``Authorization: Bearer``) is checked by IONWALL: 401 no token
   or one refused, 403 one whose scopes do not cover the rule. ``needs_any``
   is for a route whose exact scope names something in the body or in the
   run history (a deploy names its graph in the YAML): the door lets through
   only a token holding some scope of that action, and the route checks the
   exact scope once it knows it.
3. The body: a ``Content-Length`` past the route's limit is answered 413 at
   once; a body without one is counted as it arrives and the request is
   answered 413 as soon as it passes the limit. What the caller still sends
   of a refused body is dropped by uvicorn as it arrives, never buffered (the
   connection stays open: closing it with unread data makes the kernel reset
   it, and the caller would see the reset instead of the answer).

Limits: ``http.max_body_bytes`` for every route, ``http.max_publish_body_bytes``
for the one that takes a module (``needs(..., body="publish")``).
``require_token=False`` (test hosts on loopback) skips step 2 only.

A console page (``session()``) takes no bearer token: the door asks the
console's ``SessionCheck`` instead (a session cookie whose IONWALL token still
verifies, and a same-origin request for anything but GET/HEAD). Nothing else
changes for the routes declared with ``public()``, ``needs()`` or ``needs_any()``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from starlette.routing import Match, Router

from .._errors import BodyTooLarge, PermissionDenied
from ..triggers import Unauthorized
from ._errors import error_response

if TYPE_CHECKING:
    from ._context import ApiContext

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ACCESS = "x-ionflux-access"
BodyKind = Literal["default", "publish"]


def public(*, graph: str | None = None) -> dict[str, Any]:
    """``openapi_extra`` of a route anyone may call (``/healthz``). ``graph``: the
    route triggers that graph, whose rejected runs count the door's refusals."""
    return {ACCESS: {"public": True, "graph": graph}, "security": []}


def needs(scope: str, *, body: BodyKind = "default", graph: str | None = None) -> dict[str, Any]:
    """``openapi_extra`` of a route that needs a token covering ``scope``."""
    spec = {"scope": scope, "body": body, "graph": graph}
    return {ACCESS: spec, "security": [{"bearer": []}]}


def needs_any(action: str, *, then: str) -> dict[str, Any]:
    """``openapi_extra`` of a route that needs a token with some ``action`` scope at
    the door; the route then checks ``then`` (described, e.g. ``execute_graph:<graph>``)."""
    return {ACCESS: {"action": action, "scope": then}, "security": [{"bearer": []}]}


def session() -> dict[str, Any]:
    """``openapi_extra`` of a console page: it needs a console session (a cookie),
    checked by the door's ``SessionCheck``; the page acts only through the API."""
    return {ACCESS: {"session": True}, "security": []}


class SessionCheck(Protocol):
    """How the door admits a ``session()`` route (the console's sessions)."""

    def admit(self, scope: Scope, headers: dict[bytes, bytes]) -> Any:
        """The session of the request; raises the refusal."""
        ...

    def refusal(self, exc: BaseException, scope: Scope) -> ASGIApp:
        """What a refused request is answered (a browser is sent to sign in)."""
        ...


@dataclass(frozen=True, slots=True)
class Rule:
    public: bool = False
    session: bool = False
    scope: str | None = None
    action: str | None = None
    body: BodyKind = "default"
    graph: str | None = None
    declared: bool = True

    @classmethod
    def of(cls, route: Any) -> Rule:
        extra = getattr(route, "openapi_extra", None) or {}
        spec = extra.get(ACCESS)
        if not isinstance(spec, dict):
            return cls(declared=False)
        return cls(
            public=bool(spec.get("public")),
            session=bool(spec.get("session")),
            scope=spec.get("scope"),
            action=spec.get("action"),
            body="publish" if spec.get("body") == "publish" else "default",
            graph=spec.get("graph"),
        )


#: No route matched: Starlette answers 404 without reading the body.
_UNMATCHED = Rule(public=True)
#: Rules remembered at most (paths with a run id or a consent id are many).
_CACHED_RULES = 4096


class Door:
    def __init__(
        self,
        app: ASGIApp,
        *,
        ctx: ApiContext,
        router: Router,
        sessions: SessionCheck | None = None,
    ) -> None:
        self.app = app
        self.ctx = ctx
        self.router = router
        self.sessions = sessions
        # Rules by (method, path), for as long as the routes stay the same
        # (deploys replace the webhook routes); matching every route costs
        # tens of microseconds a request, a lookup well under one.
        self._rules: dict[tuple[str, str], Rule] = {}
        self._routes: tuple[int, ...] = ()

    def rule(self, scope: Scope) -> Rule:
        routes = tuple(map(id, self.router.routes))
        if routes != self._routes or len(self._rules) >= _CACHED_RULES:
            self._rules = {}
            self._routes = routes
        key = (str(scope.get("method")), str(scope.get("path")))
        found = self._rules.get(key)
        if found is None:
            found = self._rules[key] = self._match(scope)
        return found

    def _match(self, scope: Scope) -> Rule:
        partial = None
        for route in _flat(self.router.routes):
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return Rule.of(route)
            if match is Match.PARTIAL and partial is None:
                partial = route  # the path, another method: 405 after the same checks
        return _UNMATCHED if partial is None else Rule.of(partial)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        rule = self.rule(scope)
        try:
            if rule.session:
                claims = self._admit_session(scope, headers)
            else:
                claims = self._admit(rule, headers.get(b"authorization"))
        except Exception as exc:
            if rule.session and self.sessions is not None:
                await self.sessions.refusal(exc, scope)(scope, receive, send)
                return
            self._count(rule, exc)
            await _answer(exc, scope, receive, send)
            return
        if claims is not None:
            scope.setdefault("state", {})["claims"] = claims
        settings = self.ctx.http
        if rule.body == "publish":
            limit, setting = settings.max_publish_body_bytes, "http.max_publish_body_bytes"
        else:
            limit, setting = settings.max_body_bytes, "http.max_body_bytes"
        declared = _content_length(headers)
        if declared is not None and declared > limit:
            too_large = BodyTooLarge(limit, setting, declared)
            self._count(rule, too_large)
            await _answer(too_large, scope, receive, send)
            return
        await self._serve(scope, receive, send, _Counted(receive, limit, setting))

    def _count(self, rule: Rule, exc: BaseException) -> None:
        """A refused trigger call counts as a rejected run of its graph."""
        if rule.graph is not None:
            reason = str(getattr(exc, "kind", "error"))
            self.ctx.triggers.metrics.runs_rejected.labels(rule.graph, reason).inc()

    def _admit(self, rule: Rule, header: bytes | None) -> Any:
        """The caller's claims (None when no token is needed); raises the refusal."""
        if not rule.declared:
            raise Unauthorized(
                "this route declares no access rule, so it answers no one", "undeclared_route"
            )
        if rule.public or not self.ctx.require_token:
            return None
        text = header.decode("latin-1") if header is not None else None
        if rule.action is None:
            return self.ctx.authorize(text, rule.scope)
        claims = self.ctx.authorize(text, None)
        prefix = f"{rule.action}:"
        if not any(str(s).startswith(prefix) for s in getattr(claims, "scopes", ())):
            raise PermissionDenied(
                rule.scope or f"{rule.action}:*",
                f"the token holds no {rule.action} scope",
                getattr(claims, "subject", None),
            )
        return claims

    def _admit_session(self, scope: Scope, headers: dict[bytes, bytes]) -> Any:
        """A console page: its session, whatever ``require_token`` says."""
        if self.sessions is None:
            raise Unauthorized("this host serves no console", "no_console")
        return self.sessions.admit(scope, headers)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, body: _Counted) -> None:
        started = False
        replaced = False

        async def guarded_send(message: Message) -> None:
            nonlocal started, replaced
            if body.exceeded is not None and not started:
                # The route failed reading a body past the limit: whatever it
                # answers (FastAPI's own body reader says 400), the answer is 413.
                if not replaced:
                    replaced = True
                    await _answer(body.exceeded, scope, body.receive, send)
                return
            if replaced:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, body, guarded_send)
        except Exception:
            if body.exceeded is None or started:
                raise
            if not replaced:
                await _answer(body.exceeded, scope, body.receive, send)


def _flat(routes: Iterable[Any]) -> Iterator[Any]:
    """Every route, those of included routers too (FastAPI keeps an included
    router whole, as one entry; its routes carry their full paths)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _flat(inner.routes)
        else:
            yield route


class _Counted:
    """``receive`` that counts the body and raises ``BodyTooLarge`` past ``limit``."""

    def __init__(self, receive: Receive, limit: int, setting: str) -> None:
        self.receive = receive
        self.limit = limit
        self.setting = setting
        self.seen = 0
        self.exceeded: BodyTooLarge | None = None

    async def __call__(self) -> Message:
        if self.exceeded is not None:
            raise self.exceeded
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                self.exceeded = BodyTooLarge(self.limit, self.setting)
                raise self.exceeded
        return message


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", ())}


def _content_length(headers: dict[bytes, bytes]) -> int | None:
    value = headers.get(b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None  # uvicorn refuses such a request before it reaches us


async def _answer(exc: BaseException, scope: Scope, receive: Receive, send: Send) -> None:
    await error_response(exc)(scope, receive, send)
