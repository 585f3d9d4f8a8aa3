"""Two hosts that share only a real Kubo node: a module published on one runs on
the other by CID, and the CID is the one `ipfs add` prints."""

from __future__ import annotations

from pathlib import Path

import ionflux as e
import pytest
from conftest import MANIFESTS, TESTING
from ionflux.config import load_config
from ionflux.host import Host
from ionflux.testing.kubo import KuboDaemon

pytestmark = pytest.mark.kubo


def kubo_host(data_dir: Path, daemon: KuboDaemon) -> Host:
    return Host(load_config(data_dir=data_dir, store={"backend": "kubo", "kubo_api": daemon.api}))


def test_publish_on_one_host_run_on_another(
    tmp_path: Path,
    built: Path,
    kubo: KuboDaemon,
) -> None:
    first = kubo_host(tmp_path / "a", kubo)
    try:
        published = first.publish(MANIFESTS / "uppercase.yaml")
    finally:
        first.close()
    wasm = built / "uppercase.wasm"
    assert (
        kubo.ipfs("add", "--cid-version=1", "--raw-leaves", "-Q", "--only-hash", str(wasm))
        .decode()
        .strip()
        == published.cid
    )
    assert published.cid in kubo.ipfs("pin", "ls", "--type=recursive").decode()

    second = kubo_host(tmp_path / "b", kubo)
    try:
        with pytest.raises(e.UnknownTransform):
            second.registry.get("uppercase")  # nothing shared but the IPFS node
        out = second.invoke(published.cid, {"text": "from afar"})
        assert out.value == {"text": "FROM AFAR"}
        # Verified into the local cache: runs again with the daemon's copy gone.
        kubo.ipfs("pin", "rm", published.cid)
        kubo.ipfs("repo", "gc")
        with pytest.raises(RuntimeError):
            kubo.ipfs("block", "stat", "--offline", published.cid)
        second.close()
        second = kubo_host(tmp_path / "b", kubo)  # nothing in memory: the module comes from disk
        assert second.invoke(published.cid, {"text": "again"}).value == {"text": "AGAIN"}
    finally:
        second.close()


def test_unknown_cid_is_a_clear_error(tmp_path: Path, kubo: KuboDaemon) -> None:
    host = kubo_host(tmp_path, kubo)
    try:
        data = (TESTING / "echo.wasm").read_bytes() + b"\0"  # nobody has these bytes
        from ionflux.store import cid_for_bytes

        with pytest.raises(e.UnknownTransform, match="no module"):
            host.invoke(cid_for_bytes(data), {})
        with pytest.raises(e.UnknownTransform, match="no published transform"):
            host.invoke("not-a-cid-or-name", {})
    finally:
        host.close()
