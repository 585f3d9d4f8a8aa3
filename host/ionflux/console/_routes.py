"""The console's pages and forms (server-rendered; htmx swaps in live fragments).

Every page needs a session (``session()`` at the door); the sign-in page and
the static files are public. A page reads, and a form acts, only through
``Api``: the host's HTTP API with the session's token. Every form carries the
session's CSRF token (checked here) on top of the door's same-origin check and
the cookie's SameSite=Strict.

Live parts are server-sent events: ``/live/{what}`` asks the API again every
``console.poll_interval_s`` and sends a fragment when it changed. A stream
ends when the session does, when the host drains, or when the browser goes;
at most ``console.max_streams`` are open at once (503 past it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData, UploadFile

from .._errors import CrossSiteRequest, SessionLimitReached
from ..config import ConsoleSettings
from ..http import ApiContext, public, session
from . import _dag, _pages
from ._api import Api, ApiRefused
from ._sessions import CONSOLE_SCOPES, COOKIE, SIGNIN_COOKIE, Session, Sessions, same_origin

HERE = Path(__file__).parent
Page = Callable[..., Awaitable[Response]]


def templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = _pages.pretty
    env.filters["status_class"] = _pages.status_class
    env.filters["when"] = _when
    env.filters["seconds"] = _seconds
    env.filters["q"] = lambda v: quote(str(v), safe="")
    return env


def _when(value: Any) -> str:
    if value in (None, ""):
        return ""
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value: Any) -> str:
    return "" if value is None else f"{float(value):.3f} s"


class Console:
    """The pages of one host's console."""

    def __init__(self, ctx: ApiContext, sessions: Sessions, settings: ConsoleSettings) -> None:
        self.ctx = ctx
        self.sessions = sessions
        self.settings = settings
        self.env = templates()
        self.streams = 0

    # -- helpers ---------------------------------------------------------------------

    def render(self, request: Request, name: str, code: int = 200, **values: Any) -> Response:
        sess = getattr(request.state, "claims", None)
        page = self.env.get_template(name).render(
            session=sess if isinstance(sess, Session) else None,
            csrf=sess.csrf if isinstance(sess, Session) else "",
            path=request.url.path,
            **values,
        )
        return HTMLResponse(page, status_code=code, headers=_NO_STORE)

    def api(self, request: Request) -> Api:
        return Api(request.app, _session(request).authorization)

    async def form(self, request: Request) -> FormData:
        """The form of an unsafe request, once its CSRF token matched the session's."""
        form = await read_form(request)
        given = form.get("csrf")
        if not _session(request).csrf_ok(given if isinstance(given, str) else None):
            raise CrossSiteRequest("the form's CSRF token is missing or wrong")
        return form

    def refused(self, request: Request, exc: Exception) -> Response:
        status = 403 if isinstance(exc, CrossSiteRequest) else 400
        if isinstance(exc, ApiRefused):
            status = exc.status
        return self.render(request, "error.html", code=status, error=str(exc))

    async def act(self, request: Request, path: str, then: str) -> Response:
        """A form that carries only its CSRF token: ``POST path`` on the API, then
        to the page ``then``; the error page when the form or the API refuses."""
        try:
            await self.form(request)
            async with self.api(request) as api:
                await api.post(path)
        except (CrossSiteRequest, ApiRefused) as exc:
            return self.refused(request, exc)
        return RedirectResponse(then, status_code=303)

    async def run_view(
        self,
        request: Request,
        run_id: str,
        fragment_of: Callable[[Api, str, str], Awaitable[str]],
        template: str,
    ) -> Response:
        """A page of one run (``run.html``, ``debug.html``): ``fragment_of``'s HTML
        of it in ``template``, or the error page when the API refuses."""
        try:
            async with self.api(request) as api:
                fragment = await fragment_of(api, run_id, _session(request).csrf)
        except ApiRefused as exc:
            return self.refused(request, exc)
        return self.render(request, template, fragment=fragment, run_id=run_id)

    def stream(
        self, request: Request, event: str, fragment: Callable[[Api], Awaitable[str]]
    ) -> Response:
        """Server-sent events: ``event`` with ``fragment``'s HTML whenever it changes."""
        if self.streams >= self.settings.max_streams:
            return Response(
                f"console.max_streams = {self.settings.max_streams} live views are open",
                status_code=503,
                headers={"Retry-After": "5"},
            )
        own = _session(request)
        cookie = request.cookies.get(COOKIE)
        interval = self.settings.poll_interval_s

        async def events() -> AsyncIterator[str]:
            self.streams += 1
            last = None
            try:
                async with Api(request.app, own.authorization) as api:
                    yield "retry: 2000\n\n"
                    while not self.ctx.triggers.dispatcher.closing:
                        if self.sessions.get(cookie) is None:
                            yield "event: signed-out\ndata: signed out\n\n"
                            return
                        try:
                            html = await fragment(api)
                        except ApiRefused as exc:
                            html = f'<p class="error">{exc}</p>'
                        if html != last:
                            last = html
                            data = "\n".join(f"data: {line}" for line in html.splitlines())
                            yield f"event: {event}\n{data or 'data: '}\n\n"
                        if await request.is_disconnected():
                            return
                        await asyncio.sleep(interval)
            finally:
                self.streams -= 1

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # -- fragments (the live parts) ------------------------------------------------------

    async def inbox_fragment(self, api: Api, csrf: str) -> str:
        pending = await api.get("/ionwall/consents", status="pending")
        wall = self.ctx.ionwall
        lifetime = _lifetime(wall)
        items = []
        for c in pending:
            who = _pages.requester(c)
            words = None
            if who["kind"] == "plan":  # the Reactor's prompt, in the seed's words
                try:
                    got = await api.get(f"/reactor/consents/{quote(c['id'], safe='')}/prompt")
                    words = got.get("text")
                except ApiRefused:
                    words = None
            items.append(
                {**c, "who": who, "words": words, "groups": _pages.grouped_scopes(c["scopes"])}
            )
        return self.env.get_template("_inbox.html").render(
            consents=items, expiries=_pages.EXPIRIES, lifetime=lifetime, csrf=csrf
        )

    async def runs_fragment(self, api: Api, graph: str | None, status: str | None) -> str:
        runs = await api.get("/runs", graph=graph, status=status, limit=100)
        return self.env.get_template("_runs.html").render(runs=runs)

    async def run_fragment(self, api: Api, run_id: str, csrf: str) -> str:
        run = await api.get(f"/runs/{quote(run_id, safe='')}")
        execution = run.get("execution_id") or run_id
        nodes: list[dict[str, Any]] = []
        if run.get("graph_cid") or run.get("graph_name"):
            try:
                nodes = (await api.get(f"/runs/{quote(execution, safe='')}/graph"))["nodes"]
            except ApiRefused:
                nodes = []
        steps = run.get("steps") or []
        statuses = {s["node_id"]: s["status"] for s in steps}
        return self.env.get_template("_run.html").render(
            run=run,
            steps=steps,
            nodes=nodes,
            dag=_dag.svg(nodes, statuses) if nodes else "",
            csrf=csrf,
        )

    async def debug_fragment(self, api: Api, run_id: str, csrf: str) -> str:
        view = await api.get(f"/debug/{quote(run_id, safe='')}")
        try:  # the earlier steps' (masked) outputs, from the run's record
            steps = (await api.get(f"/runs/{quote(run_id, safe='')}")).get("steps") or []
        except ApiRefused:
            steps = []
        return self.env.get_template("_debug.html").render(view=view, steps=steps, csrf=csrf)


