"""The audit log: hash chain, tamper detection naming the entry, masking, concurrency."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ionwall import MASK, AuditLog, Masker
from ionwall._audit import _canonical, _fast_canonical


def _log(tmp_path: Path, n: int, masker: Masker | None = None) -> AuditLog:
    log = AuditLog(tmp_path / "audit", masker)
    for i in range(n):
        log.append(
            subject=f"bafy{i}",
            transform="digest",
            scope=f"read_pod_data:reports/{i}.json",
            allowed=i % 2 == 0,
            reason="granted by g-1" if i % 2 == 0 else "no grant",
            run_id="run-1",
            node_id=f"n{i}",
            grant_id="g-1",
        )
    return log


def _lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def _rewrite(log: AuditLog, lines: list[bytes]) -> None:
    log.path.write_bytes(b"".join(lines))


def test_intact_log_verifies(tmp_path: Path) -> None:
    log = _log(tmp_path, 5)
    report = log.verify()
    assert report.ok and report.entries == 5 and report.index is None
    assert "5 entries" in str(report)
    assert [e.index for e in log.tail(3)] == [2, 3, 4]
    assert AuditLog(tmp_path / "empty").verify().ok


def test_edited_entry_is_named(tmp_path: Path) -> None:
    log = _log(tmp_path, 6)
    lines = _lines(log)
    lines[3] = lines[3].replace(b'"deny"', b'"allow"')
    _rewrite(log, lines)
    report = log.verify()
    assert not report.ok and report.index == 3
    assert "entry 3 was altered" in str(report)


def test_edited_and_rehashed_entry_breaks_the_next_link(tmp_path: Path) -> None:
    log = _log(tmp_path, 6)
    lines = _lines(log)
    obj = json.loads(lines[2])
    obj.pop("hash")
    obj["decision"] = "allow" if obj["decision"] == "deny" else "deny"
    obj["hash"] = hashlib.sha256(_canonical(obj)).hexdigest()
    lines[2] = json.dumps(obj).encode() + b"\n"
    _rewrite(log, lines)
    report = log.verify()
    assert report.index == 3 and "does not follow entry 2" in str(report)


def test_missing_entry_is_named(tmp_path: Path) -> None:
    log = _log(tmp_path, 6)
    lines = _lines(log)
    del lines[2]
    _rewrite(log, lines)
    report = log.verify()
    assert report.index == 2 and "entry 2 is missing" in str(report)


def test_inserted_or_reordered_entry_is_named(tmp_path: Path) -> None:
    log = _log(tmp_path, 6)
    lines = _lines(log)
    lines.insert(4, lines[1])
    _rewrite(log, lines)
    report = log.verify()
    assert report.index == 4 and "out of place" in str(report)

    lines = _lines(log)
    del lines[4]
    lines[1], lines[2] = lines[2], lines[1]
    _rewrite(log, lines)
    assert log.verify().index == 1


def test_truncated_in_the_middle_of_an_entry(tmp_path: Path) -> None:
    log = _log(tmp_path, 4)
    data = log.path.read_bytes()
    log.path.write_bytes(data[: len(data) - 20])
    report = log.verify()
    assert report.index == 3 and "entry 3 is truncated" in str(report)


def test_whole_entries_cut_off_the_end(tmp_path: Path) -> None:
    log = _log(tmp_path, 5)
    _rewrite(log, _lines(log)[:3])
    report = log.verify()
    assert not report.ok and report.index == 3
    assert "truncated: entry 3 is missing (5 entries were written, 3 remain)" in str(report)
    log.path.write_bytes(b"")
    assert log.verify().index == 0


def test_garbage_line_is_named(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    lines = _lines(log)
    lines[1] = b"hello\n"
    _rewrite(log, lines)
    assert "entry 1 is not valid JSON" in str(log.verify())


def test_masking_of_secret_values(tmp_path: Path) -> None:
    masker = Masker(secret_values=["hunter2", "sk-live-123"])
    log = AuditLog(tmp_path / "a", masker)
    log.append(
        subject="bafy",
        transform="t",
        scope="http_fetch:hunter2.example.com",
        allowed=False,
        reason="token sk-live-123 refused",
    )
    raw = log.path.read_text()
    assert "hunter2" not in raw and "sk-live-123" not in raw
    assert f"http_fetch:{MASK}.example.com" in raw
    assert log.verify().ok


def test_masker_for_run_logs() -> None:
    masker = Masker(secret_values=["s3cr3t"])
    record = {
        "user": "ada",
        "password": "x",
        "X-Api-Key": "k",
        "nested": [{"db_password": "y", "note": "uses s3cr3t"}],
        "Authorization": "Bearer abc",
        "count": 3,
    }
    assert masker.value(record) == {
        "user": "ada",
        "password": MASK,
        "X-Api-Key": MASK,
        "nested": [{"db_password": MASK, "note": f"uses {MASK}"}],
        "Authorization": MASK,
        "count": 3,
    }
    assert Masker().text("nothing to hide") == "nothing to hide"


@settings(max_examples=200, deadline=None)
@given(st.text(), st.one_of(st.none(), st.text()), st.integers(min_value=0, max_value=2**40))
def test_property_fast_encoding_is_canonical(text: str, maybe: str | None, index: int) -> None:
    body = {
        "decision": "allow", "grant_id": maybe, "index": index, "node_id": maybe,
        "prev": "0" * 64, "reason": text, "run_id": None, "scope": text, "subject": text,
        "time": "2026-01-01T00:00:00Z", "transform": text,
    }  # fmt: skip
    assert _fast_canonical(body) == _canonical(body)


def test_appends_from_threads_stay_one_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a")

    def write(t: int) -> None:
        for i in range(50):
            log.append(
                subject=f"s{t}", transform="t", scope="emit_log:info", allowed=True, reason=str(i)
            )

    threads = [threading.Thread(target=write, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = log.verify()
    assert report.ok and report.entries == 300


def test_appends_from_processes_stay_one_chain(tmp_path: Path) -> None:
    directory = tmp_path / "a"
    log = AuditLog(directory)
    log.append(subject="s", transform="t", scope="emit_log:info", allowed=True, reason="first")
    script = (
        "import sys; from pathlib import Path; from ionwall import AuditLog\n"
        "log = AuditLog(Path(sys.argv[1]))\n"
        "for i in range(100): log.append(subject='p', transform='t', scope='emit_log:info',"
        " allowed=True, reason=str(i))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(directory)]) for _ in range(3)]
    for i in range(100):  # this process keeps appending meanwhile, with a stale view
        log.append(subject="s", transform="t", scope="emit_log:info", allowed=False, reason=str(i))
    for p in procs:
        assert p.wait(timeout=60) == 0
    report = log.verify()
    assert report.ok, report
    assert report.entries == 401


def test_append_after_a_damaged_last_entry_refuses(tmp_path: Path) -> None:
    # A whole last line that does not verify is not a torn write: nothing is cut.
    from ionwall import AuditError

    log = _log(tmp_path, 2)
    _rewrite(log, [*_lines(log), b"not an entry\n"])
    before = log.path.read_bytes()
    fresh = AuditLog(tmp_path / "audit")
    failures: list[AuditError | None] = []
    fresh.watch_writes(failures.append)
    with pytest.raises(AuditError, match="ionflux audit verify"):
        _append(fresh, "refused")
    assert log.path.read_bytes() == before
    # Damage, not the disk: no free space mends it (the health check knows).
    assert len(failures) == 1 and failures[0] is not None
    assert not isinstance(failures[0].__cause__, OSError)


def _torn_files(log: AuditLog) -> list[Path]:
    return sorted(log.path.parent.glob("audit.jsonl.torn-*"))


def test_a_torn_last_line_is_cut_by_the_next_append(tmp_path: Path) -> None:
    # The partial line a failed write leaves (a full disk): it used to refuse
    # every append for good, so every scoped call was denied until the file was
    # edited by hand.
    log = _log(tmp_path, 3)
    log.close()
    with log.path.open("ab") as f:
        f.write(b'{"decision":"allow","grant_id":"g-1","ind')
    damaged = AuditLog(tmp_path / "audit")
    report = damaged.verify()
    assert not report.ok and report.index == 3 and "truncated" in str(report)
    assert damaged.path.read_bytes().endswith(b"ind")  # reading changed nothing
    _append(damaged, "after the torn line")
    report = damaged.verify()
    assert report.ok, report
    assert report.entries == 5 and report.repairs == (3,)
    assert "torn last line(s) were cut" in str(report)
    cut = damaged.tail(2)[0]
    assert cut.decision == "torn-tail-cut" and cut.index == 3
    assert "a torn last line of 41 bytes" in cut.reason and "after entry 2" in cut.reason
    (side,) = _torn_files(damaged)
    assert side.name in cut.reason
    assert side.read_bytes() == b'{"decision":"allow","grant_id":"g-1","ind'
    assert side.stat().st_mode & 0o777 == 0o600
    assert damaged.tail(1)[0].reason == "after the torn line"


def test_a_torn_line_that_is_the_whole_log_is_cut(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit")
    log.path.write_bytes(b'{"decis')
    _append(log, "first")
    report = log.verify()
    assert report.ok and report.entries == 2 and report.repairs == (0,), report


def test_a_middle_edit_still_fails_verify_after_a_repair(tmp_path: Path) -> None:
    log = _log(tmp_path, 4)
    with log.path.open("ab") as f:
        f.write(b'{"torn')
    fresh = AuditLog(tmp_path / "audit")
    _append(fresh, "repaired")
    assert fresh.verify().ok
    lines = _lines(fresh)
    lines[1] = lines[1].replace(b"no grant", b"granted!")
    _rewrite(fresh, lines)
    report = fresh.verify()
    assert not report.ok and report.index == 1, report
    assert "entry 1 was altered" in str(report)


def test_a_torn_line_after_an_edited_entry_is_not_cut(tmp_path: Path) -> None:
    # Whoever edits an entry and then appends a partial line does not get the
    # edit laundered by a repair: the writer refuses, verify names the entry.
    from ionwall import AuditError

    log = _log(tmp_path, 4)
    lines = _lines(log)
    lines[2] = lines[2].replace(b"granted by g-1", b"granted by g-2")
    _rewrite(log, [*lines, b'{"torn'])
    before = log.path.read_bytes()
    fresh = AuditLog(tmp_path / "audit")
    with pytest.raises(AuditError, match="do not verify"):
        _append(fresh, "refused")
    assert log.path.read_bytes() == before and not _torn_files(log)
    assert fresh.verify().index == 2


def test_a_torn_line_below_the_last_checkpoint_is_not_cut(tmp_path: Path) -> None:
    # Signed entries cut off and a partial line put in their place: not a torn
    # write (a writer never signs what it has not written).
    from ionwall import AuditError

    log = _log(tmp_path, 5)
    log.close()  # signs a checkpoint over the 5 entries
    _rewrite(log, [*_lines(log)[:3], b'{"torn'])
    fresh = AuditLog(tmp_path / "audit")
    with pytest.raises(AuditError, match="checkpoint covers 5 entries"):
        _append(fresh, "refused")
    assert not fresh.verify().ok


def test_a_partial_write_is_cut_by_the_next_writer_of_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk takes part of a write. The head is marked, so a writer that
    # did not see the failure (another process: its own AuditLog here) cuts the
    # torn line instead of appending after it (which would leave it in the
    # middle of the chain, where verify fails for good).
    import os

    from ionwall import AuditError

    a = _log(tmp_path, 2)
    b = AuditLog(tmp_path / "audit")
    _append(b, "b knows the end")
    health: list[AuditError | None] = []
    a.watch_writes(health.append)
    real_write = os.write

    def half(fd: int, data: bytes) -> int:  # what a nearly full disk does (stands in for it)
        return real_write(fd, bytes(data)[: len(data) // 2])

    monkeypatch.setattr(os, "write", half)
    with pytest.raises(AuditError, match="short write"):
        _append(a, "half of me lands")
    monkeypatch.setattr(os, "write", real_write)
    assert health and health[-1] is not None and "short write" in str(health[-1])
    assert isinstance(health[-1].__cause__, OSError)
    assert not a.path.read_bytes().endswith(b"\n")
    _append(b, "b again")
    report = b.verify()
    assert report.ok and report.entries == 5 and report.repairs == (3,), report
    _append(a, "a again")
    assert health[-1] is None  # a write succeeded again
    report = a.verify()
    assert report.ok and report.entries == 6, report


def _append(log: AuditLog, reason: str) -> None:
    log.append(subject="s", transform="t", scope="emit_log:info", allowed=True, reason=reason)


def test_a_writer_that_died_between_head_and_log_leaves_one_chain(tmp_path: Path) -> None:
    # The head is written before the log. A writer killed between the two
    # leaves a head counting one entry more than the log holds; the next
    # writer must notice that the head is not the one it wrote, re-read the
    # log's true end and chain onto that (not onto the head's count).
    log = _log(tmp_path, 3)
    count, _, signed = log.head_path.read_text().split()
    dead = f"{int(count) + 1:020d} {'f' * 64} {signed}\n"  # the dead writer's head
    log.head_path.write_text(dead)
    assert not log.verify().ok  # an entry the head counts is missing, until the next append
    _append(log, "after the dead writer")
    report = log.verify()
    assert report.ok, report
    assert report.entries == 4
    assert json.loads(_lines(log)[-1])["index"] == 3


def test_a_failed_write_leaves_the_head_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from ionwall import AuditError

    log = _log(tmp_path, 2)
    head_before = log.head_path.read_bytes()
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(AuditError, match="No space left"):
        _append(log, "lost")
    assert log.head_path.read_bytes() == head_before
    assert log.verify().ok
    monkeypatch.setattr(os, "write", real_write)
    _append(log, "after the disk has room again")
    report = log.verify()
    assert report.ok and report.entries == 3, report


def test_a_log_that_never_had_an_entry_verifies(tmp_path: Path) -> None:
    # The head is mapped (zero-filled) when the log is opened, before any append.
    log = AuditLog(tmp_path / "audit")
    assert log.head_path.stat().st_size > 0
    report = log.verify()
    assert report.ok and report.entries == 0, report


# -- signed checkpoints: a re-hashed chain fails ---------------------------------


def _rehash(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    """What an attacker without the key can do: renumber, re-chain, re-hash."""
    prev = "0" * 64
    out = []
    for i, raw in enumerate(lines):
        obj = json.loads(raw)
        obj.pop("hash")
        obj["index"], obj["prev"] = i, prev
        prev = hashlib.sha256(_canonical(obj)).hexdigest()
        out.append(_canonical({**obj, "hash": prev}) + b"\n")
    return out, len(out), prev


def _checkpoint_counts(directory: Path) -> list[int]:
    return [
        json.loads(x)["count"] for x in (directory / "audit.checkpoints").read_bytes().splitlines()
    ]


def _forge(log: AuditLog, lines: list[bytes]) -> None:
    forged, count, last = _rehash(lines)
    _rewrite(log, forged)
    log.head_path.write_text(f"{count:020d} {last} {count:020d}\n")


def _rehash_attack(log: AuditLog, at: int = 300, drop: int = 100) -> None:
    """The issue's attack: edit an entry, drop ``drop`` after it, re-hash, rewrite the head."""
    lines = _lines(log)
    lines[at] = lines[at].replace(b'"deny"', b'"allow"').replace(b'"no grant"', b'"granted"')
    del lines[at + 1 : at + 1 + drop]
    _forge(log, lines)


