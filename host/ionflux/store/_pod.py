"""The ``Pod``: IONPOD as the rest of IONFLUX sees it.

Files go in as UnixFS exactly as Kubo would import them (so a module's CID is
the one ``ipfs add --cid-version=1 --raw-leaves`` prints), JSON objects as
dag-json, and every block read back is re-hashed against its CID, whichever
backend served it. The API is synchronous on purpose: it is called from sandbox
worker threads, and is safe to call from several of them at once.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, Protocol, cast

from .._errors import ConfigError, NotFound, StoreError
from ._backend import BlockBackend, put_all
from ._cached import CachedBackend
from ._car import read_car, write_car
from ._cid import DAG_JSON, DAG_PB, RAW, Cid
from ._dagjson import decode_dagjson, encode_dagjson, iter_links
from ._dagpb import parse_pbnode
from ._kubo import ImportMismatch, KuboBackend
from ._local import LocalBackend
from ._paths import PathTable
from ._unixfs import Block, LeafSource, iter_chunks, iter_file, iter_file_blocks

CidLike = str | Cid
log = logging.getLogger("ionflux.store")


class Pod:
    """Content-addressed files, JSON objects, pins and named paths over one backend."""

    def __init__(
        self,
        backend: BlockBackend,
        paths: PathTable,
        *,
        max_get_bytes: int | None = None,
        prefetch: int = 4,
    ) -> None:
        self.backend = backend
        self.paths = paths
        self.max_get_bytes = max_get_bytes
        self.prefetch = prefetch  # blocks fetched ahead on threads while reading a file

    def __enter__(self) -> Pod:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()
        self.paths.close()

    # -- blocks --------------------------------------------------------------

    def _get_block(self, cid: Cid) -> bytes:
        data = self.backend.get_block(cid)
        cid.verify(data)  # every block, every read, every backend
        return data

    def _put_blocks(self, blocks: Iterator[tuple[Cid, bytes]]) -> Cid:
        return put_all(self.backend, blocks)

    def _put_file(self, source: bytes | BinaryIO) -> str:
        """Import ``source`` as UnixFS. A backend with ``put_file`` (Kubo) takes the file
        in one streamed request and must arrive at our root; if it does not
        (:class:`ImportMismatch`), the blocks we computed are stored one by one
        instead when ``source`` can be read again, and the put is refused when not."""
        put_file: Callable[[Iterator[Block]], Cid] | None
        put_file = getattr(self.backend, "put_file", None)
        if put_file is None:
            return str(self._put_blocks(iter_file_blocks(iter_chunks(source))))
        start = None
        if not isinstance(source, bytes | bytearray):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                start = source.tell() if source.seekable() else None
        try:
            return str(put_file(iter_file_blocks(iter_chunks(source))))
        except ImportMismatch as exc:
            if not isinstance(source, bytes | bytearray):
                if start is None:
                    raise
                source.seek(start)
            log.warning("%s; storing IONPOD's blocks instead", exc)
        return str(self._put_blocks(iter_file_blocks(iter_chunks(source))))

    # -- files ---------------------------------------------------------------

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` as a UnixFS file; return the CID Kubo would give it."""
        return self._put_file(data)

    def put_stream(self, stream: BinaryIO) -> str:
        """Like :meth:`put_bytes`, reading a file object chunk by chunk."""
        return self._put_file(stream)

    def iter_bytes(self, cid: CidLike, max_size: int | None = None) -> Iterator[bytes]:
        """Stream a file's content, verified block by block (leaf by leaf, when the
        backend streams the content: see :class:`~ionflux.store._kubo.CatLeaves`)."""
        limit = self.max_get_bytes if max_size is None else max_size
        root = Cid.parse(cid)
        opener: Callable[[Cid], LeafSource | None] | None
        opener = getattr(self.backend, "file_leaves", None)
        leaves = opener(root) if opener is not None else None
        return iter_file(self._get_block, root, limit, prefetch=self.prefetch, leaves=leaves)

    def get_bytes(self, cid: CidLike, max_size: int | None = None) -> bytes:
        """A file's content. :class:`TooLarge` past ``max_size`` (default: the pod's limit),
        raised before fetching the content when the root block states the size."""
        return b"".join(self.iter_bytes(cid, max_size))

    # -- JSON objects --------------------------------------------------------

    def put_json(self, value: Any) -> str:
        """Store a JSON-like value (links as :class:`Cid`) as a dag-json block."""
        data = encode_dagjson(value)
        cid = Cid.for_block(DAG_JSON, data)
        self.backend.put_block(cid, data)
        return str(cid)

    def get_json(self, cid: CidLike) -> Any:
        c = Cid.parse(cid)
        if c.codec != DAG_JSON:
            raise StoreError(f"{c} is {c.codec_name}, not dag-json")
        return decode_dagjson(self._get_block(c))

    # -- presence and pins ---------------------------------------------------

    def has(self, cid: CidLike) -> bool:
        return self.backend.has(Cid.parse(cid))

    def pin(self, cid: CidLike) -> None:
        c = Cid.parse(cid)
        if not self.backend.has(c):
            raise NotFound(f"cannot pin {c}: no such content")
        self.backend.pin(c)

    def unpin(self, cid: CidLike) -> None:
        self.backend.unpin(Cid.parse(cid))

    def pins(self) -> list[str]:
        return [str(c) for c in self.backend.pins()]

    # -- named paths ---------------------------------------------------------

    def bind(self, path: str, cid: CidLike) -> None:
        self.paths.bind(path, Cid.parse(cid))

    def resolve(self, path: str) -> str:
        return str(self.paths.resolve(path))

    def unbind(self, path: str) -> None:
        self.paths.unbind(path)

    # -- CAR archives --------------------------------------------------------

    def _walk(self, root: Cid) -> Iterator[tuple[Cid, bytes]]:
        """Every block of the DAG under ``root``, depth first, each once (as Kubo exports)."""
        seen: set[Cid] = set()
        stack = [root]
        while stack:
            cid = stack.pop()
            key = cid.to_v1()
            if key in seen:
                continue
            seen.add(key)
            data = self._get_block(cid)
            yield cid, data
            stack.extend(reversed(_links(cid, data)))

    def export_car(self, cid: CidLike, file: BinaryIO | str | Path) -> None:
        """Write the whole DAG under ``cid`` as a CARv1 with that root."""
        root = Cid.parse(cid)
        if isinstance(file, str | Path):
            with open(file, "wb") as out:
                write_car(out, [root], self._walk(root))
        else:
            write_car(file, [root], self._walk(root))

    def import_car(self, file: BinaryIO | str | Path, *, pin: bool = False) -> list[str]:
        """Import a CARv1; return its roots. Every block is verified before any is kept:
        one bad block and the import is refused with nothing stored."""
        if isinstance(file, str | Path):
            with open(file, "rb") as f:
                return self.import_car(f, pin=pin)
        with tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024) as spooled:
            spool = cast(IO[bytes], spooled)
            roots, sections = read_car(file)
            count = 0

            def verified() -> Iterator[tuple[Cid, bytes]]:
                nonlocal count
                for cid, data in sections:
                    cid.verify(data)
                    count += 1
                    yield cid, data

            write_car(spool, roots, verified())  # pass 1: verify everything
            spool.seek(0)
            _, checked = read_car(spool)
            if count:
                self._put_blocks(checked)  # pass 2: store
        if pin:
            for root in roots:
                self.pin(root)
        return [str(r) for r in roots]

    # ``list`` last: inside the class body its name hides the builtin.
    def list(self, prefix: str = "") -> dict[str, str]:
        """Bound paths starting with ``prefix``, sorted: ``{path: cid}``."""
        return self.paths.list(prefix)


