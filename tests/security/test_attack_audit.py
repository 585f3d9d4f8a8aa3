"""Attacks on the audit log of a serving host, checked with the real CLI.

The issue's attack: edit an entry, drop the 100 after it, re-hash the chain and
rewrite ``audit.head``. Without a key the forged files are consistent; only the
signed checkpoints (``ionwall/_checkpoint.py``) can tell, and
``ionflux audit verify`` must fail naming the first entry after the last
checkpoint that still holds. The attacks the chain already caught (an edited,
a dropped, a reordered entry) must stay caught.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from ionflux.http import RunningHost
from serving import http, nats_server, running, still_serves, token  # noqa: F401

from ionwall import CallContext
from ionwall._audit import _canonical

REPO = Path(__file__).resolve().parents[2]
IONFLUX = REPO / ".venv" / "bin" / "ionflux"


def _verify(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IONFLUX_")}
    return subprocess.run(
        [str(IONFLUX), "--data-dir", str(data_dir), "audit", "verify", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _decisions(host: RunningHost, n: int) -> None:
    """``n`` real gate decisions (denials: a call without a grant), then a checkpoint
    as the host would sign it after a quiet moment."""
    gate = host.ionwall.gate(None)
    ctx = CallContext("bafkreiattacker", "digest", run_id="run-1", node_id="n1")
    for i in range(n):
        gate.check(ctx, f"read_pod_data:reports/{i}.json")
    host.ionwall.audit.checkpoint()


def _files(host: RunningHost) -> tuple[Path, Path]:
    return host.ionwall.audit.path, host.ionwall.audit.head_path


def _lines(log: Path) -> list[bytes]:
    return log.read_bytes().splitlines(keepends=True)


def _rehash_and_rewrite(log: Path, head: Path, lines: list[bytes]) -> None:
    """Renumber, re-chain and re-hash every entry, and write a head to match:
    all an attacker without IONWALL's key can do."""
    prev = "0" * 64
    out = []
    for i, raw in enumerate(lines):
        obj = json.loads(raw)
        obj.pop("hash")
        obj["index"], obj["prev"] = i, prev
        prev = hashlib.sha256(_canonical(obj)).hexdigest()
        out.append(_canonical({**obj, "hash": prev}) + b"\n")
    log.write_bytes(b"".join(out))
    head.write_text(f"{len(out):020d} {prev} {len(out):020d}\n")


def _edit(raw: bytes) -> bytes:
    return raw.replace(b'"deny"', b'"allow"').replace(b'"no grant"', b'"granted by g-1"')


async def _attack(
    running: RunningHost,  # noqa: F811
    http: httpx.AsyncClient,  # noqa: F811
    tamper: Callable[[Path, Path], None],
    expect: str,
) -> str:
    _decisions(running, 1000)
    data_dir = running.host.config.data_dir
    ok = _verify(data_dir)
    assert ok.returncode == 0, ok.stderr
    assert "covered by the signed checkpoint" in ok.stdout
    tamper(*_files(running))
    bad = _verify(data_dir)
    assert bad.returncode != 0, bad.stdout
    assert "Traceback" not in bad.stderr
    assert expect in bad.stderr, bad.stderr
    await still_serves(running, http)
    return bad.stderr


async def test_the_rehash_attack_fails_verify_naming_the_entry(
    running: RunningHost,  # noqa: F811
    http: httpx.AsyncClient,  # noqa: F811
) -> None:
    def rehash(log: Path, head: Path) -> None:
        lines = _lines(log)
        at = len(lines) - 700  # well before the last checkpoints
        lines[at] = _edit(lines[at])
        del lines[at + 1 : at + 101]
        _rehash_and_rewrite(log, head, lines)

    err = await _attack(running, http, rehash, "re-hashed")
    assert "is the first after the last valid signed checkpoint" in err


