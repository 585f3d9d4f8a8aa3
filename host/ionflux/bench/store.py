"""IONPOD throughput: put/get MB/s for 1 MB and 50 MB on each backend, beside the
``ipfs`` CLI doing the same against the same Kubo daemon (``ipfs add``, ``ipfs cat``).

Rows: ``cid_for_bytes`` alone (hashing and tree building), the local backend,
Kubo through the pod without a cache, with the local cache in front (put; get
cold: every byte over the RPC API; get warm), and the ``ipfs`` CLI (a process
per call, as a user runs it). A put is one streamed ``add`` checked against our
own import; a get one streamed ``cat`` with every leaf verified.
Without a Kubo binary (``just kubo``) only the local rows are measured.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ..store import CachedBackend, KuboBackend, LocalBackend, PathTable, Pod, cid_for_bytes
from ..testing.kubo import KuboDaemon, find_kubo
from ._timing import Row

SIZES = {"1 MB": 1_000_000, "50 MB": 50_000_000}


def _mbps(size: int, fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return size / best / 1e6


def _pod(backend: LocalBackend | CachedBackend | KuboBackend, workdir: Path, name: str) -> Pod:
    return Pod(backend, PathTable(workdir / f"{name}.sqlite"))


def _local(label: str, size: int, data: bytes, workdir: Path, repeats: int) -> list[Row]:
    pod = _pod(LocalBackend(workdir / f"local-{label}"), workdir, f"local-{label}")
    cid = pod.put_bytes(data)
    rows = [
        Row(f"cid_for_bytes {label}", _mbps(size, lambda: cid_for_bytes(data), repeats), "MB/s"),
        Row(f"local put {label}", _mbps(size, lambda: pod.put_bytes(data), repeats), "MB/s"),
        Row(f"local get {label}", _mbps(size, lambda: pod.get_bytes(cid), repeats), "MB/s"),
    ]
    pod.close()
    return rows


def _kubo(
    label: str, size: int, data: bytes, workdir: Path, repeats: int, daemon: KuboDaemon
) -> list[Row]:
    path = workdir / f"content-{label}"
    path.write_bytes(data)
    rows: list[Row] = []
    with KuboBackend(daemon.api) as direct:
        kubo = _pod(direct, workdir, f"kubo-{label}")
        cid = kubo.put_bytes(data)
        rows.append(
            Row(f"kubo put {label}", _mbps(size, lambda: kubo.put_bytes(data), repeats), "MB/s")
        )
        rows.append(
            Row(
                f"kubo get {label}, no cache",
                _mbps(size, lambda: kubo.get_bytes(cid), repeats),
                "MB/s",
            )
        )
        cache = LocalBackend(workdir / f"cache-{label}")
        cached = _pod(CachedBackend(KuboBackend(daemon.api), cache), workdir, f"cache-{label}")
        rows.append(
            Row(
                f"kubo put {label}, with cache",
                _mbps(size, lambda: cached.put_bytes(data), 1),  # once: every block written
                "MB/s",
            )
        )
        for block_file in (workdir / f"cache-{label}" / "blocks").rglob("*"):
            if block_file.is_file():
                block_file.unlink()  # the gets below start cold
        rows.append(
            Row(
                f"kubo get {label}, cold cache",
                _mbps(size, lambda: cached.get_bytes(cid), 1),
                "MB/s",
            )
        )
        rows.append(
            Row(
                f"kubo get {label}, warm cache",
                _mbps(size, lambda: cached.get_bytes(cid), repeats),
                "MB/s",
            )
        )
        cached.close()

        def cli_add() -> None:
            out = daemon.ipfs(
                "add", "--cid-version=1", "--raw-leaves", "-Q", "--pin=false", str(path)
            )
            assert out.decode().strip() == cid

        def cli_cat() -> None:
            subprocess.run(
                [str(daemon.binary), "cat", "--progress=false", cid],
                env=daemon.env,
                check=True,
                stdout=subprocess.DEVNULL,
            )

        rows.append(Row(f"ipfs add {label} (CLI)", _mbps(size, cli_add, repeats), "MB/s"))
        rows.append(Row(f"ipfs cat {label} (CLI)", _mbps(size, cli_cat, repeats), "MB/s"))
        rows.append(
            Row(f"kubo RPC add {label}", _mbps(size, lambda: direct.add(data), repeats), "MB/s")
        )
        rows.append(
            Row(
                f"kubo RPC cat {label}",
                _mbps(size, lambda: sum(map(len, direct.cat(cid))), repeats),
                "MB/s",
            )
        )
    return rows


def run(*, repo: Path, workdir: Path) -> list[Row]:
    """The store section of ``just bench``: (label, value, unit) rows."""
    workdir.mkdir(parents=True, exist_ok=True)
    binary = find_kubo()
    daemon = KuboDaemon(binary).start() if binary is not None else None
    rows: list[Row] = []
    try:
        for label, size in SIZES.items():
            data = os.urandom(size)
            repeats = 5 if size < 10_000_000 else 2
            rows += _local(label, size, data, workdir, repeats)
            if daemon is not None:
                rows += _kubo(label, size, data, workdir, repeats, daemon)
    finally:
        if daemon is not None:
            daemon.cleanup()
    return rows