def _links(cid: Cid, data: bytes) -> list[Cid]:
    if cid.codec == RAW:
        return []
    if cid.codec == DAG_PB:
        return [link.hash for link in parse_pbnode(data).links]
    if cid.codec == DAG_JSON:
        return list(iter_links(decode_dagjson(data)))
    raise StoreError(f"cannot follow the links of {cid.codec_name} block {cid}")


# -- opening from configuration ---------------------------------------------------


class _StoreSection(Protocol):
    @property
    def backend(self) -> Literal["local", "kubo"] | str: ...
    @property
    def kubo_api(self) -> str: ...
    @property
    def max_get_bytes(self) -> int: ...
    @property
    def timeout_s(self) -> float: ...


class _Config(Protocol):
    @property
    def data_dir(self) -> Path: ...
    @property
    def store(self) -> _StoreSection: ...


def open_pod(config: _Config, *, paths: PathTable | None = None) -> Pod:
    """The pod ``config`` describes: local blocks under ``data_dir``, or Kubo with them as cache.
    ``paths``: the path table to use (a host passes the shared one of its state); by
    default the state's (``state.backend: postgres``: one pool opened for the pod),
    else ``paths.sqlite`` in ``data_dir``."""
    data_dir = Path(config.data_dir)
    store = config.store
    local = LocalBackend(data_dir)
    backend: BlockBackend
    if store.backend == "local":
        backend = local
    elif store.backend == "kubo":
        backend = CachedBackend(KuboBackend(store.kubo_api, timeout_s=store.timeout_s), local)
    else:
        raise ConfigError(f"store.backend must be 'local' or 'kubo', not {store.backend!r}")
    with contextlib.ExitStack() as stack:
        stack.callback(backend.close)
        if paths is None:
            paths = _shared_paths(config) or PathTable(data_dir / "paths.sqlite")
        stack.pop_all()
    return Pod(backend, paths, max_get_bytes=store.max_get_bytes)


def _shared_paths(config: _Config) -> PathTable | None:
    """The path table in the cluster's database when the state is shared."""
    state = getattr(config, "state", None)
    if state is None or getattr(state, "backend", "sqlite") != "postgres" or not state.url:
        return None
    from ..state import PgDatabase, migrate

    migrate(state.url)
    database = PgDatabase(state.url, size=2, timeout_s=state.connect_timeout_s)
    return PathTable(None, database=database, owns=True)
