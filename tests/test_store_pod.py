"""The Pod over the embedded local backend: files, JSON, pins, paths, CAR, failures."""

from __future__ import annotations

import io
import os
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ionflux import (
    BackendUnavailable,
    CidMismatch,
    ConfigError,
    InvalidCid,
    NotFound,
    StoreError,
    TooLarge,
)
from ionflux.config import load_config
from ionflux.store import (
    CHUNK_SIZE,
    CachedBackend,
    Cid,
    KuboBackend,
    LocalBackend,
    PathTable,
    Pod,
    cid_for_bytes,
    open_pod,
    read_car,
    write_car,
)
from ionflux.testing.store import check_store
from multiformats import varint


@pytest.fixture
def pod(tmp_path: Path) -> Pod:
    return Pod(LocalBackend(tmp_path), PathTable(tmp_path / "paths.sqlite"))


def block_path(tmp_path: Path, cid: str) -> Path:
    return next((tmp_path / "blocks").glob(f"*/{cid}"))


def test_local_backend_passes_the_conformance_suite(tmp_path: Path) -> None:
    runs = iter(range(100))
    check_store(lambda: LocalBackend(tmp_path / str(next(runs))))


def test_put_get_bytes(pod: Pod) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 7)
    cid = pod.put_bytes(data)
    assert cid == cid_for_bytes(data)
    assert pod.has(cid)
    assert pod.get_bytes(cid) == data
    assert pod.get_bytes(Cid.parse(cid)) == data


def test_put_stream_equals_put_bytes(pod: Pod) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 1)
    assert pod.put_stream(io.BytesIO(data)) == pod.put_bytes(data)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=CHUNK_SIZE + 100))
def test_get_of_put_is_identity(pod: Pod, data: bytes) -> None:
    assert pod.get_bytes(pod.put_bytes(data)) == data


def test_json_round_trip_with_links(pod: Pod) -> None:
    module = pod.put_bytes(b"\0asm")
    plan = {"steps": [{"module": Cid.parse(module), "fuel": 10}], "name": "p"}
    cid = pod.put_json(plan)
    assert Cid.parse(cid).codec_name == "dag-json"
    assert pod.get_json(cid) == plan
    with pytest.raises(StoreError, match="not dag-json"):
        pod.get_json(module)


def test_missing_content(pod: Pod) -> None:
    absent = cid_for_bytes(b"never stored")
    assert not pod.has(absent)
    with pytest.raises(NotFound):
        pod.get_bytes(absent)
    with pytest.raises(NotFound):
        pod.pin(absent)


def test_invalid_cid_strings(pod: Pod) -> None:
    with pytest.raises(InvalidCid):
        pod.get_bytes("not-a-cid")
    with pytest.raises(InvalidCid):
        pod.has("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk")


def test_get_past_the_size_limit(tmp_path: Path) -> None:
    pod = Pod(LocalBackend(tmp_path), PathTable(tmp_path / "p.sqlite"), max_get_bytes=1000)
    small = pod.put_bytes(b"x" * 1000)
    big = pod.put_bytes(os.urandom(5 * CHUNK_SIZE))
    assert len(pod.get_bytes(small)) == 1000
    with pytest.raises(TooLarge, match="limit of 1000"):
        pod.get_bytes(pod.put_bytes(b"x" * 1001))
    with pytest.raises(TooLarge, match=big):
        pod.get_bytes(big)
    # A per-call limit overrides the pod's, both ways.
    assert len(pod.get_bytes(big, max_size=5 * CHUNK_SIZE)) == 5 * CHUNK_SIZE
    with pytest.raises(TooLarge):
        pod.get_bytes(small, max_size=999)


def test_size_limit_is_checked_before_reading_the_leaves(tmp_path: Path) -> None:
    pod = Pod(LocalBackend(tmp_path), PathTable(tmp_path / "p.sqlite"))
    big = pod.put_bytes(os.urandom(4 * CHUNK_SIZE))
    for leaf in (tmp_path / "blocks").glob("*/bafkrei*"):
        leaf.unlink()  # had get_bytes read any leaf, it would be NotFound, not TooLarge
    with pytest.raises(TooLarge):
        pod.get_bytes(big, max_size=CHUNK_SIZE)


