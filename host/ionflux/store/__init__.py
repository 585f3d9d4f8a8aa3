"""IONPOD: the content-addressed store.

CIDs are the ones IPFS/Kubo computes (CIDv1, sha2-256, base32); files are
UnixFS as ``ipfs add --cid-version=1 --raw-leaves`` builds them; JSON objects
are dag-json. Blocks live in the embedded :class:`LocalBackend` or in Kubo
(:class:`KuboBackend`, with the local store as a verified cache in front).
Every block is re-hashed on every read. The API is synchronous on purpose: it
is called from sandbox worker threads.
"""

from ._backend import BlockBackend
from ._cached import CachedBackend
from ._car import read_car, write_car
from ._cid import DAG_CBOR, DAG_JSON, DAG_PB, RAW, Cid
from ._dagjson import decode_dagjson, encode_dagjson
from ._kubo import ImportMismatch, KuboBackend
from ._local import LocalBackend
from ._paths import PathTable
from ._pod import Pod, open_pod
from ._unixfs import CHUNK_SIZE, MAX_LINKS, cid_for_bytes, iter_file_blocks

__all__ = [
    "CHUNK_SIZE",
    "DAG_CBOR",
    "DAG_JSON",
    "DAG_PB",
    "MAX_LINKS",
    "RAW",
    "BlockBackend",
    "CachedBackend",
    "Cid",
    "ImportMismatch",
    "KuboBackend",
    "LocalBackend",
    "PathTable",
    "Pod",
    "cid_for_bytes",
    "decode_dagjson",
    "encode_dagjson",
    "iter_file_blocks",
    "open_pod",
    "read_car",
    "write_car",
]
