"""The streamed paths to Kubo: a file put through one ``add``, read through one ``cat``.

Both are checked against what IONPOD computes itself: ``add`` must arrive at
our root, and every leaf read from ``cat`` is hashed against its CID. A daemon
that serves wrong bytes is simulated by a small forwarding proxy in front of
the real daemon that rewrites or cuts ``cat`` answers (a stand-in: the real
daemon serves the right bytes; the proxy plays a broken or hostile one).
"""

from __future__ import annotations

import http.client
import io
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from ionflux import BackendUnavailable, CidMismatch, StoreError, TooLarge
from ionflux.store import (
    CHUNK_SIZE,
    MAX_LINKS,
    CachedBackend,
    Cid,
    KuboBackend,
    LocalBackend,
    PathTable,
    Pod,
    _kubo,
    cid_for_bytes,
    iter_file_blocks,
)
from ionflux.store._unixfs import iter_chunks
from ionflux.testing.kubo import KuboDaemon

pytestmark = pytest.mark.kubo

# A transform of a ``cat`` answer: gets the bytes so far sent and the next piece,
# returns what to send instead, or None to cut the connection there.
CatRewrite = Callable[[int, bytes], bytes | None]


class Proxy:
    """Forwards ``/api/v0/...`` to a real daemon; ``rewrite`` tampers with ``cat`` bodies."""

    def __init__(self, upstream: str, rewrite: CatRewrite | None = None) -> None:
        self.rewrite = rewrite
        self.commands: list[str] = []
        up = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the end of an answer is the connection closing

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self._body()
                command = self.path.split("?")[0].removeprefix("/api/v0/")
                proxy.commands.append(command)
                conn = http.client.HTTPConnection(up.hostname or "127.0.0.1", up.port, timeout=30)
                try:
                    self._forward(conn, command, body)
                finally:
                    conn.close()

            def _forward(self, conn: http.client.HTTPConnection, command: str, body: bytes) -> None:
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("transfer-encoding", "content-length", "connection")
                }
                conn.request("POST", self.path, body=body, headers=headers)
                answer = conn.getresponse()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.end_headers()
                sent = 0
                while piece := answer.read(64 * 1024):
                    if command == "cat" and proxy.rewrite is not None:
                        out = proxy.rewrite(sent, piece)
                        if out is None:
                            break
                        piece = out
                    self.wfile.write(piece)
                    sent += len(piece)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(parts)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.api = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(kubo: KuboDaemon) -> Iterator[Proxy]:
    p = Proxy(kubo.api)
    try:
        yield p
    finally:
        p.close()


def pod_over(api: str, cache_dir: Path | None, paths: Path) -> Pod:
    remote = KuboBackend(api, timeout_s=10, retries=1, backoff_s=0.01)
    backend = remote if cache_dir is None else CachedBackend(remote, LocalBackend(cache_dir))
    return Pod(backend, PathTable(paths / "paths.sqlite"))


def add(daemon: KuboDaemon, data: bytes) -> str:
    with KuboBackend(daemon.api) as api:
        cid = api.add(data)
    assert cid == cid_for_bytes(data)
    return cid


def cached_blocks(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (data_dir / "blocks").rglob("baf*")}


def flip_at(position: int) -> CatRewrite:
    def rewrite(sent: int, piece: bytes) -> bytes:
        if sent <= position < sent + len(piece):
            i = position - sent
            return piece[:i] + bytes([piece[i] ^ 0xFF]) + piece[i + 1 :]
        return piece

    return rewrite


def cut_at(position: int) -> CatRewrite:
    def rewrite(sent: int, piece: bytes) -> bytes | None:
        if sent >= position:
            return None
        return piece[: position - sent]

    return rewrite


# -- put: one add, checked against our own import -------------------------------------


