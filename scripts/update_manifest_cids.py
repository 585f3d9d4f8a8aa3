#!/usr/bin/env python3
"""Keeps the module CIDs in manifests/*.yaml equal to the built modules.

    update_manifest_cids.py                 rewrite stale `module.cid` lines in manifests/
                                            and tests/fixtures/manifests/
    update_manifest_cids.py --check         exit 1 (listing them) if any manifest is stale
    update_manifest_cids.py --report F...   print name, size and CID of built files, and
                                            whether the manifest pointing at each agrees

A CID is what `ipfs add --cid-version=1 --raw-leaves` prints for the file.
`ionflux.store.cid_for_bytes` computes that for any size (a UnixFS dag-pb
root above one 256 KiB chunk); when the package is not importable (a fresh
clone before `pip install -e .`, or a copy of the sources elsewhere) the
raw-leaf rule below is used, which covers every file of one chunk and
refuses anything larger rather than print a wrong CID.

Manifests are edited as text, one line, so comments and layout survive.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 256 * 1024  # Kubo's default chunker: size-262144


def raw_leaf_cid(data: bytes) -> str:
    """CIDv1, codec raw (0x55), sha2-256 multihash, base32 lower with `b`."""
    if len(data) > CHUNK:
        raise ValueError(
            f"{len(data)} bytes is more than one {CHUNK}-byte chunk: its Kubo CID is a "
            "UnixFS dag-pb root, which needs ionflux.store (pip install -e . first)"
        )
    # version 1, codec raw, multihash(sha2-256 = 0x12, 32 bytes); all one-byte varints.
    cid = bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(cid).decode("ascii").lower().rstrip("=")


def _cid_function() -> Callable[[bytes], str]:
    sys.path.insert(0, str(ROOT / "host"))
    try:
        from ionflux.store import cid_for_bytes
    except ImportError:
        return raw_leaf_cid

    def checked(data: bytes) -> str:
        cid: str = cid_for_bytes(data)
        # Two independent implementations of the same rule: disagreeing means
        # one of them is wrong, and a wrong CID in a manifest is worse than none.
        if len(data) <= CHUNK and cid != raw_leaf_cid(data):
            raise SystemExit(
                f"ionflux.store.cid_for_bytes gives {cid}, raw-leaf rule {raw_leaf_cid(data)}"
            )
        return cid

    return checked


cid_for_bytes = _cid_function()


class Manifest:
    """The `module:` block of one manifest, located by line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        self.name = path.stem
        self.cid_line: int | None = None
        self.cid: str | None = None
        self.module_path: Path | None = None
        in_module = False
        for i, line in enumerate(self.lines):
            stripped = line.strip()
            if not line[:1].isspace() and stripped:
                if stripped.startswith("name:"):
                    self.name = _scalar(stripped[len("name:") :])
                in_module = stripped == "module:"
                continue
            if in_module and stripped.startswith("cid:"):
                self.cid_line, self.cid = i, _scalar(stripped[len("cid:") :])
            elif in_module and stripped.startswith("path:"):
                self.module_path = (path.parent / _scalar(stripped[len("path:") :])).resolve()
        if self.cid_line is None or self.module_path is None:
            raise SystemExit(f"{path}: no `module:` block with `cid:` and `path:` lines")

    def set_cid(self, cid: str) -> None:
        assert self.cid_line is not None
        line = self.lines[self.cid_line]
        indent = line[: len(line) - len(line.lstrip())]
        comment = line.split("#", 1)[1].rstrip("\n") if "#" in line else None
        new = f"{indent}cid: {cid}" + (f"  #{comment}" if comment else "") + "\n"
        self.lines[self.cid_line] = new
        self.cid = cid
        self.path.write_text("".join(self.lines), encoding="utf-8")


def _scalar(text: str) -> str:
    return text.split("#", 1)[0].strip().strip("'\"")


def load_manifests(directory: Path) -> list[Manifest]:
    return [Manifest(p) for p in sorted(directory.glob("*.yaml"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--manifests",
        type=Path,
        action="append",
        help="a directory of manifests (repeatable); "
        "default: manifests/ and tests/fixtures/manifests/",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only check; exit 1 if stale")
    mode.add_argument("--report", nargs="+", type=Path, metavar="FILE", help="describe built files")
    args = parser.parse_args(argv)

    directories = args.manifests or [ROOT / "manifests", ROOT / "tests" / "fixtures" / "manifests"]
    manifests = [m for d in directories if d.is_dir() for m in load_manifests(d)]

    if args.report:
        by_module = {m.module_path: m for m in manifests}
        width = max(len(_display(f)) for f in args.report)
        stale = 0
        for f in args.report:
            data = f.read_bytes()
            cid = cid_for_bytes(data)
            manifest = by_module.get(f.resolve())
            note = ""
            if manifest is not None and manifest.cid != cid:
                note = f"  STALE: {manifest.path.name} says {manifest.cid}"
                stale += 1
            print(f"{_display(f):<{width}}  {len(data):>8} B  {cid}{note}")
        if stale:
            print(
                f"{stale} manifest(s) stale: run scripts/update_manifest_cids.py", file=sys.stderr
            )
        return 0

    changed = 0
    for m in manifests:
        assert m.module_path is not None
        if not m.module_path.is_file():
            print(
                f"{m.path}: module {m.module_path} not built (run scripts/build_transforms.sh)",
                file=sys.stderr,
            )
            return 1
        cid = cid_for_bytes(m.module_path.read_bytes())
        if cid == m.cid:
            continue
        changed += 1
        if args.check:
            print(f"{m.path}: cid {m.cid} but {m.module_path.name} is {cid}")
        else:
            m.set_cid(cid)
            print(f"{m.path}: cid -> {cid}")
    if args.check and changed:
        return 1
    if not changed:
        print(f"{len(manifests)} manifest(s) up to date")
    return 0


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
