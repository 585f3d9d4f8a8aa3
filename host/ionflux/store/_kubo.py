"""Blocks in a Kubo daemon, over its RPC API (HTTP POST ``/api/v0/...``).

This module is the only place IONPOD touches the network. Every httpx error is
translated here: connection failures become :class:`BackendUnavailable`, a
missing block or pin :class:`NotFound`, anything else Kubo refuses
:class:`StoreError` with Kubo's own message. Connection errors (and only
those: a request that reached Kubo may have had an effect) are retried with
exponential backoff. Bodies are streamed and capped, so a misbehaving daemon
cannot make us buffer unbounded data.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, Final

import httpx

from .._errors import BackendUnavailable, NotFound, StoreError
from ._cid import Cid

# Kubo refuses blocks above 2 MiB (bitswap's limit); allow that and no more.
MAX_BLOCK: Final = 2 * 1024 * 1024
_MAX_JSON: Final = 16 * 1024 * 1024
_NOT_FOUND_HINTS: Final = ("not found", "not pinned", "no link named")
# What a daemon that is shutting down answers instead of closing the socket.
_STOPPING_HINTS: Final = ("repo not open", "context canceled", "node is closed")


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
        self, command: str, params: dict[str, Any], files: Any = None
    ) -> Iterator[httpx.Response]:
        """POST a command; yield the streaming response of a 200, translate anything else."""
        attempt = 0
        while True:
            try:
                with self._client.stream("POST", command, params=params, files=files) as response:
                    if response.status_code != 200:
                        self._raise_for(command, params, response)
                    yield response
                    return
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                attempt += 1
                if attempt > self._retries:
                    raise BackendUnavailable(
                        f"Kubo at {self.api} is not reachable ({exc}); is the daemon running?"
                    ) from exc
                time.sleep(self._backoff_s * 2 ** (attempt - 1))
                if files is not None:
                    _rewind(files)
            except httpx.TimeoutException as exc:
                raise BackendUnavailable(f"Kubo at {self.api} timed out on {command}") from exc
            except httpx.TransportError as exc:
                raise BackendUnavailable(
                    f"lost the connection to Kubo at {self.api} during {command}: {exc}"
                ) from exc

    def _raise_for(self, command: str, params: dict[str, Any], response: httpx.Response) -> None:
        body = _read_capped(response, 64 * 1024)
        try:
            message = str(json.loads(body)["Message"])
        except (ValueError, KeyError, TypeError):
            message = body.decode("utf-8", "replace").strip() or f"HTTP {response.status_code}"
        arg = params.get("arg")
        what = f"{command} {arg}" if arg else command
        if any(hint in message.lower() for hint in _STOPPING_HINTS):
            raise BackendUnavailable(f"Kubo at {self.api} is shutting down ({what}: {message})")
        if any(hint in message.lower() for hint in _NOT_FOUND_HINTS):
            raise NotFound(f"Kubo: {what}: {message}")
        raise StoreError(f"Kubo refused {what}: {message}")

    def _json(self, command: str, params: dict[str, Any], files: Any = None) -> Any:
        with self._post(command, params, files) as response:
            body = _read_capped(response, _MAX_JSON)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise StoreError(f"Kubo sent a malformed answer to {command}") from exc

    def _json_lines(self, command: str, params: dict[str, Any], files: Any = None) -> list[Any]:
        with self._post(command, params, files) as response:
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

    def cat(self, cid: str, *, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Kubo's own reassembly of a UnixFS file, streamed (unverified)."""
        with self._post("cat", {"arg": cid, "offline": "true"}) as response:
            yield from response.iter_bytes(chunk_size)

    def dag_export(self, cid: str) -> bytes:
        with self._post("dag/export", {"arg": cid, "offline": "true"}) as response:
            return response.read()

    def dag_put_json(self, data: bytes) -> str:
        params = {"store-codec": "dag-json", "input-codec": "dag-json", "pin": "false"}
        answer = self._json("dag/put", params, [("file", ("obj", data))])
        return str(answer["Cid"]["/"])


def _read_capped(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise StoreError(f"Kubo's answer is past the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _rewind(files: Any) -> None:
    for _, spec in files:
        body = spec[1]
        if hasattr(body, "seek"):
            body.seek(0)