def console_router(ctx: ApiContext, sessions: Sessions, settings: ConsoleSettings) -> APIRouter:
    """The console's routes; ``sessions`` is also the door's ``SessionCheck``."""
    console = Console(ctx, sessions, settings)
    router = APIRouter(prefix="/console", include_in_schema=False)
    page = session()

    # -- sign-in -----------------------------------------------------------------------

    @router.get("/signin", openapi_extra=public())
    async def signin_page(request: Request, code: str | None = None) -> Response:
        if code is not None:
            if not sessions.codes.take(code):
                return _signin_form(
                    request,
                    console,
                    error="this sign-in link was used already or has expired: "
                    "run `ionflux console` for a new one",
                )
            wall = ctx.ionwall
            if wall is None:
                return console.render(request, "error.html", 503, error="no IONWALL here")
            grant = wall.issue_token(
                list(CONSOLE_SCOPES),
                _timedelta(settings.session_ttl_s),
                subject="console (one-time link)",
            )
            return _signed_in(request, console, grant.token, grant.id, "console (one-time link)")
        return _signin_form(request, console)

    @router.post("/signin", openapi_extra=public())
    async def signin(request: Request) -> Response:
        form = await read_form(request, max_fields=10)
        try:
            same_origin(_raw_headers(request))
            given = form.get("csrf")
            if not given or given != request.cookies.get(SIGNIN_COOKIE):
                raise CrossSiteRequest("the sign-in form's CSRF token is missing or wrong")
        except CrossSiteRequest as exc:
            return console.render(request, "error.html", 403, error=str(exc))
        token = str(form.get("token") or "").strip()
        try:
            if ctx.ionwall is None:
                raise ValueError("this host has no IONWALL to verify tokens with")
            claims = ctx.ionwall.verify_token(token)
        except Exception as exc:
            return _signin_form(request, console, error=f"that token is refused: {exc}")
        subject = getattr(claims, "subject", None)
        return _signed_in(request, console, token, None, subject)

    @router.post("/signout", openapi_extra=page)
    async def signout(request: Request) -> Response:
        try:
            await console.form(request)
        except CrossSiteRequest as exc:
            return console.refused(request, exc)
        own = _session(request)
        if own.token_id is not None:  # the token this session minted goes with it
            async with console.api(request) as api:
                try:
                    await api.post(f"/ionwall/grants/{own.token_id}/revoke")
                except ApiRefused:
                    pass
        sessions.end(own)
        response = RedirectResponse("/console/signin", status_code=303)
        response.delete_cookie(COOKIE, path="/console")
        return response

    # -- the inbox -----------------------------------------------------------------------

    @router.get("", openapi_extra=page)
    @router.get("/", openapi_extra=page)
    async def home(request: Request) -> Response:
        return RedirectResponse("/console/inbox", status_code=303)

    @router.get("/inbox", openapi_extra=page)
    async def inbox(request: Request) -> Response:
        try:
            async with console.api(request) as api:
                fragment = await console.inbox_fragment(api, _session(request).csrf)
        except ApiRefused as exc:
            return console.refused(request, exc)
        return console.render(request, "inbox.html", fragment=fragment)

    @router.post("/consents/{consent_id}/approve", openapi_extra=page)
    async def approve(request: Request, consent_id: str) -> Response:
        try:
            form = await console.form(request)
            values = {k: form.getlist(k) if k == "scope" else form.get(k) for k in form}
            async with console.api(request) as api:
                consent = await api.get(f"/ionwall/consents/{quote(consent_id, safe='')}")
                only, expires = _pages.approval(values, consent["scopes"])
                await api.post(
                    f"/ionwall/consents/{quote(consent_id, safe='')}/approve",
                    {"only": only, "expires": expires},
                )
        except (CrossSiteRequest, ApiRefused) as exc:
            return console.refused(request, exc)
        return RedirectResponse("/console/inbox?answered=approved", status_code=303)

    @router.post("/consents/{consent_id}/deny", openapi_extra=page)
    async def deny(request: Request, consent_id: str) -> Response:
        return await console.act(
            request,
            f"/ionwall/consents/{quote(consent_id, safe='')}/deny",
            "/console/inbox?answered=denied",
        )

    # -- grants and audit ------------------------------------------------------------------

    @router.get("/grants", openapi_extra=page)
    async def grants(request: Request, q: str | None = None, status: str | None = None) -> Response:
        try:
            async with console.api(request) as api:
                found = await api.get("/ionwall/grants")
        except ApiRefused as exc:
            return console.refused(request, exc)
        shown = [
            g
            for g in found
            if (not status or g.get("status") == status)
            and (
                not q
                or any(
                    _pages.matches(g, **{k: q})
                    for k in ("id", "subject", "transform", "scopes", "kind")
                )
            )
        ]
        return console.render(request, "grants.html", grants=shown, q=q or "", status=status or "")

    @router.get("/grants/{grant_id}/revoke", openapi_extra=page)
    async def confirm_revoke(request: Request, grant_id: str) -> Response:
        try:
            async with console.api(request) as api:
                found = [g for g in await api.get("/ionwall/grants") if g["id"] == grant_id]
        except ApiRefused as exc:
            return console.refused(request, exc)
        if not found:
            return console.render(request, "error.html", 404, error=f"no grant {grant_id}")
        return console.render(request, "revoke.html", grant=found[0])

    @router.post("/grants/{grant_id}/revoke", openapi_extra=page)
    async def revoke(request: Request, grant_id: str) -> Response:
        return await console.act(
            request,
            f"/ionwall/grants/{quote(grant_id, safe='')}/revoke",
            f"/console/grants?revoked={quote(grant_id)}",
        )

    @router.get("/audit", openapi_extra=page)
    async def audit(
        request: Request,
        tail: int = 100,
        grant: str | None = None,
        scope: str | None = None,
        decision: str | None = None,
        verify: str | None = None,
    ) -> Response:
        tail = max(1, min(tail, 10_000))
        try:
            async with console.api(request) as api:
                entries = (await api.get("/ionwall/audit", tail=tail))["entries"]
                report = await api.get("/ionwall/audit/verify") if verify else None
        except ApiRefused as exc:
            return console.refused(request, exc)
        shown = [
            e
            for e in reversed(entries)
            if _pages.matches(e, grant_id=grant, scope=scope, decision=decision)
        ]
        return console.render(
            request,
            "audit.html",
            entries=shown,
            report=report,
            tail=tail,
            grant=grant or "",
            scope=scope or "",
            decision=decision or "",
        )

    # -- runs ---------------------------------------------------------------------------

    @router.get("/runs", openapi_extra=page)
    async def runs(
        request: Request, graph: str | None = None, status: str | None = None
    ) -> Response:
        try:
            async with console.api(request) as api:
                fragment = await console.runs_fragment(api, graph or None, status or None)
        except ApiRefused as exc:
            return console.refused(request, exc)
        query = urlencode({k: v for k, v in {"graph": graph, "status": status}.items() if v})
        return console.render(
            request,
            "runs.html",
            fragment=fragment,
            graph=graph or "",
            status=status or "",
            query=query,
        )

    @router.get("/runs/{run_id}", openapi_extra=page)
    async def run_page(request: Request, run_id: str) -> Response:
        return await console.run_view(request, run_id, console.run_fragment, "run.html")

    @router.post("/runs/{run_id}/{action}", openapi_extra=page)
    async def control(request: Request, run_id: str, action: str) -> Response:
        try:
            form = await console.form(request)
            if action not in ("pause", "resume", "cancel", "retry"):
                raise ApiRefused(404, {"message": f"no run control {action!r}"})
            body: dict[str, Any] = {}
            step = str(form.get("from_step") or "").strip()
            if action == "retry" and step:
                body["from_step"] = step
            async with console.api(request) as api:
                await api.post(f"/runs/{quote(run_id, safe='')}/{action}", body or None)
        except (CrossSiteRequest, ApiRefused) as exc:
            return console.refused(request, exc)
        return RedirectResponse(f"/console/runs/{quote(run_id, safe='')}", status_code=303)

    # -- transforms, graphs, debugging -----------------------------------------------------

    @router.get("/transforms", openapi_extra=page)
    async def transforms(request: Request) -> Response:
        try:
            async with console.api(request) as api:
                found = await api.get("/transforms")
        except ApiRefused as exc:
            return console.refused(request, exc)
        return console.render(request, "transforms.html", transforms=found)

    @router.get("/graphs", openapi_extra=page)
    async def graphs(request: Request) -> Response:
        try:
            async with console.api(request) as api:
                found = await api.get("/graphs")
                for g in found:
                    g["versions"] = await api.get(f"/graphs/{quote(g['name'], safe='')}/versions")
        except ApiRefused as exc:
            return console.refused(request, exc)
        return console.render(request, "graphs.html", graphs=found)

    @router.post("/graphs", openapi_extra=page)
    async def deploy_graph(request: Request) -> Response:
        """A graph's YAML deployed as a new version (``POST /graphs``)."""
        try:
            form = await console.form(request)
            text = str(form.get("graph") or "")
            async with console.api(request) as api:
                await api.post("/graphs", {"graph": text, "message": "deployed in the console"})
        except (CrossSiteRequest, ApiRefused) as exc:
            return console.refused(request, exc)
        return RedirectResponse("/console/graphs", status_code=303)

    @router.post("/graphs/{name}/run", openapi_extra=page)
    async def start_run(request: Request, name: str) -> Response:
        try:
            form = await console.form(request)
            value = _json_input(str(form.get("input") or "{}"))
            debug = form.get("debug") == "1"
            async with console.api(request) as api:
                if debug:
                    view = await api.post(f"/graphs/{quote(name, safe='')}/debug", {"input": value})
                    return RedirectResponse(f"/console/debug/{view['run_id']}", status_code=303)
                started = await api.post(
                    f"/graphs/{quote(name, safe='')}/runs",
                    {"input": value},
                    Prefer="respond-async",
                )
        except (CrossSiteRequest, ApiRefused) as exc:
            return console.refused(request, exc)
        return RedirectResponse(f"/console/runs/{started['run_id']}", status_code=303)

    @router.get("/debug/{run_id}", openapi_extra=page)
    async def debug_page(request: Request, run_id: str) -> Response:
        return await console.run_view(request, run_id, console.debug_fragment, "debug.html")

    @router.post("/debug/{run_id}/{action}", openapi_extra=page)
    async def debug_answer(request: Request, run_id: str, action: str) -> Response:
        return await console.act(
            request,
            f"/debug/{quote(run_id, safe='')}/{quote(action, safe='')}",
            f"/console/debug/{quote(run_id, safe='')}",
        )

    # -- agents (ionflux.reactor) -------------------------------------------------------------

    @router.get("/agents", openapi_extra=page)
    async def agents(request: Request) -> Response:
        found: dict[str, Any] = {"agents": [], "plans": [], "problem": None}
        async with console.api(request) as api:
            try:
                found["agents"] = await api.get("/reactor/agents")
                found["plans"] = await api.get("/reactor/plans")
            except ApiRefused as exc:
                found["problem"] = str(exc)
        return console.render(request, "agents.html", **found)

    @router.post("/agents/deploy", openapi_extra=page)
    async def deploy_agent(request: Request) -> Response:
        """An agent definition (YAML, the seed's fields) stored, then deployed."""
        try:
            form = await console.form(request)
            text = str(form.get("definition") or "")
            async with console.api(request) as api:
                stored = await api.post("/reactor/agent-definitions", {"definition": text})
                await api.post("/reactor/agents/deploy", {"agent_definition_cid": stored["cid"]})
        except (CrossSiteRequest, ApiRefused) as exc:
            return console.refused(request, exc)
        return RedirectResponse("/console/agents", status_code=303)

    @router.post("/agents/{name}/{operation}", openapi_extra=page)
    async def manage_agent(request: Request, name: str, operation: str) -> Response:
        """retire or rollback (the seed's manage_agent), as the API does it."""
        try:
            await console.form(request)
            if operation not in ("retire", "rollback"):
                raise ApiRefused(404, {"message": f"no agent operation {operation!r} here"})
            async with console.api(request) as api:
                await api.post(
                    f"/reactor/agents/{operation}", {"agent_id_to_update_or_retire": name}
                )
        except (CrossSiteRequest, ApiRefused) as exc:
            return console.refused(request, exc)
        return RedirectResponse("/console/agents", status_code=303)

    # -- live --------------------------------------------------------------------------------

    @router.get("/live/inbox", openapi_extra=page)
    async def live_inbox(request: Request) -> Response:
        csrf = _session(request).csrf
        return console.stream(request, "inbox", lambda api: console.inbox_fragment(api, csrf))

    @router.get("/live/runs", openapi_extra=page)
    async def live_runs(
        request: Request, graph: str | None = None, status: str | None = None
    ) -> Response:
        return console.stream(
            request, "runs", lambda api: console.runs_fragment(api, graph or None, status or None)
        )

    @router.get("/live/runs/{run_id}", openapi_extra=page)
    async def live_run(request: Request, run_id: str) -> Response:
        csrf = _session(request).csrf
        return console.stream(request, "run", lambda api: console.run_fragment(api, run_id, csrf))

    @router.get("/live/debug/{run_id}", openapi_extra=page)
    async def live_debug(request: Request, run_id: str) -> Response:
        csrf = _session(request).csrf
        return console.stream(
            request,
            "debug",
            lambda api: console.debug_fragment(api, run_id, csrf),
        )

    return router


