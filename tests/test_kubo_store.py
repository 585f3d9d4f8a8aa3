"""IONPOD against a real Kubo daemon: same CIDs, same bytes, and failures that say what broke."""

from __future__ import annotations

import io
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ionflux import BackendUnavailable, NotFound
from ionflux.config import load_config
from ionflux.store import (
    CHUNK_SIZE,
    MAX_LINKS,
    CachedBackend,
    Cid,
    KuboBackend,
    LocalBackend,
    PathTable,
    Pod,
    cid_for_bytes,
    open_pod,
)
from ionflux.testing.kubo import KuboDaemon
from ionflux.testing.store import check_store

pytestmark = pytest.mark.kubo


@pytest.fixture
def api(kubo: KuboDaemon) -> Iterator[KuboBackend]:
    with KuboBackend(kubo.api) as backend:
        yield backend


def kubo_pod(daemon: KuboDaemon, data_dir: Path) -> Pod:
    backend = CachedBackend(KuboBackend(daemon.api, timeout_s=10), LocalBackend(data_dir))
    return Pod(backend, PathTable(data_dir / "paths.sqlite"))


def ipfs_add(daemon: KuboDaemon, data: bytes) -> str:
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        out = daemon.ipfs("add", "--cid-version=1", "--raw-leaves", "-Q", "--pin=false", f.name)
    return out.decode().strip()


