"""The host's health registry (``Host.health``) and what ``/healthz`` and
``/metrics`` make of it, on a real serving host (uvicorn, nats-server)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from conftest import make_config, on_nats
from ionflux._health import Health, disk_probe
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


def test_a_probe_clears_a_component_no_one_writes_to_any_more() -> None:
    # A host answering 503 may get no traffic, so no write shows the recovery:
    # status() asks the probe (at most every probe_interval_s).
    health = Health(probe_interval_s=0)
    works = threading.Event()
    health.degraded("audit", "no space left on device", probe=works.is_set)
    assert health.status()["status"] == "degraded"
    works.set()
    assert health.status() == {"status": "ok", "components": {}}


def test_a_probe_is_not_run_more_often_than_its_interval() -> None:
    health = Health(probe_interval_s=3600)
    calls: list[int] = []

    def probe() -> bool:
        calls.append(1)
        return True

    health.degraded("pod", "full", probe=probe)
    assert health.status()["status"] == "degraded"  # not due yet
    assert calls == []


def test_disk_probe_writes_and_removes_its_file(tmp_path: Path) -> None:
    assert disk_probe(tmp_path)() is True
    assert list(tmp_path.iterdir()) == []
    assert disk_probe(tmp_path / "missing")() is False


@pytest.fixture
async def running(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[RunningHost]:
    config = make_config(tmp_path / "data")
    config = on_nats(config, nats_server)
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
