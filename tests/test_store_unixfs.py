"""UnixFS import equals Kubo's, checked against vectors Kubo computed (no daemon needed)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ionflux import StoreError, TooLarge
from ionflux.store import CHUNK_SIZE, DAG_PB, MAX_LINKS, RAW, Cid, cid_for_bytes, iter_file_blocks
from ionflux.store._dagpb import PBLink, PBNode, encode_pbnode, parse_pbnode
from ionflux.store._unixfs import (
    T_DIRECTORY,
    T_FILE,
    UnixfsData,
    encode_unixfs_data,
    iter_chunks,
    iter_file,
    parse_unixfs_data,
)

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "vectors" / "unixfs_cids.json").read_text()
)["vectors"]


def content(vector: dict[str, Any]) -> bytes:
    return random.Random(vector["seed"]).randbytes(vector["size"])


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_cid_equals_kubo_vector(vector: dict[str, Any]) -> None:
    assert cid_for_bytes(content(vector)) == vector["cid"]


def test_vectors_cover_the_edges() -> None:
    sizes = {v["size"] for v in VECTORS}
    assert {0, CHUNK_SIZE, CHUNK_SIZE + 1, MAX_LINKS * CHUNK_SIZE + 1} <= sizes


def blocks_of(data: bytes) -> dict[Cid, bytes]:
    return dict(iter_file_blocks(iter_chunks(data)))


def test_small_file_is_one_raw_leaf() -> None:
    blocks = list(iter_file_blocks(iter_chunks(b"hello world\n")))
    assert len(blocks) == 1 and blocks[0][0].codec == RAW
    assert str(blocks[0][0]) == "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"


def test_root_node_layout_is_what_go_merkledag_writes() -> None:
    data = b"a" * (2 * CHUNK_SIZE + 10)
    *leaves, (root, block) = iter_file_blocks(iter_chunks(data))
    assert root.codec == DAG_PB and len(leaves) == 3
    node = parse_pbnode(block)
    assert [link.name for link in node.links] == ["", "", ""]
    assert [link.tsize for link in node.links] == [CHUNK_SIZE, CHUNK_SIZE, 10]
    assert node.data == b"\x08\x02\x18" + bytes.fromhex("8a8020") + (
        b"\x20\x80\x80\x10" * 2 + b"\x20\x0a"
    )
    # Links (field 2) come before Data (field 1); the block re-encodes to itself.
    assert block[0] == 0x12 and encode_pbnode(node) == block


def test_tsize_is_cumulative_in_two_levels() -> None:
    data = bytes(MAX_LINKS * CHUNK_SIZE + 1)
    blocks = blocks_of(data)
    *_, root = blocks
    node = parse_pbnode(blocks[root])
    assert len(node.links) == 2
    first = node.links[0]
    sub = blocks[first.hash]
    assert first.tsize == len(sub) + MAX_LINKS * CHUNK_SIZE
    meta = parse_unixfs_data(node.data or b"")
    assert meta.filesize == len(data) and meta.blocksizes == (MAX_LINKS * CHUNK_SIZE, 1)


def test_reads_back_multi_level() -> None:
    data = random.Random(1).randbytes(MAX_LINKS * CHUNK_SIZE + 3)
    blocks = blocks_of(data)
    *_, root = blocks
    assert b"".join(iter_file(blocks.__getitem__, root)) == data


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=3 * CHUNK_SIZE // 2) | st.integers(0, 3 * CHUNK_SIZE).map(bytes))
def test_import_then_read_is_identity(data: bytes) -> None:
    blocks = blocks_of(data)
    for cid, block in blocks.items():
        assert cid.matches(block)
    *_, root = blocks
    assert b"".join(iter_file(blocks.__getitem__, root)) == data
    assert str(root) == cid_for_bytes(data)


def test_chunks_are_full_even_from_short_reads() -> None:
    class Dribble:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def read(self, n: int) -> bytes:
            piece, self.data = self.data[: min(n, 1000)], self.data[min(n, 1000) :]
            return piece

    data = bytes(range(256)) * 3000
    chunks = list(iter_chunks(Dribble(data)))  # type: ignore[arg-type]
    assert [len(c) for c in chunks] == [CHUNK_SIZE, CHUNK_SIZE, len(data) - 2 * CHUNK_SIZE]


def test_too_large_is_refused_from_the_root_alone() -> None:
    data = bytes(3 * CHUNK_SIZE)
    blocks = blocks_of(data)
    *_, root = blocks
    fetched: list[Cid] = []

    def fetch(cid: Cid) -> bytes:
        fetched.append(cid)
        return blocks[cid]

    with pytest.raises(TooLarge):
        list(iter_file(fetch, root, max_size=len(data) - 1))
    assert fetched == [root]
    assert len(b"".join(iter_file(fetch, root, max_size=len(data)))) == len(data)


def test_a_tree_that_lies_about_its_size_is_refused() -> None:
    leaf = b"x" * 10
    leaf_cid = Cid.for_block(RAW, leaf)
    data = encode_unixfs_data(UnixfsData(T_FILE, filesize=5, blocksizes=(5,)))
    node = encode_pbnode(PBNode((PBLink(leaf_cid, "", 10),), data))
    root = Cid.for_block(DAG_PB, node)
    blocks = {root: node, leaf_cid: leaf}
    with pytest.raises(StoreError, match="size"):
        list(iter_file(blocks.__getitem__, root))


def test_directories_are_not_files() -> None:
    node = encode_pbnode(PBNode((), encode_unixfs_data(UnixfsData(T_DIRECTORY))))
    root = Cid.for_block(DAG_PB, node)
    with pytest.raises(StoreError, match="directory"):
        list(iter_file({root: node}.__getitem__, root))


def test_dag_pb_leaves_with_inline_data_are_read() -> None:
    # What `ipfs add` without --raw-leaves makes for a small file (CIDv0).
    node = encode_pbnode(
        PBNode((), encode_unixfs_data(UnixfsData(T_FILE, data=b"hi\n", filesize=3)))
    )
    root = Cid(0, DAG_PB, Cid.for_block(DAG_PB, node).digest)
    assert b"".join(iter_file({root: node}.__getitem__, root)) == b"hi\n"


@pytest.mark.parametrize(
    "block",
    [
        b"\x0a\x01x\x12\x00",  # Data before Links
        b"\x1a\x00",  # unknown field 3
        b"\x12\x05\x0a\x03abc",  # link whose Hash is not a CID
        b"\x0a\x05ab",  # length past the end
    ],
)
def test_malformed_dag_pb_is_refused(block: bytes) -> None:
    with pytest.raises(StoreError):
        parse_pbnode(block)


class FileLeaves:
    """A stand-in for a streamed content source: the file's bytes, read at offsets."""

    def __init__(self, data: bytes, skip: frozenset[Cid] = frozenset()) -> None:
        self.data = data
        self.skip = skip
        self.reads: list[tuple[int, int]] = []
        self.closed = False

    def wants(self, cid: Cid) -> bool:
        return cid not in self.skip

    def read(self, cid: Cid, offset: int, size: int) -> bytes:
        self.reads.append((offset, size))
        piece = self.data[offset : offset + size]
        cid.verify(piece)
        return piece

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("prefetch", [0, 4])
def test_leaves_are_read_in_order_at_their_offsets(prefetch: int) -> None:
    data = random.Random(7).randbytes((MAX_LINKS + 3) * CHUNK_SIZE + 11)  # two levels
    blocks = blocks_of(data)
    *_, root = blocks
    fetched: list[Cid] = []

    def fetch(cid: Cid) -> bytes:
        fetched.append(cid)
        return blocks[cid]

    leaves = FileLeaves(data)
    assert b"".join(iter_file(fetch, root, prefetch=prefetch, leaves=leaves)) == data
    assert all(c.codec == DAG_PB for c in fetched)  # only the nodes came as blocks
    assert [offset for offset, _ in leaves.reads] == list(range(0, len(data), CHUNK_SIZE))
    assert leaves.closed


def test_leaves_not_wanted_are_fetched_as_blocks() -> None:
    data = random.Random(8).randbytes(5 * CHUNK_SIZE)
    blocks = blocks_of(data)
    *leaf_cids, root = blocks
    leaves = FileLeaves(data, skip=frozenset({leaf_cids[1], leaf_cids[2]}))
    assert b"".join(iter_file(blocks.__getitem__, root, prefetch=2, leaves=leaves)) == data
    assert [offset for offset, _ in leaves.reads] == [0, 3 * CHUNK_SIZE, 4 * CHUNK_SIZE]


def test_leaves_with_other_bytes_are_refused() -> None:
    data = random.Random(9).randbytes(3 * CHUNK_SIZE)
    blocks = blocks_of(data)
    *_, root = blocks
    tampered = data[:CHUNK_SIZE] + b"x" + data[CHUNK_SIZE + 1 :]
    with pytest.raises(StoreError, match=str(list(blocks)[1])):
        list(iter_file(blocks.__getitem__, root, leaves=FileLeaves(tampered)))