SIZES = {
    "empty": 0,
    "small": 11,
    "exactly one chunk": CHUNK_SIZE,
    "one chunk plus one": CHUNK_SIZE + 1,
    "multi-chunk": 5 * CHUNK_SIZE + 77,
}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_cid_equals_ipfs_add(kubo: KuboDaemon, size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert cid_for_bytes(data) == ipfs_add(kubo, data)


def test_cid_equals_ipfs_add_with_two_levels(kubo: KuboDaemon) -> None:
    # The smallest file the default chunker and 174-link nodes need two levels for.
    data = random.Random(2).randbytes(MAX_LINKS * CHUNK_SIZE + 1)
    assert cid_for_bytes(data) == ipfs_add(kubo, data)


def test_kubo_backend_passes_the_conformance_suite(kubo: KuboDaemon) -> None:
    check_store(lambda: KuboBackend(kubo.api))


def test_cached_backend_passes_the_conformance_suite(kubo: KuboDaemon, tmp_path: Path) -> None:
    runs = iter(range(100))
    check_store(
        lambda: CachedBackend(KuboBackend(kubo.api), LocalBackend(tmp_path / str(next(runs))))
    )


def test_kubo_reads_what_the_pod_wrote(kubo: KuboDaemon, api: KuboBackend, tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 5)
    with kubo_pod(kubo, tmp_path) as pod:
        cid = pod.put_bytes(data)
    assert kubo.ipfs("cat", cid) == data
    assert b"".join(api.cat(cid)) == data


def test_pod_reads_what_kubo_added(kubo: KuboDaemon, tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 9)
    cid = ipfs_add(kubo, data)
    with kubo_pod(kubo, tmp_path) as pod:  # empty cache: every block comes from Kubo
        assert pod.get_bytes(cid) == data
        assert pod.has(cid)


def test_json_cid_equals_ipfs_dag_put(kubo: KuboDaemon, api: KuboBackend, tmp_path: Path) -> None:
    value = {
        "z": [1, 2.5, None, "\u00e9\n"],
        "a": {"b": True},
        "link": Cid.parse(cid_for_bytes(b"")),
    }
    with kubo_pod(kubo, tmp_path) as pod:
        cid = pod.put_json(value)
        assert pod.get_json(cid) == value
    stored = kubo.ipfs("dag", "get", cid)
    assert api.dag_put_json(stored) == cid


def test_pins_are_kubos(kubo: KuboDaemon, tmp_path: Path) -> None:
    with kubo_pod(kubo, tmp_path) as pod:
        cid = pod.put_bytes(os.urandom(2 * CHUNK_SIZE))
        pod.pin(cid)
        assert cid in pod.pins()
        assert cid in kubo.ipfs("pin", "ls", "--type=recursive", "-q").decode().split()
        pod.unpin(cid)
        assert cid not in pod.pins()
        with pytest.raises(NotFound):
            pod.unpin(cid)


def test_car_export_equals_kubos_and_imports_back(kubo: KuboDaemon, tmp_path: Path) -> None:
    data = os.urandom(4 * CHUNK_SIZE)
    with kubo_pod(kubo, tmp_path / "a") as pod:
        cid = pod.put_bytes(data)
        ours = io.BytesIO()
        pod.export_car(cid, ours)
    assert ours.getvalue() == kubo.ipfs("dag", "export", cid)
    with Pod(LocalBackend(tmp_path / "b"), PathTable(tmp_path / "b.sqlite")) as local:
        assert local.import_car(io.BytesIO(ours.getvalue())) == [cid]
        assert local.get_bytes(cid) == data


def test_open_pod_with_the_kubo_backend(kubo: KuboDaemon, tmp_path: Path) -> None:
    config = load_config(data_dir=tmp_path)
    config = config.model_copy(
        update={"store": config.store.model_copy(update={"backend": "kubo", "kubo_api": kubo.api})}
    )
    with open_pod(config) as pod:
        cid = pod.put_bytes(b"via config")
    assert kubo.ipfs("cat", cid) == b"via config"


# -- failures ----------------------------------------------------------------------


def test_kubo_not_running_is_backend_unavailable(own_kubo: KuboDaemon, tmp_path: Path) -> None:
    with kubo_pod(own_kubo, tmp_path) as pod:
        cached = pod.put_bytes(b"cached before the daemon stopped")
        own_kubo.stop()
        assert pod.get_bytes(cached) == b"cached before the daemon stopped"  # local reads go on
        with pytest.raises(BackendUnavailable, match="not reachable"):
            pod.put_bytes(b"new content")
        with pytest.raises(BackendUnavailable):
            pod.get_bytes(cid_for_bytes(b"never cached"))
        with pytest.raises(BackendUnavailable):
            pod.pins()


def test_kubo_stopped_mid_transfer(own_kubo: KuboDaemon, tmp_path: Path) -> None:
    data = os.urandom(24 * CHUNK_SIZE)  # well past what the pod fetches ahead
    cid = ipfs_add(own_kubo, data)
    with kubo_pod(own_kubo, tmp_path) as pod:
        chunks = pod.iter_bytes(cid)
        assert next(chunks) == data[:CHUNK_SIZE]
        own_kubo.stop()
        with pytest.raises(BackendUnavailable):
            list(chunks)
        # Whatever reached the cache is whole and verified.
        cached = [p for p in (tmp_path / "blocks").rglob("baf*")]
        assert cached
        for path in cached:
            Cid.parse(path.name).verify(path.read_bytes())


def test_kubo_killed_mid_response(own_kubo: KuboDaemon) -> None:
    data = os.urandom(32 * 1024 * 1024)
    cid = ipfs_add(own_kubo, data)
    with KuboBackend(own_kubo.api) as api:
        stream = api.cat(cid, chunk_size=CHUNK_SIZE)
        assert next(stream) == data[:CHUNK_SIZE]
        assert own_kubo.proc is not None
        own_kubo.proc.kill()
        with pytest.raises(BackendUnavailable, match="lost the connection"):
            for _ in stream:
                pass


def test_tampered_cache_block_is_dropped_and_refetched(kubo: KuboDaemon, tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 1)
    with kubo_pod(kubo, tmp_path) as pod:
        cid = pod.put_bytes(data)
        leaf = cid_for_bytes(data[CHUNK_SIZE : 2 * CHUNK_SIZE])
        path = next((tmp_path / "blocks").glob(f"*/{leaf}"))
        path.write_bytes(b"tampered" + path.read_bytes()[8:])
        assert pod.get_bytes(cid) == data
        Cid.parse(leaf).verify(path.read_bytes())  # the cache holds the right bytes again


def test_tampered_block_without_a_good_copy_is_dropped(kubo: KuboDaemon, tmp_path: Path) -> None:
    # The cache refetches from Kubo; here Kubo's copy is gone too, so nothing good exists.
    data = os.urandom(CHUNK_SIZE + 1)
    with kubo_pod(kubo, tmp_path) as pod:
        cid = pod.put_bytes(data)
        leaf = cid_for_bytes(data[:CHUNK_SIZE])
        kubo.ipfs("block", "rm", leaf)
        path = next((tmp_path / "blocks").glob(f"*/{leaf}"))
        path.write_bytes(b"tampered" + path.read_bytes()[8:])
        with pytest.raises(NotFound):
            pod.get_bytes(cid)
        assert not path.exists()  # the bad copy was dropped, not kept