def test_a_closed_log_is_covered_by_a_signature(tmp_path: Path) -> None:
    log = _log(tmp_path, 600)
    log.close()
    report = AuditLog(tmp_path / "audit").verify()
    assert report.ok and report.entries == 600 and report.signed == 600, report
    assert "entries 0-599 are covered by the signed checkpoint" in str(report)
    # every 256 entries, and at close
    counts = _checkpoint_counts(tmp_path / "audit")
    assert counts == [256, 512, 600]


def test_entries_after_the_last_checkpoint_are_reported_as_only_hash_chained(
    tmp_path: Path,
) -> None:
    log = _log(tmp_path, 300)  # still open: 256 signed, 44 not yet
    report = log.verify()
    assert report.ok and report.signed == 256, report
    assert "entries 256-299 are only hash-chained" in str(report)


def test_the_rehash_attack_fails_naming_the_first_entry_after_the_last_checkpoint(
    tmp_path: Path,
) -> None:
    log = _log(tmp_path, 1000)
    log.close()
    assert AuditLog(tmp_path / "audit").verify().ok
    _rehash_attack(log, at=300, drop=100)
    # the forged chain is consistent: only the signature can tell
    report = AuditLog(tmp_path / "audit").verify()
    assert not report.ok, report
    assert report.index == 256 and report.signed == 256, report
    assert "re-hashed" in str(report) and "entry 256 is the first" in str(report)


