"""``/ionwall/…`` against a real uvicorn server on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from ionflux.http._ionwall_routes import ionwall_router

from ionwall import CallContext, ConsentRequired, Ionwall

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
SCOPES = ["read_pod_data:reports/*", "publish_nats_topic:ionflux.digest.*"]


@dataclass
class Server:
    wall: Ionwall
    client: httpx.Client  # carries an owner token

    def ask(self, version: str = "1.0.0") -> str:
        try:
            self.wall.authorize(CID, "digest", version, SCOPES)
        except ConsentRequired as exc:
            return exc.request.id
        raise AssertionError("expected a consent request")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    wall = Ionwall(tmp_path / "ionwall")
    app = FastAPI()
    app.include_router(ionwall_router(wall))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    token = wall.issue_token(["manage_ionwall:*"], timedelta(hours=1)).token
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}
    ) as client:
        yield Server(wall, client)
    uv.should_exit = True
    thread.join(timeout=10)
    sock.close()
    wall.close()


def test_consent_flow_over_http(server: Server) -> None:
    consent_id = server.ask()
    listed = server.client.get("/ionwall/consents", params={"status": "pending"})
    assert listed.status_code == 200 and [c["id"] for c in listed.json()] == [consent_id]
    shown = server.client.get(f"/ionwall/consents/{consent_id}").json()
    assert "read data from your IONPOD" in shown["prompt"]
    approved = server.client.post(
        f"/ionwall/consents/{consent_id}/approve",
        json={"expires": "2d", "only": ["publish_nats_topic:ionflux.**"]},
    )
    assert approved.status_code == 200, approved.text
    grant = approved.json()
    assert grant["scopes"] == ["publish_nats_topic:ionflux.digest.*"]
    assert server.wall.verify_token(grant["token"]).token_id == grant["id"]
    gate = server.wall.gate(grant["id"])
    ctx = CallContext(CID, "digest", "run-1", "n1")
    assert gate.check(ctx, "publish_nats_topic:ionflux.digest.daily").allowed

    grants = server.client.get("/ionwall/grants").json()
    assert {g["id"]: g["status"] for g in grants}[grant["id"]] == "active"
    revoked = server.client.post(f"/ionwall/grants/{grant['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert not gate.check(ctx, "publish_nats_topic:ionflux.digest.daily").allowed

    entries = server.client.get("/ionwall/audit", params={"tail": 6}).json()["entries"]
    # The owner's decisions are in the same chain as the gate's.
    assert [(e["decision"], e["scope"]) for e in entries] == [
        ("consent-requested", "read_pod_data:reports/*"),
        ("consent-requested", "publish_nats_topic:ionflux.digest.*"),
        ("consent-approved", "publish_nats_topic:ionflux.digest.*"),
        ("allow", "publish_nats_topic:ionflux.digest.daily"),
        ("grant-revoked", "publish_nats_topic:ionflux.digest.*"),
        ("deny", "publish_nats_topic:ionflux.digest.daily"),
    ]
    verified = server.client.get("/ionwall/audit/verify").json()
    assert verified["ok"] is True and verified["entries"] == 7  # with the fixture's token


def test_precise_error_statuses(server: Server) -> None:
    c = server.client
    assert c.get("/ionwall/consents/c-nope").status_code == 404
    r = c.post("/ionwall/consents/c-nope/approve")
    assert r.status_code == 404 and r.json()["detail"]["kind"] == "unknown_consent"
    assert c.post("/ionwall/grants/g-nope/revoke").status_code == 404
    consent_id = server.ask()
    r = c.post(f"/ionwall/consents/{consent_id}/approve", json={"only": ["nope:x"]})
    assert r.status_code == 422 and r.json()["detail"]["kind"] == "invalid_scope"
    r = c.post(f"/ionwall/consents/{consent_id}/approve", json={"expires": "soon"})
    assert r.status_code == 422 and r.json()["detail"]["kind"] == "invalid_duration"
    r = c.post(f"/ionwall/consents/{consent_id}/approve", json={"expires": "900d"})
    assert r.status_code == 422 and r.json()["detail"]["kind"] == "policy"
    assert c.post(f"/ionwall/consents/{consent_id}/deny").status_code == 200
    r = c.post(f"/ionwall/consents/{consent_id}/approve")
    assert r.status_code == 409 and "already denied" in r.json()["detail"]["message"]
    assert c.post(f"/ionwall/consents/{consent_id}/deny").status_code == 409
    assert c.get("/ionwall/consents", params={"status": "maybe"}).status_code == 422
    assert c.get("/ionwall/audit", params={"tail": 0}).status_code == 422


def test_routes_need_an_owner_token(server: Server) -> None:
    base = str(server.client.base_url)
    with httpx.Client(base_url=base) as anonymous:
        r = anonymous.get("/ionwall/consents")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["detail"]["kind"] == "token_missing"
        r = anonymous.get("/ionwall/grants", headers={"Authorization": "Bearer nonsense"})
        assert r.status_code == 401 and r.json()["detail"]["kind"] == "token_invalid"
    audit_only = server.wall.issue_token(["manage_ionwall:audit"], timedelta(hours=1))
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {audit_only.token}"}
    ) as reader:
        assert reader.get("/ionwall/audit").status_code == 200
        r = reader.post("/ionwall/grants/g-x/revoke")
        assert r.status_code == 403 and r.json()["detail"]["scope"] == "manage_ionwall:grants"
        server.wall.revoke(audit_only.id)
        r = reader.get("/ionwall/audit")
        assert r.status_code == 401 and r.json()["detail"]["kind"] == "token_revoked"


def test_audit_verify_reports_tampering(server: Server) -> None:
    gate = server.wall.gate(None)
    for i in range(3):
        gate.check(CallContext(CID, "digest", node_id=f"n{i}"), "emit_log:info")
    log = server.wall.audit.path
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:2]))
    report = server.client.get("/ionwall/audit/verify").json()
    assert report["ok"] is False and report["index"] == 2
    assert "truncated" in report["summary"]


async def test_router_without_tokens_for_loopback_tests(tmp_path: Path) -> None:
    with Ionwall(tmp_path / "iw") as wall:
        app = FastAPI()
        app.include_router(ionwall_router(wall, require_token=False))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/ionwall/consents")).json() == []
