"""Shared fixtures: real modules built from transforms_src/, a real host on a temp data dir."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ionflux.config import Config, load_config
from ionflux.host import Host
from ionflux.manifest import Manifest, ModuleRef
from ionflux.registry import PublishedTransform

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