def test_the_rehash_attack_with_the_checkpoints_after_it_removed_fails(tmp_path: Path) -> None:
    log = _log(tmp_path, 1000)
    log.close()
    _rehash_attack(log, at=300, drop=100)
    checkpoints = tmp_path / "audit" / "audit.checkpoints"
    checkpoints.write_bytes(checkpoints.read_bytes().splitlines(keepends=True)[0])  # keep 256
    fresh = AuditLog(tmp_path / "audit")
    report = fresh.verify()
    assert not report.ok and report.index == 256, report
    assert "were removed" in str(report)
    # and the host does not sign the forged chain when it writes on
    for i in range(300):
        _append(fresh, f"later {i}")
    fresh.close()
    report = AuditLog(tmp_path / "audit").verify()
    assert not report.ok and report.index == 256, report


def test_a_checkpoint_signed_with_another_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ionwall import _checkpoint

    log = _log(tmp_path, 1000)
    log.close()
    _rehash_attack(log)
    forged = _checkpoint.sign(Ed25519PrivateKey.generate(), 900, "f" * 64, "now", 256)
    (tmp_path / "audit" / "audit.checkpoints").write_bytes(forged.line())
    report = AuditLog(tmp_path / "audit").verify()
    assert not report.ok and "does not carry a valid signature" in str(report), report


