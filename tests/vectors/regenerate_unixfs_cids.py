"""Regenerate unixfs_cids.json with a real Kubo (not with our code).

    bash scripts/install_kubo.sh
    .venv/bin/python tests/vectors/regenerate_unixfs_cids.py

Each vector's content is ``random.Random(seed).randbytes(size)`` (stable
across Python >= 3.9) and its CID is what ``ipfs add --cid-version=1
--raw-leaves -Q`` prints for a file of that content, with Kubo's default
chunker (size-262144) and layout (balanced, 174 links per node).
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

from ionflux.testing.kubo import KUBO_VERSION, KuboDaemon, find_kubo

HERE = Path(__file__).resolve().parent

CHUNK = 262144
SIZES = {
    "empty": 0,
    "one byte": 1,
    "small": 1000,
    "one chunk less one": CHUNK - 1,
    "exactly one chunk": CHUNK,
    "one chunk plus one": CHUNK + 1,
    "two chunks": 2 * CHUNK,
    "multi-chunk": 3 * CHUNK + 12345,
    "one full node (174 chunks)": 174 * CHUNK,
    "two levels (174 chunks plus one byte)": 174 * CHUNK + 1,
    "two levels, two children": 175 * CHUNK + 5000,
}


def main() -> None:
    binary = find_kubo()
    if binary is None:
        sys.exit("no Kubo binary: run scripts/install_kubo.sh first")
    daemon = KuboDaemon(binary).start()
    vectors = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for seed, (name, size) in enumerate(SIZES.items()):
                path = Path(tmp) / "content"
                path.write_bytes(random.Random(seed).randbytes(size))
                cid = daemon.ipfs("add", "--cid-version=1", "--raw-leaves", "-Q", str(path))
                vectors.append(
                    {"name": name, "seed": seed, "size": size, "cid": cid.decode().strip()}
                )
    finally:
        daemon.cleanup()
    doc = {
        "about": "CIDs computed by Kubo `ipfs add --cid-version=1 --raw-leaves -Q`; content is "
        "random.Random(seed).randbytes(size); regenerate with regenerate_unixfs_cids.py",
        "kubo": KUBO_VERSION,
        "vectors": vectors,
    }
    (HERE / "unixfs_cids.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
