"""Shared fixtures: real modules built from transforms_src/, a real host on a temp data dir,
a real nats-server per test module, a real Kubo daemon (per session, or per test).

tests/security/serving.py keeps fixtures of its own (no conftest.py there); its
module-level ``nats_server`` takes precedence over this one where it is imported.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from ionflux.config import Config, load_config
from ionflux.host import Host
from ionflux.manifest import Manifest, ModuleRef
from ionflux.registry import PublishedTransform
from ionflux.testing.kubo import KuboDaemon, find_kubo
from ionflux.testing.postgres import PostgresServer, find_postgres_bin
from ionflux.triggers import NatsServer

if TYPE_CHECKING:
    from ionflux.http import RunningHost

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "transforms"
TESTING = BUILD / "testing"
MANIFESTS = REPO / "manifests"


@pytest.fixture(scope="session")
def built() -> Path:
    """The built modules; builds them once if `just build` has not."""
    if not (TESTING / "echo.wasm").exists():
        subprocess.run(["bash", str(REPO / "scripts" / "build_transforms.sh")], check=True)
    return BUILD


def on_nats(
    config: Config,
    server: NatsServer,
    *,
    http: dict[str, Any] | None = None,
    graph: dict[str, Any] | None = None,
) -> Config:
    """``config`` for a serving host on the test's nats-server (with its token),
    its HTTP API on a free port; ``http``/``graph``: more settings of those sections."""
    update: dict[str, Any] = {
        "nats": config.nats.model_copy(
            update={"url": server.url, "token": server.credentials.token}
        ),
        "http": config.http.model_copy(update={"port": 0, **(http or {})}),
    }
    if graph:
        update["graph"] = config.graph.model_copy(update=graph)
    return config.model_copy(update=update)


async def serve_digest(running: RunningHost, hook: str) -> None:
    """Publishes ``echo`` and deploys ``digest`` on a serving host: three echo
    nodes passing ``text`` along, a manual trigger and the webhook ``hook``, which
    needs a token for ``execute_graph:digest``."""
    from ionflux.http.testing import chain_graph, deploy, publish_wasm

    publish_wasm(running.host, "echo", TESTING / "echo.wasm")
    await deploy(
        running,
        chain_graph(
            "digest",
            triggers=[
                "{type: manual}",
                f"{{type: webhook, config: {{path: {hook}, method: POST, "
                "authentication_method: ionwall_jwt}}",
            ],
        ),
    )


def make_config(data_dir: Path, **limits: Any) -> Config:
    config = load_config(data_dir=data_dir)
    if limits:
        config = config.model_copy(update={"limits": config.limits.model_copy(update=limits)})
    return config


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path / "data")


@pytest.fixture
def host(config: Config, built: Path) -> Iterator[Host]:
    h = Host(config)
    for manifest in sorted(MANIFESTS.glob("*.yaml")):
        h.publish(manifest)
    yield h
    h.close()


GuestPublisher = Callable[..., PublishedTransform]


@pytest.fixture
def publish_guest(built: Path) -> GuestPublisher:
    """Publishes a built test guest under a manifest made on the spot."""
    from ionflux.store import cid_for_bytes

    def publish(
        host: Host,
        name: str,
        *,
        path: Path | None = None,
        scopes: list[str] | None = None,
        abi: str = "component",
        limits: dict[str, int] | None = None,
        config: dict[str, str] | None = None,
        version: str = "0.1.0",
    ) -> PublishedTransform:
        wasm = path or TESTING / f"{name}.wasm"
        data = wasm.read_bytes()
        manifest = Manifest.model_validate(
            {
                "name": name,
                "version": version,
                "abi": abi,
                "module": ModuleRef(cid=cid_for_bytes(data)),
                "scopes": scopes or [],
                "limits": limits or {},
                "config": config or {},
            }
        )
        return host.publish_bytes(manifest, data)

    return publish


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A real nats-server (JetStream on) shared by the tests of one module."""
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kubo_bin() -> Path:
    """The Kubo binary: ``$IONFLUX_KUBO_BIN``, else the cache ``just kubo`` builds
    into, else ``ipfs`` on PATH; without one the test is skipped saying how to get it."""
    binary = find_kubo()
    if binary is None:
        pytest.skip(
            "no Kubo binary: run `just kubo` (scripts/install_kubo.sh) or set IONFLUX_KUBO_BIN"
        )
    return binary


@pytest.fixture(scope="session")
def kubo(kubo_bin: Path) -> Iterator[KuboDaemon]:
    """The session's Kubo daemon (``ipfs daemon --offline`` on a temp repo)."""
    daemon = KuboDaemon(kubo_bin).start()
    yield daemon
    daemon.cleanup()


@pytest.fixture
def own_kubo(kubo_bin: Path) -> Iterator[KuboDaemon]:
    """A Kubo daemon of the test's own, for tests that stop it."""
    daemon = KuboDaemon(kubo_bin).start()
    try:
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL 15 server for the session (temp dir, loopback port, run as the
    unprivileged ``postgres`` user); skipped saying how to get it when not installed."""
    if find_postgres_bin() is None:
        pytest.skip("no PostgreSQL: run scripts/bootstrap.sh (apt-get install postgresql)")
    server = PostgresServer().start()
    yield server
    server.stop()


_pg_databases = iter(range(1, 1 << 30))


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL, dropped after the test."""
    name = f"t{next(_pg_databases)}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)