_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def root_router() -> APIRouter:
    """``/``: the console (its pages live under ``/console/``, clear of the API's paths)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/", openapi_extra=public())
    async def root() -> Response:
        return RedirectResponse("/console/inbox", status_code=303)

    return router


def static_router() -> APIRouter:
    """``/static/<file>``: the console's own files (no directory walk: a fixed list)."""
    router = APIRouter(prefix="/console", include_in_schema=False)
    files = {
        p.name: (p.read_bytes(), _STATIC_TYPES[p.suffix])
        for p in (HERE / "static").iterdir()
        if p.suffix in _STATIC_TYPES
    }

    @router.get("/static/{name}", openapi_extra=public())
    def static(name: str) -> Response:
        found = files.get(name)
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        body, media = found
        return Response(body, media_type=media, headers={"Cache-Control": "max-age=3600"})

    return router


# -- helpers -------------------------------------------------------------------------------

_NO_STORE = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
             "Content-Security-Policy": "default-src 'self'; style-src 'self'; "
             "script-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
             "form-action 'self'; base-uri 'none'",
             "Referrer-Policy": "same-origin"}  # fmt: skip


def _session(request: Request) -> Session:
    found = getattr(request.state, "claims", None)
    assert isinstance(found, Session), "the door admits console pages with a session only"
    return found


