"""The embedded block store: one file per block under ``<data_dir>/blocks/``.

Blocks are sharded by two characters of their CID (as Kubo's flatfs does) and
written to a temp file in the same directory, then renamed into place, so a
reader never sees a half-written block and a crash leaves at most a stray temp
file (swept on open once it is an hour old). No fsync per block: every read
re-hashes, so a block torn by a power cut is detected, not trusted.
Pins are empty marker files under ``<data_dir>/pins/``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

from .._errors import NotFound, StoreError
from ._cid import Cid

_TMP_PREFIX = ".tmp-"
_STALE_TMP_S = 3600


class LocalBackend:
    """Blocks and pins as files under ``root`` (``root/blocks``, ``root/pins``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blocks = self.root / "blocks"
        self._pins = self.root / "pins"
        try:
            self._blocks.mkdir(parents=True, exist_ok=True)
            self._pins.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the block store in {self.root}: {exc}") from exc
        self._sweep_temp_files()

    def _sweep_temp_files(self) -> None:
        cutoff = time.time() - _STALE_TMP_S
        for tmp in self._blocks.glob(f"*/{_TMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()

    def _path(self, cid: Cid) -> Path:
        key = str(cid.to_v1())
        return self._blocks / key[-3:-1] / key

    def get_block(self, cid: Cid) -> bytes:
        try:
            return self._path(cid).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no block {cid} in the local store") from None
        except OSError as exc:
            raise StoreError(f"cannot read block {cid}: {exc}") from exc

    def put_block(self, cid: Cid, data: bytes) -> None:
        cid.verify(data)
        self.put_verified(cid, data)

    def put_verified(self, cid: Cid, data: bytes) -> None:
        """:meth:`put_block` for bytes the caller has just hashed to ``cid`` itself
        (a leaf it verified, a block it computed): the same write, without hashing twice."""
        path = self._path(cid)
        if path.exists():
            return
        try:  # the fan-out folder usually exists; a mkdir that fails costs ~80 µs here
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def has(self, cid: Cid) -> bool:
        return self._path(cid).is_file()

    def delete(self, cid: Cid) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(cid).unlink()

    def pin(self, cid: Cid) -> None:
        (self._pins / str(cid.to_v1())).touch()

    def unpin(self, cid: Cid) -> None:
        try:
            (self._pins / str(cid.to_v1())).unlink()
        except FileNotFoundError:
            raise NotFound(f"{cid} is not pinned") from None

    def pins(self) -> list[Cid]:
        return sorted((Cid.parse(p.name) for p in self._pins.iterdir()), key=str)

    def close(self) -> None:
        pass