SIZES = {
    "empty": 0,
    "one chunk": CHUNK_SIZE,
    "two chunks": CHUNK_SIZE + 1,
    "two levels": MAX_LINKS * CHUNK_SIZE + 1,
}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_put_through_add_gives_our_cid_and_fills_the_cache(
    kubo: KuboDaemon, proxy: Proxy, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    with pod_over(proxy.api, tmp_path / "cache", tmp_path) as pod:
        cid = pod.put_bytes(data)
    assert cid == cid_for_bytes(data)
    assert ("add" in proxy.commands) == (size > CHUNK_SIZE)  # one block: block/put
    assert kubo.ipfs("cat", cid) == data
    # Every block of our own import is in the cache, verified.
    ours = {str(c): b for c, b in iter_file_blocks(iter_chunks(data))}
    assert cached_blocks(tmp_path / "cache") == ours


def test_put_stream_through_add(kubo: KuboDaemon, tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 5)
    with pod_over(kubo.api, None, tmp_path) as pod:
        assert pod.put_stream(io.BytesIO(data)) == cid_for_bytes(data)


class Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        return self._inner.readinto(b)


def test_add_that_builds_another_dag_is_never_trusted(
    kubo: KuboDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stand-in for a daemon that imports with other settings: ask it for another chunker.
    monkeypatch.setitem(_kubo._ADD_PARAMS, "chunker", "size-100000")
    data = os.urandom(3 * CHUNK_SIZE)
    with pod_over(kubo.api, tmp_path / "cache", tmp_path) as pod:
        # Replayable content: our own blocks go in one by one instead.
        assert pod.put_bytes(data) == cid_for_bytes(data)
        assert pod.put_stream(io.BytesIO(data)) == cid_for_bytes(data)
        with pytest.raises(StoreError, match="refusing Kubo's"):
            pod.put_stream(Unseekable(data))  # type: ignore[arg-type]
    assert kubo.ipfs("cat", cid_for_bytes(data)) == data


# -- get: one cat, every leaf verified ---------------------------------------------


def test_get_streams_one_cat(kubo: KuboDaemon, proxy: Proxy, tmp_path: Path) -> None:
    data = os.urandom(MAX_LINKS * CHUNK_SIZE + 3)  # two levels of nodes
    cid = add(kubo, data)
    assert cid == cid_for_bytes(data)
    with pod_over(proxy.api, tmp_path / "cache", tmp_path) as pod:
        assert pod.get_bytes(cid) == data
    assert proxy.commands.count("cat") == 1
    assert proxy.commands.count("block/get") == 3  # the root and its two nodes
    ours = {str(c): b for c, b in iter_file_blocks(iter_chunks(data))}
    assert cached_blocks(tmp_path / "cache") == ours


def test_get_with_part_of_the_file_cached(kubo: KuboDaemon, proxy: Proxy, tmp_path: Path) -> None:
    data = os.urandom(10 * CHUNK_SIZE + 9)
    blocks = list(iter_file_blocks(iter_chunks(data)))
    cid = add(kubo, data)
    cache = LocalBackend(tmp_path / "cache")
    for i in (0, 3, 4, 9):  # leaves the stream must skip over
        cache.put_block(*blocks[i])
    with pod_over(proxy.api, tmp_path / "cache", tmp_path) as pod:
        assert pod.get_bytes(cid) == data
    assert proxy.commands.count("cat") == 3  # from leaf 1, from 5, and the last leaf
    assert len(cached_blocks(tmp_path / "cache")) == len(blocks)


def test_tampered_stream_is_a_mismatch_naming_the_leaf(kubo: KuboDaemon, tmp_path: Path) -> None:
    data = os.urandom(6 * CHUNK_SIZE)
    cid = add(kubo, data)
    bad_leaf = cid_for_bytes(data[2 * CHUNK_SIZE : 3 * CHUNK_SIZE])
    proxy = Proxy(kubo.api, flip_at(2 * CHUNK_SIZE + 1000))
    try:
        with pod_over(proxy.api, tmp_path / "cache", tmp_path) as pod:
            chunks = pod.iter_bytes(cid)
            assert next(chunks) == data[:CHUNK_SIZE]
            assert next(chunks) == data[CHUNK_SIZE : 2 * CHUNK_SIZE]
            with pytest.raises(CidMismatch, match=bad_leaf):
                next(chunks)
        with pod_over(proxy.api, None, tmp_path) as pod:
            with pytest.raises(CidMismatch, match=bad_leaf):
                pod.get_bytes(cid)
    finally:
        proxy.close()
    cached = cached_blocks(tmp_path / "cache")
    assert bad_leaf not in cached  # nothing unverified is kept
    for name, block in cached.items():
        Cid.parse(name).verify(block)


def test_cut_stream_falls_back_to_verified_blocks(kubo: KuboDaemon, tmp_path: Path) -> None:
    data = os.urandom(6 * CHUNK_SIZE + 1)
    cid = add(kubo, data)
    proxy = Proxy(kubo.api, cut_at(3 * CHUNK_SIZE + 17))
    try:
        with pod_over(proxy.api, None, tmp_path) as pod:
            assert pod.get_bytes(cid) == data  # the rest came block by block, each verified
        assert proxy.commands.count("cat") == 1
        assert proxy.commands.count("block/get") == 1 + 4
    finally:
        proxy.close()


def test_stream_cut_by_a_dying_daemon_is_backend_unavailable(
    own_kubo: KuboDaemon, tmp_path: Path
) -> None:
    data = os.urandom(8 * CHUNK_SIZE)
    cid = add(own_kubo, data)

    def die(sent: int, piece: bytes) -> bytes | None:
        if sent >= 2 * CHUNK_SIZE:
            own_kubo.proc.kill()  # type: ignore[union-attr]
            return None
        return piece

    proxy = Proxy(own_kubo.api, die)
    try:
        with pod_over(proxy.api, tmp_path / "cache", tmp_path) as pod:
            with pytest.raises(BackendUnavailable):
                pod.get_bytes(cid)
    finally:
        proxy.close()
    for name, block in cached_blocks(tmp_path / "cache").items():
        Cid.parse(name).verify(block)


def test_size_limit_is_checked_before_any_content_is_streamed(
    kubo: KuboDaemon, proxy: Proxy, tmp_path: Path
) -> None:
    data = os.urandom(4 * CHUNK_SIZE)
    cid = add(kubo, data)
    with pod_over(proxy.api, None, tmp_path) as pod:
        with pytest.raises(TooLarge):
            pod.get_bytes(cid, max_size=len(data) - 1)
        assert "cat" not in proxy.commands
        assert pod.get_bytes(cid, max_size=len(data)) == data


def test_files_with_dag_pb_leaves_are_read_block_by_block(
    kubo: KuboDaemon, proxy: Proxy, tmp_path: Path
) -> None:
    # ``ipfs add`` without --raw-leaves (CIDv0): no raw leaf to stream.
    data = os.urandom(3 * CHUNK_SIZE)
    with (tmp_path / "f").open("wb") as f:
        f.write(data)
    cid = kubo.ipfs("add", "-Q", "--pin=false", str(tmp_path / "f")).decode().strip()
    assert cid.startswith("Qm")
    with pod_over(proxy.api, None, tmp_path) as pod:
        assert pod.get_bytes(cid) == data
    assert "cat" not in proxy.commands


def test_big_file_streams_with_bounded_buffers(kubo: KuboDaemon, tmp_path: Path) -> None:
    data = os.urandom(40 * CHUNK_SIZE)
    cid = add(kubo, data)
    with pod_over(kubo.api, None, tmp_path) as pod:
        sizes = [len(chunk) for chunk in pod.iter_bytes(cid)]
    assert sizes == [CHUNK_SIZE] * 40  # leaf by leaf, never the whole file at once