async def read_form(request: Request, max_fields: int = 200) -> FormData:
    """An ``application/x-www-form-urlencoded`` body (every console form is one;
    the door already bounded its size). Anything else reads as an empty form."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return FormData()
    text = (await request.body()).decode("utf-8", "replace")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=max_fields)
    except ValueError:
        return FormData()
    fields: list[tuple[str, str | UploadFile]] = [(k, v) for k, v in pairs]
    return FormData(fields)


def _raw_headers(request: Request) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in request.scope.get("headers", ())}


def _new_csrf() -> str:
    import secrets

    return secrets.token_urlsafe(24)


def _signin_form(request: Request, console: Console, error: str | None = None) -> Response:
    token = _new_csrf()
    response = console.render(
        request, "signin.html", code=401 if error else 200, error=error, signin_csrf=token
    )
    response.set_cookie(
        SIGNIN_COOKIE,
        token,
        max_age=3600,
        path="/console/signin",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def _signed_in(
    request: Request, console: Console, token: str, token_id: str | None, subject: str | None
) -> Response:
    try:
        cookie = console.sessions.create(token, token_id=token_id, subject=subject)
    except SessionLimitReached as exc:
        return console.render(request, "error.html", 503, error=str(exc))
    # A page, not a redirect: a Strict cookie set while arriving from another
    # site (a link in a chat) is sent with the next same-site navigation only.
    response = console.render(request, "signed_in.html")
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(console.settings.session_ttl_s),
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/console/signin")
    return response


def _timedelta(seconds: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=seconds)


def _lifetime(wall: Any) -> str:
    if wall is None:
        return ""
    from ionwall import format_duration

    return str(format_duration(wall.policy.default_grant_lifetime))


def _json_input(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ApiRefused(422, {"message": f"the run's input is not JSON: {exc}"}) from None


__all__ = ["Console", "console_router", "root_router", "static_router"]
