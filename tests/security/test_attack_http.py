# ruff: noqa: F811  (pytest fixtures imported from serving, taken as parameters)
"""Attacks on the HTTP front door (issue 11, classes 1, 7 and 10, and the ``mode`` bug),
against a real serving host (uvicorn, nats-server).

- Work before authentication: the door checks the token from the headers
  alone, so an alias-bomb YAML, or a body of many MB, without a token is
  answered 401 before it has even been sent whole; the loop answers
  ``/healthz`` meanwhile.
- Body size: a ``Content-Length`` past the limit is 413 at once; a chunked body
  is counted as it arrives and answered 413 as soon as it passes the limit.
- Deep JSON: 422 ``json_too_deep`` naming the limit, no Python exception name.
- Every route but ``/healthz`` (and the docs) needs a token: each operation of
  the host's own OpenAPI document, called without one, is 401.
- ``mode: dry_run_validate_only`` validates and plans, and no node runs;
  ``step_through_debug`` cannot be driven over HTTP and is refused.

Figures (the in-process host's RSS and ``/healthz`` latency during the worst
case) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from ionflux.http import RunningHost
from serving import HOOK, http, nats_server, running, still_serves, token  # noqa: F401

MIB = 1024 * 1024
LIMIT = 4 * MIB  # http.max_body_bytes, default

ALIAS_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [
        f"{c}: &{c} [" + ",".join([f"*{p}"] * 10) + "]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    + ["name: bomb", 'version: "1.0.0"', "graph: *i"]
)


def rss_mb() -> float:
    """The resident set of this process (the in-process host) right now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def raw(
    running: RunningHost, head: str, parts: Sequence[bytes] = ()
) -> tuple[int, dict[str, str], bytes]:
    """Sends ``head`` and ``parts`` as they are (no waiting for the server to read
    them), then reads the answer: status, headers, body."""
    url = urlsplit(running.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(head.encode("latin-1"))
        for part in parts:
            writer.write(part)
        status_line = await asyncio.wait_for(reader.readline(), 30)
        headers: dict[str, str] = {}
        while (line := await asyncio.wait_for(reader.readline(), 30)) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body
    finally:
        writer.close()


def request_head(
    path: str, *, length: int | None = None, auth: dict[str, str] | None = None
) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json"]
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    lines += [f"{k}: {v}" for k, v in (auth or {}).items()]
    return "\r\n".join(lines) + "\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class Probe:
    """Asks ``/healthz`` over and over while an attack runs; keeps the latencies."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.latencies: list[float] = []
        self.peak_rss = rss_mb()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            r = await self.http.get("/healthz")
            assert r.status_code == 200
            self.latencies.append(time.perf_counter() - started)
            self.peak_rss = max(self.peak_rss, rss_mb())
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> Probe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        if self._task.done():
            self._task.result()  # a failed /healthz fails the test
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def report(self, what: str, before_mb: float) -> None:
        worst = max(self.latencies, default=float("nan")) * 1000
        print(
            f"\n[figures] {what}: /healthz answered {len(self.latencies)} times, "
            f"worst {worst:.1f} ms; RSS {before_mb:.0f} MB before, peak {self.peak_rss:.0f} MB"
        )


def no_exception_names(body: Any) -> None:
    text = json.dumps(body)
    for name in ("RecursionError", "Traceback", "Exception", "ValueError", "KeyError"):
        assert name not in text, text


# -- work before authentication ---------------------------------------------------


async def test_an_alias_bomb_without_a_token_is_refused_before_it_is_read(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    body = json.dumps({"graph": ALIAS_BOMB}).encode()
    # Headers and half the body, the request left in flight: /healthz answers
    # meanwhile, and the refusal comes before the rest was ever sent.
    url = urlsplit(running.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(request_head("/graphs", length=len(body)).encode())
        writer.write(body[: len(body) // 2])
        await writer.drain()
        assert (await http.get("/healthz")).status_code == 200
        status_line = await asyncio.wait_for(reader.readline(), 30)
        assert status_line.split()[1] == b"401"
    finally:
        writer.close()
    # The whole of it, as a client would send it: still 401, nothing parsed.
    r = await http.post("/graphs", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    assert running.engine.repository.names() == ["digest"]
    await still_serves(running, http)


async def test_an_alias_bomb_with_a_deploy_token_is_refused_off_the_loop(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    """The worst case a caller with a deploy token can send: parsed on a parsing
    thread within the YAML budget; the loop answers /healthz all along."""
    before = rss_mb()
    async with Probe(http) as probe:
        r = await http.post(
            "/graphs",
            json={"graph": ALIAS_BOMB},
            headers=token(running, "manage_agent_lifecycle:*"),
        )
        await asyncio.sleep(0.05)  # one more /healthz after it
    assert r.status_code == 422, r.text
    # Refused by the YAML loader's alias budget, not after expanding it.
    assert r.json()["detail"]["limit"] == "max_alias_expansion", r.text
    no_exception_names(r.json())
    assert running.engine.repository.names() == ["digest"]
    probe.report("alias bomb with a deploy token", before)
    await still_serves(running, http)


async def test_many_megabytes_without_a_token_are_refused_unread(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    before = rss_mb()
    for path in (HOOK, "/graphs", "/transforms", "/graphs/digest/runs"):
        # Declares 200 MB, sends 1 MB of it: answered from the headers alone.
        status, _, answer = await raw(running, request_head(path, length=200 * MIB), [b"[" * MIB])
        assert status == 401, (path, answer)
        # Chunked: no length to go by, still answered before the body.
        status, _, _ = await raw(running, request_head(path), [chunk(b"x" * MIB)])
        assert status == 401, path
    after = rss_mb()
    print(f"\n[figures] 8 bodies declaring 200 MB, no token: RSS {before:.0f} -> {after:.0f} MB")
    assert after - before < 100  # nothing like 200 MB was taken in
    assert len(running.engine.history.list_runs(graph="digest")) == 0
    await still_serves(running, http)


# -- body size ----------------------------------------------------------------------


async def test_a_body_past_the_limit_with_a_token_is_413(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    auth = token(running, "execute_graph:digest", "manage_agent_lifecycle:*")
    # A Content-Length past the limit: 413 at once, before the body.
    status, _, answer = await raw(
        running, request_head(HOOK, length=LIMIT + 1, auth=auth), [b'{"text": "']
    )
    assert status == 413
    detail = json.loads(answer)["detail"]
    assert detail["kind"] == "body_too_large"
    assert detail["limit"] == LIMIT and detail["setting"] == "http.max_body_bytes"
    assert "http.max_body_bytes" in detail["message"]
    # Chunked, never finished: counted as it arrives, 413 once past the limit.
    for path in (HOOK, "/graphs", "/graphs/digest/runs"):
        parts = [chunk(b" " * MIB) for _ in range(LIMIT // MIB + 1)]
        status, _, answer = await raw(running, request_head(path, auth=auth), parts)
        assert status == 413, (path, answer)
        assert json.loads(answer)["detail"]["kind"] == "body_too_large"
    # The same through a client: one byte past the limit.
    r = await http.post(HOOK, content=b" " * (LIMIT + 1), headers=auth)
    assert r.status_code == 413
    # The publish route has room for a module (http.max_publish_body_bytes).
    status, _, answer = await raw(
        running,
        request_head(
            "/transforms", length=65 * MIB, auth=token(running, "manage_agent_lifecycle:transforms")
        ),
    )
    assert status == 413
    assert json.loads(answer)["detail"]["setting"] == "http.max_publish_body_bytes"
    assert len(running.engine.history.list_runs(graph="digest")) == 0
    await still_serves(running, http)


# -- deep JSON ----------------------------------------------------------------------


async def test_deeply_nested_json_is_422_naming_the_limit(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    auth = token(running, "execute_graph:digest")
    for depth in (65, 5_000, 500_000):
        deep = b"[" * depth + b"]" * depth
        r = await http.post(HOOK, content=deep, headers=auth)
        assert r.status_code == 422, (depth, r.text)
        detail = r.json()["detail"]
        assert detail["kind"] == "json_too_deep" and detail["limit"] == 64
        assert "http.max_json_depth" in detail["message"]
        no_exception_names(r.json())
        wrapped = b'{"input": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
        r = await http.post("/graphs/digest/runs", content=wrapped, headers=auth)
        assert r.status_code == 422 and r.json()["detail"]["kind"] == "json_too_deep"
    # 64 levels are fine (the input schema then says what is wrong with it).
    r = await http.post(HOOK, content=b"[" * 64 + b"]" * 64, headers=auth)
    assert r.status_code == 422 and r.json()["detail"]["kind"] == "schema_violation"
    owner = token(running, "manage_ionwall:*")
    r = await http.post("/ionwall/consents/c1/approve", content=b"[" * 9000, headers=owner)
    assert r.status_code == 422 and r.json()["detail"]["kind"] == "json_too_deep"
    assert len(running.engine.history.list_runs(graph="digest")) == 0
    await still_serves(running, http)


async def test_a_large_json_body_is_parsed_off_the_loop(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    """Just under the limit, the most JSON a caller may send: /healthz answers
    while it is parsed and checked."""
    before = rss_mb()
    pad = [[i] for i in range(LIMIT // 12)]  # many small values: the slowest to parse
    body = json.dumps({"text": "x", "pad": pad}, separators=(",", ":")).encode()
    assert len(body) <= LIMIT
    async with Probe(http) as probe:
        r = await http.post(HOOK, content=body, headers=token(running))
        await asyncio.sleep(0.05)
    assert r.status_code == 200, r.text
    assert r.json()["output"] == {"text": "x"}
    probe.report(f"{len(body) / MIB:.1f} MiB JSON body to a webhook", before)
    await still_serves(running, http)


# -- every read route needs a token ------------------------------------------------


async def test_every_route_but_healthz_needs_a_token(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    spec = (await http.get("/openapi.json", headers=token(running, "read_host:graphs"))).json()
    called = []
    for path, operations in spec["paths"].items():
        for method in operations:
            url = path.replace("{name}", "digest").replace("{run_id}", "r1")
            url = url.replace("{consent_id}", "c1").replace("{grant_id}", "g1")
            r = await http.request(method.upper(), url, json={})
            called.append(f"{method.upper()} {path}")
            if path == "/healthz":
                assert r.status_code == 200
                continue
            assert r.status_code == 401, (method, path, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            # A token of another area is not enough.
            other = await http.request(
                method.upper(), url, json={}, headers=token(running, "emit_log:info")
            )
            assert other.status_code in (401, 403), (method, path, other.text)
    for route in ("GET /triggers", "GET /transforms", "GET /graphs", "GET /metrics",
                  "GET /runs", "GET /runs/{run_id}", "GET /graphs/{name}/versions",
                  "GET /ionwall/audit", f"POST {HOOK}"):  # fmt: skip
        assert route in called, route
    # The scopes of each area open it.
    for path, scope in (
        ("/triggers", "read_host:triggers"),
        ("/transforms", "read_host:transforms"),
        ("/graphs", "read_host:graphs"),
        ("/graphs/digest/versions", "read_host:graphs"),
        ("/metrics", "read_host:metrics"),
        ("/runs?graph=digest", "execute_graph:digest"),
    ):
        assert (await http.get(path, headers=token(running, scope))).status_code == 200, path
    assert (await http.get("/metrics", headers=token(running, "read_host:*"))).status_code == 200
    assert (await http.get("/docs")).status_code == 200  # the page; the data needs a token
    await still_serves(running, http)


async def test_a_route_that_declares_no_access_rule_answers_no_one(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    read: list[bytes] = []

    async def forgotten(request: Any) -> dict[str, str]:
        read.append(await request.body())
        return {"secret": "x"}

    from fastapi import Request

    forgotten.__annotations__["request"] = Request
    running.app.add_api_route("/forgotten", forgotten, methods=["POST"])
    r = await http.post("/forgotten", json={"a": 1}, headers=token(running, "read_host:*"))
    assert r.status_code == 401 and r.json()["detail"]["reason"] == "undeclared_route"
    assert read == []
    await still_serves(running, http)


# -- the mode bug ---------------------------------------------------------------------


async def test_a_dry_run_over_http_runs_no_node(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    started = running.triggers.metrics.render()
    r = await http.post(
        "/graphs/digest/runs",
        json={"input": {"text": "dry"}, "mode": "dry_run_validate_only"},
        headers=token(running),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "dry_run_validate_only" and body["output"] is None
    assert [s["status"] for s in body["steps"]] == ["planned"] * 3
    assert body["steps"][0]["inputs"] == {"text": "dry"}
    history = running.engine.history
    for run in history.list_runs(graph="digest"):
        assert run.mode == "dry_run_validate_only"
        assert all(s.status != "success" for s in history.steps(run.run_id))
    assert running.triggers.metrics.render() == started  # no run, no step counted
    # A dry run checks the input like a real one.
    r = await http.post(
        "/graphs/digest/runs",
        json={"input": {}, "mode": "dry_run_validate_only"},
        headers=token(running),
    )
    assert r.status_code == 422 and r.json()["detail"]["field"] == "$.text"
    # step_through_debug needs a person at a terminal: refused, nothing runs.
    r = await http.post(
        "/graphs/digest/runs",
        json={"input": {"text": "x"}, "mode": "step_through_debug"},
        headers=token(running),
    )
    assert r.status_code == 422
    assert "ionflux graph run" in r.json()["detail"]["message"]
    r = await http.post(
        "/graphs/digest/runs", json={"input": {"text": "x"}, "mode": "fast"}, headers=token(running)
    )
    assert r.status_code == 422 and r.json()["detail"]["field"] == "mode"
    assert all(run.mode == "dry_run_validate_only" for run in history.list_runs(graph="digest"))
    await still_serves(running, http)


async def test_an_alias_bomb_manifest_is_refused_by_the_yaml_budget(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    manifest = ALIAS_BOMB.replace("name: bomb", "name: bomb\nabi: component")
    r = await http.post(
        "/transforms",
        json={"manifest": manifest, "module_base64": "AGFzbQEAAAA="},
        headers=token(running, "manage_agent_lifecycle:transforms"),
    )
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["kind"] == "manifest" and "max_alias_expansion" in detail["message"]
    no_exception_names(r.json())
    assert [t.name for t in running.host.registry.list()] == ["echo"]
    await still_serves(running, http)


async def test_reading_a_run_shows_masked_values_only(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    """The run history keeps the real input and outputs in the owner's data
    directory (to resume a run); a reader of the run over HTTP, who may be
    another caller with a token for the graph, sees the masked record only."""
    secret = "sk-live-0123456789"
    r = await http.post(HOOK, json={"text": "t", "api_key": secret}, headers=token(running))
    assert r.status_code == 200, r.text
    run_id = r.json()["execution_id"]
    shown = await http.get(f"/runs/{run_id}", headers=token(running))
    assert shown.status_code == 200
    assert secret not in shown.text
    body = shown.json()
    assert "***" in body["input_preview"]
    assert not {"input", "output", "overrides", "lease_owner"} & set(body)
    assert all(not {"outputs_json", "cache_key"} & set(step) for step in body["steps"])
    # The owner's own record still has it, to resume from.
    assert running.engine.history.get(run_id).input["api_key"] == secret
    await still_serves(running, http)
