"""The console's security model over HTTP, against a real serving host (uvicorn,
nats-server, IONWALL): the session cookie's attributes, a session that acts
only through the API with its own token (a narrow token can do nothing more in
the console), a revoked token ending its session, one-time links, the session
budget, and the console's two API areas (a run's graph, debugging) checking
scopes like every other route."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from conftest import make_config
from ionflux.console import signin_link
from ionflux.http import RunningHost, start_host


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[RunningHost]:
    config = make_config(tmp_path / "data")
    config = config.model_copy(
        update={"console": config.console.model_copy(update={"max_sessions": 3})}
    )
    host = await start_host(config)
    yield host
    await host.aclose(5)


def token(running: RunningHost, *scopes: str) -> str:
    return str(running.ionwall.issue_token(list(scopes), timedelta(hours=1)).token)


async def signed_in(running: RunningHost, http: httpx.AsyncClient, *scopes: str) -> str:
    """Signs ``http`` in with a pasted token holding ``scopes``; returns the CSRF token."""
    form = await http.get("/console/signin")
    csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    r = await http.post(
        "/console/signin",
        data={"csrf": csrf, "token": token(running, *scopes)},
        headers={"Origin": running.url},
    )
    assert r.status_code == 200, r.text
    page = await http.get("/console/transforms")
    assert page.status_code == 200
    return page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


async def test_the_session_cookie_is_httponly_strict_and_scoped_to_the_console(
    running: RunningHost,
) -> None:
    async with httpx.AsyncClient(base_url=running.url) as http:
        link = signin_link(running.config.data_dir, running.url, 60)
        r = await http.get(link.removeprefix(running.url))
        cookie = r.headers["set-cookie"].lower()
        assert "ionflux_console=" in cookie and "httponly" in cookie
        assert "samesite=strict" in cookie and "path=/console" in cookie
        assert "secure" not in cookie.split("ionflux_signin")[0]  # plain HTTP here
        again = await http.get(link.removeprefix(running.url))
        assert again.status_code == 401 and "used already" in again.text
    # Served over TLS (the scheme the ASGI server reports), the cookie is Secure.
    transport = httpx.ASGITransport(app=running.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://console.test") as tls:
        link = signin_link(running.config.data_dir, "https://console.test", 60)
        r = await tls.get(link)
        assert "secure" in r.headers["set-cookie"].lower().split("ionflux_signin")[0]


async def test_a_session_can_do_what_its_token_can_and_nothing_more(
    running: RunningHost,
) -> None:
    async with httpx.AsyncClient(base_url=running.url) as http:
        csrf = await signed_in(running, http, "read_host:*")
        page = await http.get("/console/grants")
        assert page.status_code == 403 and "manage_ionwall:grants" in page.text
        inbox = await http.get("/console/inbox")
        assert "manage_ionwall:consents" in inbox.text  # the API's refusal, shown
        denied = await http.post(
            "/console/grants/g-x/revoke", data={"csrf": csrf}, headers={"Origin": running.url}
        )
        assert denied.status_code == 403
        assert (await http.get("/console/transforms")).status_code == 200  # read_host:* holds


async def test_a_revoked_token_ends_its_session_and_sign_out_revokes_a_minted_one(
    running: RunningHost,
) -> None:
    async with httpx.AsyncClient(base_url=running.url) as http:
        await signed_in(running, http, "read_host:*")
        grant = next(g for g in running.ionwall.grants() if g.scopes == ("read_host:*",))
        running.ionwall.revoke(grant.id)
        r = await http.get("/console/transforms")
        assert r.status_code == 401
    async with httpx.AsyncClient(base_url=running.url) as http:
        link = signin_link(running.config.data_dir, running.url, 60)
        await http.get(link.removeprefix(running.url))
        page = await http.get("/console/inbox")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        minted = [g for g in running.ionwall.grants() if g.subject == "console (one-time link)"]
        assert len(minted) == 1 and minted[0].revoked_at is None
        out = await http.post(
            "/console/signout", data={"csrf": csrf}, headers={"Origin": running.url}
        )
        assert out.status_code == 303
        assert running.ionwall.grant(minted[0].id).revoked_at is not None
        assert (await http.get("/console/inbox")).status_code == 401


async def test_past_max_sessions_a_sign_in_is_refused(running: RunningHost) -> None:
    clients = [httpx.AsyncClient(base_url=running.url) for _ in range(4)]
    try:
        for http in clients[:3]:
            await signed_in(running, http, "read_host:*")
        form = await clients[3].get("/console/signin")
        csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = await clients[3].post(
            "/console/signin",
            data={"csrf": csrf, "token": token(running, "read_host:*")},
            headers={"Origin": running.url},
        )
        assert r.status_code == 503 and "console.max_sessions = 3" in r.text
    finally:
        for http in clients:
            await http.aclose()


async def test_the_consoles_api_routes_check_scopes_like_every_route(
    running: RunningHost,
) -> None:
    async with httpx.AsyncClient(base_url=running.url) as http:
        assert (await http.get("/runs/x/graph")).status_code == 401
        assert (await http.post("/graphs/g/debug", json={})).status_code == 401
        reader = {"Authorization": f"Bearer {token(running, 'read_host:*')}"}
        assert (await http.get("/debug/x", headers=reader)).status_code == 403
        runner = {"Authorization": f"Bearer {token(running, 'execute_graph:other')}"}
        r = await http.post("/graphs/g/debug", json={}, headers=runner)
        assert r.status_code == 403


async def test_a_live_view_ends_cleanly_when_the_host_drains(tmp_path: Path) -> None:
    """An open console tab does not hold ``ionflux up`` at its graceful stop: the
    stream ends (a complete response), the host stops."""
    running = await start_host(make_config(tmp_path / "data"), drain_timeout=60)
    closed = False
    try:
        async with httpx.AsyncClient(base_url=running.url, timeout=60) as http:
            link = signin_link(running.config.data_dir, running.url, 60)
            await http.get(link.removeprefix(running.url))
            async with http.stream("GET", "/console/live/inbox") as live:
                assert live.status_code == 200
                assert live.headers["content-type"].startswith("text/event-stream")
                lines = live.aiter_lines()
                while "event: inbox" not in await anext(lines):
                    pass
                stopping = asyncio.ensure_future(running.aclose(5))
                rest = [line async for line in lines]  # raises if the stream is cut
                closed = True
                assert not any(line.startswith("event: inbox") for line in rest)
            await stopping
    finally:
        if not closed:
            await running.aclose(5)