def test_tampered_local_block_is_a_mismatch_naming_the_cid(pod: Pod, tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK_SIZE)
    root = pod.put_bytes(data)
    leaf_cid = cid_for_bytes(data[:CHUNK_SIZE])
    path = block_path(tmp_path, leaf_cid)
    path.write_bytes(b"evil" + path.read_bytes()[4:])
    with pytest.raises(CidMismatch) as info:
        pod.get_bytes(root)
    assert info.value.expected == leaf_cid
    assert leaf_cid in str(info.value)


def test_pins(pod: Pod) -> None:
    a, b = pod.put_bytes(b"a"), pod.put_bytes(b"b")
    pod.pin(a)
    pod.pin(b)
    assert pod.pins() == sorted([a, b])
    pod.unpin(a)
    assert pod.pins() == [b]
    with pytest.raises(NotFound):
        pod.unpin(a)


def test_path_table(pod: Pod, tmp_path: Path) -> None:
    r1, r2 = pod.put_json({"n": 1}), pod.put_json({"n": 2})
    pod.bind("reports/01.json", r1)
    pod.bind("/reports/02.json", r2)
    pod.bind("plans/main.json", r1)
    assert pod.resolve("reports/01.json") == r1
    assert pod.get_json(pod.resolve("reports/02.json")) == {"n": 2}
    assert pod.list("reports/") == {"reports/01.json": r1, "reports/02.json": r2}
    assert list(pod.list()) == ["plans/main.json", "reports/01.json", "reports/02.json"]
    pod.bind("reports/01.json", r2)  # rebinding replaces
    assert pod.resolve("reports/01.json") == r2
    pod.unbind("reports/01.json")
    with pytest.raises(NotFound):
        pod.resolve("reports/01.json")
    with pytest.raises(NotFound):
        pod.unbind("reports/01.json")
    pod.close()
    reopened = PathTable(tmp_path / "paths.sqlite")  # persisted
    assert reopened.list() == {"plans/main.json": r1, "reports/02.json": r2}
    reopened.close()


@pytest.mark.parametrize("bad", ["", "/", "a//b", "../x", "a/./b", "a\\b", "a\0b"])
def test_path_table_refuses_ambiguous_paths(pod: Pod, bad: str) -> None:
    with pytest.raises(StoreError):
        pod.bind(bad, cid_for_bytes(b""))


def test_car_round_trip(pod: Pod, tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK_SIZE)
    root = pod.put_bytes(data)
    plan = pod.put_json({"input": Cid.parse(root), "again": Cid.parse(root)})
    car = tmp_path / "plan.car"
    pod.export_car(plan, car)
    other = Pod(LocalBackend(tmp_path / "other"), PathTable(tmp_path / "other.sqlite"))
    assert other.import_car(car) == [plan]
    assert other.get_json(plan)["input"] == Cid.parse(root)
    assert other.get_bytes(root) == data
    roots, sections = read_car(io.BytesIO(car.read_bytes()))
    assert roots == [Cid.parse(plan)]
    assert len(list(sections)) == 1 + 1 + 3  # plan, file root, 3 leaves; shared link once


def test_car_with_a_wrong_block_is_refused_and_nothing_kept(tmp_path: Path) -> None:
    good = [(Cid.for_block(0x55, d), d) for d in (b"one", b"two", b"three")]
    bad = (Cid.for_block(0x55, b"four"), b"FOUR")
    buf = io.BytesIO()
    write_car(buf, [good[0][0]], [good[0], good[1], bad, good[2]])
    target = Pod(LocalBackend(tmp_path), PathTable(tmp_path / "p.sqlite"))
    with pytest.raises(CidMismatch, match=str(bad[0])):
        target.import_car(io.BytesIO(buf.getvalue()))
    assert not any(target.has(c) for c, _ in [*good, bad])
    assert not list((tmp_path / "blocks").glob("*/*"))


def test_truncated_car_is_refused(pod: Pod) -> None:
    buf = io.BytesIO()
    block = b"payload"
    write_car(buf, [], [(Cid.for_block(0x55, block), block)])
    with pytest.raises(StoreError, match="truncated"):
        pod.import_car(io.BytesIO(buf.getvalue()[:-3]))
    assert not pod.has(Cid.for_block(0x55, block))


