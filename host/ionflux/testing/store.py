"""The conformance suite every IONPOD block backend must pass.

    def test_my_backend(tmp_path):
        check_store(lambda: MyBackend(tmp_path / "blocks"))

``factory`` makes a fresh, empty backend each time it is called (the suite
calls it once per check, so one check's blocks cannot hide another's bugs,
and closes each backend when the check is done). For a backend that shares
state between instances (Kubo), blocks and pins are unique per run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from .._errors import CidMismatch, NotFound
from ..store import DAG_JSON, DAG_PB, RAW, BlockBackend, Cid

Factory = Callable[[], BlockBackend]


def _unique(n: int = 64) -> bytes:
    return os.urandom(n)


def _raw(data: bytes) -> tuple[Cid, bytes]:
    return Cid.for_block(RAW, data), data


def _expect(exc: type[BaseException], fn: Callable[[], object], what: str) -> None:
    try:
        fn()
    except exc:
        return
    raise AssertionError(f"{what}: expected {exc.__name__}")


def _check_round_trip(b: BlockBackend) -> None:
    blocks = [
        _raw(_unique()),
        _raw(b""),
        _raw(_unique(1024 * 1024)),
    ]
    body = b'{"n":' + str(int.from_bytes(_unique(6), "big")).encode() + b"}"
    blocks.append((Cid.for_block(DAG_JSON, body), body))
    pb = b"\x0a\x08" + _unique(8)  # a dag-pb node with only Data
    blocks.append((Cid.for_block(DAG_PB, pb), pb))
    for cid, data in blocks:
        assert not b.has(cid) or data == b"", f"fresh backend already has {cid}"
        b.put_block(cid, data)
        assert b.has(cid), f"has({cid}) after put"
        assert b.get_block(cid) == data, f"get_block({cid}) returned other bytes"
        b.put_block(cid, data)  # idempotent
        assert b.get_block(cid) == data


def _check_cidv0_reads_v1(b: BlockBackend) -> None:
    pb = b"\x0a\x08" + _unique(8)
    v1 = Cid.for_block(DAG_PB, pb)
    b.put_block(v1, pb)
    assert b.get_block(Cid(0, DAG_PB, v1.digest)) == pb, "a CIDv0 names the same block"


def _check_missing(b: BlockBackend) -> None:
    cid, _ = _raw(_unique())
    assert not b.has(cid)
    _expect(NotFound, lambda: b.get_block(cid), "get_block of a missing block")
    b.delete(cid)  # deleting what is not there is fine


def _check_delete(b: BlockBackend) -> None:
    cid, data = _raw(_unique())
    b.put_block(cid, data)
    b.delete(cid)
    assert not b.has(cid), "has() after delete"
    _expect(NotFound, lambda: b.get_block(cid), "get_block after delete")


def _check_refuses_mismatch(b: BlockBackend) -> None:
    cid, _ = _raw(_unique())
    other = _unique()
    _expect(CidMismatch, lambda: b.put_block(cid, other), "put_block under the wrong CID")
    assert not b.has(cid), "a refused block must not be stored"


def _check_pins(b: BlockBackend) -> None:
    cid, data = _raw(_unique())
    b.put_block(cid, data)
    assert cid not in b.pins()
    b.pin(cid)
    b.pin(cid)  # idempotent
    assert cid in b.pins(), "pins() after pin"
    pins = b.pins()
    assert pins == sorted(pins, key=str), "pins() is sorted"
    b.unpin(cid)
    assert cid not in b.pins(), "pins() after unpin"
    _expect(NotFound, lambda: b.unpin(cid), "unpin of what is not pinned")


def _check_threads(b: BlockBackend) -> None:
    blocks = [_raw(_unique(4096)) for _ in range(32)]
    errors: list[BaseException] = []

    def work(part: list[tuple[Cid, bytes]]) -> None:
        try:
            for cid, data in part:
                b.put_block(cid, data)
                assert b.get_block(cid) == data
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(blocks[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for cid, data in blocks:
        assert b.get_block(cid) == data


CHECKS: tuple[Callable[[BlockBackend], None], ...] = (
    _check_round_trip,
    _check_cidv0_reads_v1,
    _check_missing,
    _check_delete,
    _check_refuses_mismatch,
    _check_pins,
    _check_threads,
)


def check_store(factory: Factory) -> None:
    """Run every check on fresh backends from ``factory``; AssertionError on the first failure."""
    for check in CHECKS:
        backend = factory()
        try:
            check(backend)
        except AssertionError as exc:
            raise AssertionError(f"{check.__name__.lstrip('_')}: {exc}") from exc
        finally:
            backend.close()
