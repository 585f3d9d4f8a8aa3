"""A guest fills the host's data disk; the host fails cleanly, says so on
``/healthz`` and serves again once space returns.

The data directory is a real small ``tmpfs`` (``mount`` needs root: skipped,
naming why, where it is refused). The attacker is a granted graph whose one
node (``pod-store``) writes whatever a caller sends into the pod, as fast as
the webhook takes it: nothing bounds the pod's size (see the threat model),
so the disk fills. Most of the disk is taken by a file first, so the guest
only has to fill the last few MB.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import MANIFESTS, make_config, on_nats, serve_digest
from ionflux.http import RunningHost, start_host
from ionflux.http.testing import consent_to, deploy
from ionflux.triggers import NatsServer
from serving import HOOK, http, nats_server, still_serves, token  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_full_disk import STORE_GRAPH, _assert_no_unstored_success, fill, mount_tmpfs, unmount

STORE_HOOK = "/webhooks/invoke/store"
DISK_MB = 64
LEFT_FOR_THE_GUEST = 6 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = mount_tmpfs(tmp_path / "disk", DISK_MB)
    yield disk
    unmount(disk)


@pytest.fixture
async def running(
    small_disk: Path,
    nats_server: NatsServer,  # noqa: F811
    built: Path,
) -> AsyncIterator[RunningHost]:
    """The harness's host (graph ``digest`` behind ``HOOK``) with its data
    directory on the small disk, and the attacker's graph ``store``."""
    config = make_config(small_disk / "data")
    config = on_nats(config, nats_server)
    host = await start_host(config)
    host.host.health.probe_interval_s = 0  # probe at every /healthz: no clock in the test
    await serve_digest(host, HOOK)
    host.host.publish(MANIFESTS / "pod-store.yaml")
    await deploy(host, STORE_GRAPH)
    consent_to(host.ionwall, host.engine, "store", ["write_pod_data:**"])
    yield host
    await host.aclose(5)


def _leave(disk: Path, room: int) -> Path:
    """Fills ``disk`` but for ``room`` bytes; returns the file to delete to free it."""
    filler = fill(disk)
    with filler.open("r+b") as f:
        f.truncate(max(0, filler.stat().st_size - room))
    return filler


async def test_a_guest_that_fills_the_data_disk(
    running: RunningHost,
    http: httpx.AsyncClient,  # noqa: F811
    small_disk: Path,
) -> None:
    auth = token(running)  # tokens are rows in the grant store: issued while there is room
    attacker = token(running, "execute_graph:store")
    filler = _leave(small_disk, LEFT_FOR_THE_GUEST)
    chunk = "x" * (512 * 1024)
    stored = refused = 0
    for i in range(64):  # 32 MB offered for 6 MB of room
        r = await http.post(
            STORE_HOOK,
            json={"path": f"loot/{i}.json", "data": f"{i}{chunk}"},
            headers=attacker,
        )
        body = r.json()
        ok = r.status_code == 200 and body.get("overall_status") == "success"
        if ok:
            stored += 1
            continue
        refused += 1
        assert r.status_code < 600 and "Traceback" not in r.text
        if refused >= 3:
            break
    assert refused >= 3, f"the disk never filled ({stored} stores of 512 KB)"
    health = await http.get("/healthz")
    assert health.status_code == 503, health.text
    assert health.json()["status"] == "degraded" and health.json()["components"], health.text
    # While full, the normal call does not succeed with an unstored run log:
    # it fails, or it succeeds for real (nothing of it needed the disk).
    r = await http.post(HOOK, json={"text": "while full"}, headers=auth)
    while_full = _assert_no_unstored_success(running, r)
    assert r.status_code != 500 or "internal" not in r.text, r.text

    filler.unlink()
    latency = await still_serves(running, http)
    assert (await http.get("/healthz")).json()["status"] == "ok"
    assert running.ionwall.audit_verify().ok
    print(
        f"\n[figures] disk attack: {stored} stores of 512 KB before the disk was full, "
        f"then {refused} refused; /healthz while full: {health.json()['components']}; "
        f"normal call while full: {r.status_code} {while_full.get('overall_status')}; "
        f"after freeing: {latency * 1000:.0f} ms"
    )