def test_car_header_is_the_dag_cbor_of_the_spec() -> None:
    # {"roots": [CID], "version": 1}: keys by length, tag 42 over 0x00 + the binary CID.
    root = Cid.for_block(0x55, b"root")
    buf = io.BytesIO()
    write_car(buf, [root], [])
    header = b"\xa2eroots\x81\xd8\x2a\x58\x25\x00" + root.to_bytes() + b"gversion\x01"
    assert buf.getvalue() == bytes([len(header)]) + header
    assert read_car(io.BytesIO(buf.getvalue()))[0] == [root]


def _car_with_header(header: bytes) -> io.BytesIO:
    return io.BytesIO(varint.encode(len(header)) + header)


@pytest.mark.parametrize(
    "header",
    [
        b"\x81" * 100_000 + b"\x00",  # lists nested past the recursion limit
        b"\xa2gversion\x01eroots\x80",  # keys out of dag-cbor order
        b"\x9f\xff",  # an indefinite-length list
        b"\xa2eroots\x81\x01gversion\x01",  # a root that is not a CID
        b"\xa2eroots\x80gversion\x02",  # CARv2
        b"\xa2eroots\x81\xd8\x2a\x58\x25\x00\x01\x55\x1e\x20" + bytes(32) + b"gversion\x01",
        b"\x01",  # not a map
    ],
)
def test_a_hostile_car_header_is_a_store_error(header: bytes) -> None:
    with pytest.raises(StoreError):
        read_car(_car_with_header(header))


def test_no_half_written_block_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = LocalBackend(tmp_path)
    cid = Cid.for_block(0x55, b"x" * 100)

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(StoreError, match="cannot write block"):
        backend.put_block(cid, b"x" * 100)
    monkeypatch.undo()
    assert not backend.has(cid)
    assert not [p for p in (tmp_path / "blocks").rglob("*") if p.is_file()]


def test_a_full_disk_is_a_store_error_naming_the_block_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    # A real full disk: a 64 KiB tmpfs (needs root to mount; skipped otherwise).
    import shutil
    import subprocess

    target = tmp_path / "small"
    target.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount(8): a real full disk cannot be made")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        backend = LocalBackend(target)
        data = os.urandom(256 * 1024)
        cid = Cid.for_block(0x55, data)
        with pytest.raises(StoreError, match="No space left on device") as info:
            backend.put_block(cid, data)
        assert str(target / "blocks") in str(info.value)
        assert not backend.has(cid)
        assert not [p for p in (target / "blocks").rglob("*") if p.is_file()]
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_concurrent_puts_of_the_same_file(pod: Pod) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 3)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(pod.put_bytes(data))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {cid_for_bytes(data)}
    assert pod.get_bytes(results[0]) == data


def test_open_pod_from_config(tmp_path: Path) -> None:
    config = load_config(data_dir=tmp_path)
    with open_pod(config) as pod:
        cid = pod.put_bytes(b"configured")
        pod.bind("x", cid)
    with open_pod(config) as pod:
        assert pod.get_bytes(pod.resolve("x")) == b"configured"
        assert pod.max_get_bytes == config.store.max_get_bytes


def test_open_pod_refuses_unknown_backend(tmp_path: Path) -> None:
    class Store:
        backend = "s3"
        kubo_api = ""
        max_get_bytes = 1
        timeout_s = 1.0

    class Conf:
        data_dir = tmp_path
        store = Store()

    with pytest.raises(ConfigError):
        open_pod(Conf())


def test_unreachable_kubo_is_backend_unavailable(tmp_path: Path) -> None:
    # No daemon needed: nothing listens on a port we just bound and released.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    local = LocalBackend(tmp_path)
    kept = Cid.for_block(0x55, b"kept locally")
    local.put_block(kept, b"kept locally")
    backend = CachedBackend(KuboBackend(f"http://127.0.0.1:{port}", retries=2), local)
    with Pod(backend, PathTable(tmp_path / "p.sqlite")) as pod:
        assert pod.get_bytes(kept) == b"kept locally"
        # It retries with backoff, then gives up (a hang would trip the test's timeout;
        # how long the retries take is not asserted: that depends on the machine).
        with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port} is not reachable"):
            pod.put_bytes(b"new")
    # The streamed ``cat`` client (http.client, not httpx) goes through the same retries.
    with (
        KuboBackend(f"http://127.0.0.1:{port}", retries=1) as kubo,
        pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port} is not reachable"),
    ):
        kubo._open_raw("cat", {"arg": str(kept)})
