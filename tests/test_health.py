"""The host's health registry (``Host.health``) and what ``/healthz`` and
``/metrics`` make of it, on a real serving host (uvicorn, nats-server)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import make_config
from ionflux._health import Health
from ionflux.http import RunningHost, start_host
from ionflux.triggers import NatsServer


def test_a_component_is_degraded_until_it_says_ok() -> None:
    health = Health()
    assert health.status() == {"status": "ok", "components": {}}
    health.degraded("disk", "no space left on device")
    health.degraded("nats", "not connected")
    assert health.status() == {
        "status": "degraded",
        "components": {"disk": "no space left on device", "nats": "not connected"},
    }
    assert not health.is_ok() and not health.is_ok("disk")
    health.ok("disk")
    assert health.status() == {"status": "degraded", "components": {"nats": "not connected"}}
    assert health.is_ok("disk")
    health.ok("nats")
    health.ok("never-degraded")  # a no-op
    assert health.status() == {"status": "ok", "components": {}}


def test_a_later_reason_replaces_the_earlier_one() -> None:
    health = Health()
    health.degraded("disk", "first")
    health.degraded("disk", "second")
    assert health.status()["components"] == {"disk": "second"}


def test_threads_share_one_registry() -> None:
    health = Health()
    barrier = threading.Barrier(8)

    def flip(n: int) -> None:
        barrier.wait()
        for i in range(500):
            health.degraded(f"c{n}", str(i))
            health.ok(f"c{n}")
        health.degraded(f"c{n}", "last")

    threads = [threading.Thread(target=flip, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert health.status()["components"] == {f"c{n}": "last" for n in range(8)}


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture
async def running(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[RunningHost]:
    config = make_config(tmp_path / "data")
    config = config.model_copy(
        update={
            "nats": config.nats.model_copy(
                update={"url": nats_server.url, "token": nats_server.credentials.token}
            ),
            "http": config.http.model_copy(update={"port": 0}),
        }
    )
    host = await start_host(config)
    yield host
    await host.aclose(5)


async def test_healthz_is_503_with_the_reasons_while_degraded(running: RunningHost) -> None:
    health = running.host.health
    grant = running.ionwall.issue_token(["read_host:metrics"])
    auth = {"Authorization": f"Bearer {grant.token}"}
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as http:
        r = await http.get("/healthz")
        assert r.status_code == 200
        assert r.json()["status"] == "ok" and r.json()["components"] == {}
        metrics = (await http.get("/metrics", headers=auth)).text
        assert "ionflux_healthy 1.0" in metrics

        health.degraded("disk", "audit log: no space left on device")
        r = await http.get("/healthz")
        assert r.status_code == 503
        assert r.json()["status"] == "degraded"
        assert r.json()["components"] == {"disk": "audit log: no space left on device"}
        metrics = (await http.get("/metrics", headers=auth)).text
        assert "ionflux_healthy 0.0" in metrics
        assert 'ionflux_degraded{component="disk"} 1.0' in metrics

        health.ok("disk")
        r = await http.get("/healthz")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        metrics = (await http.get("/metrics", headers=auth)).text
        assert "ionflux_healthy 1.0" in metrics
        assert 'ionflux_degraded{component="disk"}' not in metrics
