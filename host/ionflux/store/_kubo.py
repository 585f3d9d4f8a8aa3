"""Blocks in a Kubo daemon, over its RPC API (HTTP POST ``/api/v0/...``).

This module is the only place IONPOD touches the network. Every transport
error is translated here: connection failures become :class:`BackendUnavailable`,
a missing block or pin :class:`NotFound`, anything else Kubo refuses
:class:`StoreError` with Kubo's own message. Connection errors (and only
those: a request that reached Kubo may have had an effect) are retried with
exponential backoff. Bodies are streamed and capped, so a misbehaving daemon
cannot make us buffer unbounded data.

Whole files take one request each way. A put streams the content through
``add`` and accepts only the root IONPOD computed itself (:meth:`KuboBackend.put_file`);
a get reads the raw leaves from one ``cat``, each hashed against its CID
(:class:`CatLeaves`). The client is httpx, except for that ``cat``: stdlib
``http.client`` speaking HTTP/1.0, whose unchunked answer reads several times
faster than httpx can parse Kubo's small chunks.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import IO, Any, Final, NoReturn, TypeVar

import httpx

from .._errors import BackendUnavailable, NotFound, StoreError
from ._cid import RAW, Cid
from ._local import LocalBackend
from ._unixfs import CHUNK_SIZE, MAX_LINKS, Block

log = logging.getLogger("ionflux.store")

_T = TypeVar("_T")

# Kubo refuses blocks above 2 MiB (bitswap's limit); allow that and no more.
MAX_BLOCK: Final = 2 * 1024 * 1024
_MAX_JSON: Final = 16 * 1024 * 1024
_NOT_FOUND_HINTS: Final = ("not found", "not pinned", "no link named")
# What a daemon that is shutting down answers instead of closing the socket.
_STOPPING_HINTS: Final = ("repo not open", "context canceled", "node is closed")
# ``add`` with every import setting spelled out, so the daemon's own defaults
# (Import.* in its config) cannot change the DAG it builds.
_ADD_PARAMS: Final = {
    "cid-version": "1",
    "raw-leaves": "true",
    "chunker": f"size-{CHUNK_SIZE}",
    "hash": "sha2-256",
    "trickle": "false",
    "max-file-links": str(MAX_LINKS),
    "inline": "false",
    "pin": "false",
    "quieter": "true",
    "progress": "false",
}


class ImportMismatch(StoreError):
    """Kubo's ``add`` built another root than IONPOD computed for the same bytes."""


