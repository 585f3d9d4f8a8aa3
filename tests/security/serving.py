"""What every security case shares: a real serving host, and the check that it
still serves a normal call after an attack.

Import the fixtures into a test module (pytest finds fixtures by name in the
module's namespace)::

    from serving import http, nats_server, running, still_serves, token  # noqa: F401

``still_serves`` runs the normal webhook call (three trivial nodes) and returns
its latency in seconds. It waits up to ``SERVE_WITHIN_S`` for the answer: a host
an attack froze (a template holding the GIL, a spinning start function, a
stalled event loop) does not answer at all, so the bound only has to be wide
enough that a loaded machine never trips it; the latency itself is a figure for
the bench and the notes, not an assertion.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import make_config, on_nats, serve_digest
from ionflux.http import RunningHost, start_host
from ionflux.triggers import NatsServer

HOOK = "/webhooks/invoke/digest"
SERVE_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture
async def running(
    tmp_path: Path, nats_server: NatsServer, built: Path
) -> AsyncIterator[RunningHost]:
    """A host with the transform ``echo`` and the graph ``digest`` (three echo
    nodes, a manual trigger and the webhook ``HOOK`` that needs a token)."""
    config = make_config(tmp_path / "data")
    config = on_nats(config, nats_server)
    host = await start_host(config)
    await serve_digest(host, HOOK)
    yield host
    await host.aclose(5)


@pytest.fixture
async def http(running: RunningHost) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
        yield client


def token(running: RunningHost, *scopes: str) -> dict[str, str]:
    grant = running.ionwall.issue_token(list(scopes or ["execute_graph:digest"]))
    return {"Authorization": f"Bearer {grant.token}"}


async def still_serves(running: RunningHost, http: httpx.AsyncClient) -> float:
    """Runs the normal call; fails unless it succeeds within ``SERVE_WITHIN_S``."""
    started = time.perf_counter()
    r = await asyncio.wait_for(
        http.post(HOOK, json={"text": "still here"}, headers=token(running)),
        SERVE_WITHIN_S,
    )
    assert r.status_code == 200, r.text
    assert r.json()["output"] == {"text": "still here"}
    return time.perf_counter() - started


def peak_rss_mb() -> float:
    """This process's peak resident set so far (the in-process host's)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