def test_a_tail_cut_off_after_the_last_checkpoint_is_reported(tmp_path: Path) -> None:
    log = _log(tmp_path, 600)
    log.close()
    lines = _lines(log)[:550]  # cut back below the close checkpoint, head rewritten to match
    _forge(log, lines)
    report = AuditLog(tmp_path / "audit").verify()
    assert not report.ok and report.index == 550, report
    assert "truncated" in str(report)


def test_a_quiet_log_is_signed_shortly_after_its_last_append(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a", checkpoint_after_s=0.05)
    for i in range(3):
        _append(log, str(i))
    checkpoints = tmp_path / "a" / "audit.checkpoints"
    _wait_for(lambda: checkpoints.stat().st_size > 0)
    report = log.verify()
    assert report.ok and report.signed == 3, report


def _wait_for(condition: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.01)  # polling a condition with a generous bound


def test_two_writer_processes_share_one_signed_chain(tmp_path: Path) -> None:
    directory = tmp_path / "a"
    log = AuditLog(directory, checkpoint_every=16)
    script = (
        "import sys; from pathlib import Path; from ionwall import AuditLog\n"
        "log = AuditLog(Path(sys.argv[1]), checkpoint_every=16)\n"
        "for i in range(200): log.append(subject='p', transform='t', scope='emit_log:info',"
        " allowed=True, reason=str(i))\n"
        "log.close()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(directory)]) for _ in range(2)]
    for i in range(200):
        _append(log, f"parent {i}")
    for p in procs:
        assert p.wait(timeout=60) == 0
    log.close()
    report = AuditLog(directory, checkpoint_every=16).verify()
    assert report.ok and report.entries == 600 and report.signed == 600, report
    counts = _checkpoint_counts(directory)
    assert counts == sorted(set(counts)) and len(counts) >= 600 // 16 - 2
    _rehash_attack(AuditLog(directory, checkpoint_every=16), at=100, drop=100)
    report = AuditLog(directory, checkpoint_every=16).verify()
    assert not report.ok and report.index is not None and report.index <= 100, report