class KuboBackend:
    """A :class:`BlockBackend` over Kubo's RPC API at ``api`` (e.g. ``http://127.0.0.1:5001``)."""

    def __init__(
        self,
        api: str = "http://127.0.0.1:5001",
        *,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.05,
    ) -> None:
        self.api = api.rstrip("/")
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._client = httpx.Client(
            base_url=self.api + "/api/v0/",
            timeout=httpx.Timeout(timeout_s),
            # Kubo answers 403 to requests that carry a browser-ish Origin; send none.
            headers={"User-Agent": "ionflux"},
        )

    def __enter__(self) -> KuboBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the seam ------------------------------------------------------------

    @contextlib.contextmanager
    def _post(
        self,
        command: str,
        params: dict[str, Any],
        files: Any = None,
        *,
        content: Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Iterator[httpx.Response]:
        """POST a command; yield the streaming response of a 200, translate anything else.

        A ``content`` iterator is sent as the body; it is consumed only once the
        connection is up, so retrying a refused connection does not lose it."""

        def send() -> httpx.Response:
            # A new request each attempt; httpx rewinds ``files`` when it renders them.
            request = self._client.build_request(
                "POST", command, params=params, files=files, content=content, headers=headers
            )
            return self._client.send(request, stream=True)

        try:
            response = self._connect(send, (httpx.ConnectError, httpx.ConnectTimeout))
            try:
                if response.status_code != 200:
                    self._raise_for(command, params, response)
                yield response
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise BackendUnavailable(f"Kubo at {self.api} timed out on {command}") from exc
        except httpx.TransportError as exc:
            raise BackendUnavailable(
                f"lost the connection to Kubo at {self.api} during {command}: {exc}"
            ) from exc

    def _connect(self, send: Callable[[], _T], refused: tuple[type[Exception], ...]) -> _T:
        """``send()``, tried again while the connection is ``refused`` (after 50 ms,
        100 ms, 200 ms by default), then :class:`BackendUnavailable`.

        Only a connection that was never made is retried: a request that reached
        Kubo may have had an effect. The one retry policy of both clients
        (httpx in :meth:`_post`, ``http.client`` in :meth:`_open_raw`)."""
        attempt = 0
        while True:
            try:
                return send()
            except refused as exc:
                attempt += 1
                if attempt > self._retries:
                    raise BackendUnavailable(
                        f"Kubo at {self.api} is not reachable ({exc}); is the daemon running?"
                    ) from exc
                time.sleep(self._backoff_s * 2 ** (attempt - 1))

    def _raise_for(
        self, command: str, params: dict[str, Any], response: httpx.Response
    ) -> NoReturn:
        self._refuse(command, params, response.status_code, _read_capped(response, 64 * 1024))

    def _refuse(self, command: str, params: dict[str, Any], status: int, body: bytes) -> NoReturn:
        try:
            message = str(json.loads(body)["Message"])
        except (ValueError, KeyError, TypeError):
            message = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
        arg = params.get("arg")
        what = f"{command} {arg}" if arg else command
        if any(hint in message.lower() for hint in _STOPPING_HINTS):
            raise BackendUnavailable(f"Kubo at {self.api} is shutting down ({what}: {message})")
        if any(hint in message.lower() for hint in _NOT_FOUND_HINTS):
            raise NotFound(f"Kubo: {what}: {message}")
        raise StoreError(f"Kubo refused {what}: {message}")

    def _open_raw(self, command: str, params: dict[str, Any]) -> _RawStream:
        """POST a command without a body as HTTP/1.0 and return its 200 response to read.

        Only for bulk bytes (``cat``): an HTTP/1.0 answer is not chunked, so it
        reads at the speed of the socket, where httpx parses Kubo's few-KiB
        chunks one by one. Its end is only the connection closing, so a cut
        stream looks complete: the reader must know how much to expect (the
        leaves verify every byte anyway). Errors are translated as :meth:`_post` does.
        """
        url = httpx.URL(self.api + "/api/v0/" + command, params=params)
        connection = _Https10Connection if url.scheme == "https" else _Http10Connection

        def send() -> _RawStream:
            conn = connection(url.host, url.port, timeout=self._timeout_s)
            try:
                conn.request(
                    "POST", url.raw_path.decode("ascii"), headers={"User-Agent": "ionflux"}
                )
                response = conn.getresponse()
                if response.status != 200:
                    body = response.read(64 * 1024)
                    self._refuse(command, params, response.status, body)
                return _RawStream(conn, response)
            except BaseException:
                conn.close()
                raise

        try:
            return self._connect(send, (ConnectionRefusedError, ConnectionAbortedError))
        except TimeoutError as exc:
            raise BackendUnavailable(f"Kubo at {self.api} timed out on {command}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise BackendUnavailable(
                f"lost the connection to Kubo at {self.api} during {command}: {exc}"
            ) from exc

    def _json(self, command: str, params: dict[str, Any], files: Any = None) -> Any:
        with self._post(command, params, files) as response:
            body = _read_capped(response, _MAX_JSON)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise StoreError(f"Kubo sent a malformed answer to {command}") from exc

    def _json_lines(
        self,
        command: str,
        params: dict[str, Any],
        files: Any = None,
        *,
        content: Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> list[Any]:
        with self._post(command, params, files, content=content, headers=headers) as response:
            body = _read_capped(response, _MAX_JSON)
        try:
            return [json.loads(line) for line in body.splitlines() if line.strip()]
        except ValueError as exc:
            raise StoreError(f"Kubo sent a malformed answer to {command}") from exc

    # -- BlockBackend --------------------------------------------------------

    def get_block(self, cid: Cid) -> bytes:
        # offline: a block Kubo does not hold is NotFound now, not a DHT search.
        with self._post("block/get", {"arg": str(cid), "offline": "true"}) as response:
            return _read_capped(response, MAX_BLOCK)

    def put_block(self, cid: Cid, data: bytes) -> None:
        self.put_blocks([(cid, data)])

    def put_blocks(self, blocks: Iterable[tuple[Cid, bytes]]) -> None:
        """Store blocks of one codec per request (Kubo's block/put takes many files)."""
        by_codec: dict[int, list[tuple[Cid, bytes]]] = {}
        for cid, data in blocks:
            cid.verify(data)
            by_codec.setdefault(cid.codec, []).append((cid, data))
        for codec_blocks in by_codec.values():
            codec = codec_blocks[0][0].codec_name
            files = [
                ("file", ("block", data, "application/octet-stream")) for _, data in codec_blocks
            ]
            answers = self._json_lines(
                "block/put", {"cid-codec": codec, "mhtype": "sha2-256", "pin": "false"}, files
            )
            keys = [Cid.parse(a["Key"]) for a in answers]
            expected = [c.to_v1() for c, _ in codec_blocks]
            if [k.to_v1() for k in keys] != expected:
                raise StoreError(f"Kubo stored blocks under other CIDs: {keys} != {expected}")

    def put_file(self, blocks: Iterable[Block]) -> Cid:
        """Store a UnixFS file given as IONPOD's import of it (``iter_file_blocks``).

        One block goes in as a block. A file of several goes through one streamed
        ``add`` of its content (the raw leaves, in order) with every import
        setting explicit; Kubo's root must equal ours, else :class:`ImportMismatch`
        (what Kubo built is left unpinned, for its garbage collector). Returns the root.
        """
        it = iter(blocks)
        head = list(itertools.islice(it, 2))
        if len(head) < 2:  # one raw leaf (or an empty file): nothing for Kubo to build
            self.put_blocks(head)
            return head[0][0]
        root: list[Cid] = []
        sent = [False]

        def content() -> Iterator[bytes]:
            for cid, data in itertools.chain(head, it):
                root[:] = [cid]  # the root comes last
                if cid.codec == RAW:
                    yield data
            sent[0] = True

        boundary = os.urandom(16).hex()
        answer = self._json_lines(
            "add",
            _ADD_PARAMS,
            content=_multipart(boundary, content()),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        try:
            theirs = Cid.parse(answer[-1]["Hash"])
        except (IndexError, KeyError, TypeError) as exc:
            raise StoreError("Kubo sent a malformed answer to add") from exc
        if not sent[0]:
            raise StoreError("Kubo answered add before it had the whole file")
        ours = root[0]
        if theirs.to_v1() != ours.to_v1():
            raise ImportMismatch(
                f"Kubo imported the file as {theirs}, IONPOD computes {ours}; refusing Kubo's"
            )
        return ours

    def file_leaves(self, root: Cid, cache: LocalBackend | None = None) -> CatLeaves:
        """The raw leaves of the file ``root``, streamed from ``cat`` (see :class:`CatLeaves`)."""
        return CatLeaves(self, root, cache)

    def has(self, cid: Cid) -> bool:
        try:
            self._json("block/stat", {"arg": str(cid), "offline": "true"})
        except NotFound:
            return False
        return True

    def delete(self, cid: Cid) -> None:
        self._json_lines("block/rm", {"arg": str(cid), "force": "true"})

    def pin(self, cid: Cid) -> None:
        self._json("pin/add", {"arg": str(cid), "recursive": "true", "offline": "true"})

    def unpin(self, cid: Cid) -> None:
        self._json("pin/rm", {"arg": str(cid), "recursive": "true"})

    def pins(self) -> list[Cid]:
        answer = self._json("pin/ls", {"type": "recursive"})
        return sorted((Cid.parse(k) for k in answer.get("Keys") or {}), key=str)

    def close(self) -> None:
        self._client.close()

    # -- whole-file commands (tests and benchmarks compare against these) -----

    def id(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._json("id", {})
        return answer

    def add(self, data: bytes | IO[bytes], *, pin: bool = False) -> str:
        """``ipfs add --cid-version=1 --raw-leaves``: Kubo's own import; returns its root CID."""
        params = {
            "cid-version": "1",
            "raw-leaves": "true",
            "pin": str(pin).lower(),
            "quiet": "true",
        }
        answers = self._json_lines("add", params, [("file", ("file", data))])
        return str(answers[-1]["Hash"])

    def cat(
        self, cid: str, *, chunk_size: int | None = 1 << 20, offset: int = 0
    ) -> Generator[bytes, None, None]:
        """Kubo's own reassembly of a UnixFS file from ``offset``, streamed (unverified)."""
        params: dict[str, Any] = {"arg": cid, "offline": "true", "progress": "false"}
        if offset:
            params["offset"] = offset
        with self._post("cat", params) as response:
            yield from response.iter_bytes(chunk_size)

    def dag_export(self, cid: str) -> bytes:
        with self._post("dag/export", {"arg": cid, "offline": "true"}) as response:
            return response.read()

    def dag_put_json(self, data: bytes) -> str:
        params = {"store-codec": "dag-json", "input-codec": "dag-json", "pin": "false"}
        answer = self._json("dag/put", params, [("file", ("obj", data))])
        return str(answer["Cid"]["/"])


class CatLeaves:
    """The raw leaves of one UnixFS file, read in order from one streamed ``cat``.

    The pod's walk of the file's tree (its nodes fetched as verified blocks)
    says which leaf comes next, at which offset and of which size; this reads
    exactly that many bytes of Kubo's ``cat`` and hashes them against the
    leaf's CID before handing them out: a stream with other bytes is refused
    (:class:`CidMismatch` naming the leaf). A stream that breaks or ends early
    is given up for the rest of the file and the leaf fetched as a block
    instead, whose own errors then say what is wrong (Kubo gone:
    :class:`BackendUnavailable`; the block missing: :class:`NotFound`).
    With a ``cache``, leaves it holds are not streamed (the walk reads them as
    blocks) and streamed ones are kept in it once verified. Only the leaf being
    read is buffered.
    """

    def __init__(self, kubo: KuboBackend, root: Cid, cache: LocalBackend | None = None) -> None:
        self._kubo = kubo
        self._root = root
        self._cache = cache
        self._stream: _RawStream | None = None
        self._pos = 0  # the file offset the stream has reached
        self._broken = False

    def wants(self, cid: Cid) -> bool:
        return not self._broken and (self._cache is None or not self._cache.has(cid))

    def read(self, cid: Cid, offset: int, size: int) -> bytes:
        data = None if self._broken else self._read_stream(offset, size)
        if data is None:
            data = self._kubo.get_block(cid)
        cid.verify(data)
        if self._cache is not None:
            self._cache.put_verified(cid, data)
        return data

    def _read_stream(self, offset: int, size: int) -> bytes | None:
        try:
            if self._stream is None or offset != self._pos:
                self.close()  # a leaf came from elsewhere (cache, inline data): start there
                params = {"arg": str(self._root), "offset": offset, "offline": "true"}
                self._stream = self._kubo._open_raw("cat", {**params, "progress": "false"})
                self._pos = offset
            data = self._stream.read(size)
        except (OSError, http.client.HTTPException, BackendUnavailable):
            data = b""
        if len(data) != size:
            log.warning("Kubo's stream of %s broke at byte %d; reading blocks", self._root, offset)
            self._broken = True
            self.close()
            return None
        self._pos += size
        return data

    def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.close()


class _Http10Connection(http.client.HTTPConnection):
    _http_vsn = 10
    _http_vsn_str = "HTTP/1.0"


class _Https10Connection(http.client.HTTPSConnection):
    _http_vsn = 10
    _http_vsn_str = "HTTP/1.0"


class _RawStream:
    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse):
        self._conn = conn
        self._response = response

    def read(self, n: int) -> bytes:
        """``n`` bytes, fewer only at the end of the stream."""
        return self._response.read(n)

    def close(self) -> None:
        self._response.close()
        self._conn.close()


def _multipart(boundary: str, content: Iterator[bytes]) -> Iterator[bytes]:
    """One ``file`` part of a multipart/form-data body, streamed."""
    yield (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="file"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    yield from content
    yield f"\r\n--{boundary}--\r\n".encode()


def _read_capped(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise StoreError(f"Kubo's answer is past the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