async def test_the_rehash_attack_with_the_checkpoints_cut_off_fails_verify(
    running: RunningHost,  # noqa: F811
    http: httpx.AsyncClient,  # noqa: F811
) -> None:
    def rehash_and_cut(log: Path, head: Path) -> None:
        lines = _lines(log)
        lines[300] = _edit(lines[300])
        del lines[301:401]
        _rehash_and_rewrite(log, head, lines)
        checkpoints = log.with_name("audit.checkpoints")
        kept = [
            c for c in checkpoints.read_bytes().splitlines(True) if json.loads(c)["count"] < 300
        ]
        checkpoints.write_bytes(b"".join(kept))

    err = await _attack(running, http, rehash_and_cut, "were removed")
    assert "not covered by a signature" in err


async def test_an_edited_entry_stays_caught(
    running: RunningHost,  # noqa: F811
    http: httpx.AsyncClient,  # noqa: F811
) -> None:
    def edit(log: Path, head: Path) -> None:
        lines = _lines(log)
        lines[500] = _edit(lines[500])
        log.write_bytes(b"".join(lines))

    await _attack(running, http, edit, "entry 500 was altered")


async def test_a_dropped_entry_stays_caught(
    running: RunningHost,  # noqa: F811
    http: httpx.AsyncClient,  # noqa: F811
) -> None:
    def drop(log: Path, head: Path) -> None:
        lines = _lines(log)
        del lines[400]
        log.write_bytes(b"".join(lines))

    await _attack(running, http, drop, "entry 400 is missing")


async def test_reordered_entries_stay_caught(
    running: RunningHost,  # noqa: F811
    http: httpx.AsyncClient,  # noqa: F811
) -> None:
    def reorder(log: Path, head: Path) -> None:
        lines = _lines(log)
        lines[600], lines[601] = lines[601], lines[600]
        log.write_bytes(b"".join(lines))

    await _attack(running, http, reorder, "entry 600 is")


async def test_a_forged_checkpoint_is_refused(
    running: RunningHost,  # noqa: F811
    http: httpx.AsyncClient,  # noqa: F811
) -> None:
    # An attacker's own key signs a checkpoint over the forged chain.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ionwall import _checkpoint

    def forge(log: Path, head: Path) -> None:
        lines = _lines(log)
        lines[10] = _edit(lines[10])
        _rehash_and_rewrite(log, head, lines)
        count, last = head.read_text().split()[:2]
        signed = _checkpoint.sign(Ed25519PrivateKey.generate(), int(count), last, "now", 256)
        log.with_name("audit.checkpoints").write_bytes(signed.line())

    await _attack(running, http, forge, "does not carry a valid signature")


async def test_a_copy_verifies_against_the_published_key_only(
    running: RunningHost,  # noqa: F811
    http: httpx.AsyncClient,  # noqa: F811
) -> None:
    _decisions(running, 50)
    data_dir = running.host.config.data_dir
    good = _verify(data_dir, "--public-key", running.ionwall.public_key)
    assert good.returncode == 0, good.stderr
    other = "ed25519:" + "A" * 43
    bad = _verify(data_dir, "--public-key", other)
    assert bad.returncode != 0 and "does not carry a valid signature" in bad.stderr, bad.stderr
    await still_serves(running, http)


def test_a_normal_log_of_a_host_process_verifies(tmp_path: Path) -> None:
    """A real process writes and exits (atexit signs); the CLI verifies it whole."""
    data = tmp_path / "data"
    script = (
        "import sys; from pathlib import Path; from ionwall import Ionwall, CallContext\n"
        "w = Ionwall(Path(sys.argv[1]) / 'ionwall')\n"
        "g = w.gate(None)\n"
        "for i in range(300): g.check(CallContext('s', 't'), 'emit_log:info')\n"
    )
    subprocess.run([sys.executable, "-c", script, str(data)], check=True, timeout=60)
    result = _verify(data)
    assert result.returncode == 0, result.stderr
    assert "entries 0-299 are covered by the signed checkpoint" in result.stdout, result.stdout
