"""``ionflux pod``: the commands, end to end on a temp data dir (local backend)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from ionflux.cli._pod import pod
from ionflux.store import CHUNK_SIZE, cid_for_bytes

Run = Callable[..., Result]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.setenv("IONFLUX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("IONFLUX_CONFIG", raising=False)
    runner = CliRunner()

    def invoke(*args: str, input: bytes | None = None) -> Result:
        return runner.invoke(pod, list(args), input=input, catch_exceptions=False)

    return invoke


def test_put_get_round_trip(run: Run, tmp_path: Path) -> None:
    data = os.urandom(CHUNK_SIZE + 10)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    put = run("put", str(src))
    assert put.exit_code == 0
    cid = put.stdout.strip()
    assert cid == cid_for_bytes(data)
    out = tmp_path / "out.bin"
    assert run("get", cid, "-o", str(out)).exit_code == 0
    assert out.read_bytes() == data
    assert run("get", cid).stdout_bytes == data


def test_put_from_stdin_and_pins(run: Run) -> None:
    cid = run("put", "-", "--pin", input=b"hello").stdout.strip()
    assert cid == cid_for_bytes(b"hello")
    assert run("ls").stdout.split() == [cid]
    assert run("unpin", cid).exit_code == 0
    assert run("ls").stdout.split() == []
    assert run("pin", cid).exit_code == 0
    assert run("ls").stdout.split() == [cid]


def test_export_import(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = run("put", "-", input=b"x" * (3 * CHUNK_SIZE)).stdout.strip()
    car = tmp_path / "x.car"
    assert run("export", cid, "-o", str(car)).exit_code == 0
    monkeypatch.setenv("IONFLUX_DATA_DIR", str(tmp_path / "other"))
    assert run("import", str(car)).stdout.split() == [cid]
    assert run("get", cid).stdout_bytes == b"x" * (3 * CHUNK_SIZE)


@pytest.mark.parametrize(
    "args, message",
    [
        (("get", "nonsense"), "invalid CID 'nonsense'"),
        (("get", cid_for_bytes(b"absent")), "no block"),
        (("unpin", cid_for_bytes(b"absent")), "is not pinned"),
    ],
)
def test_errors_are_one_line_and_exit_1(run: Run, args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_failed_get_leaves_no_file(run: Run, tmp_path: Path) -> None:
    cid = run("put", "-", input=b"y" * 5000).stdout.strip()
    out = tmp_path / "out.bin"
    result = run("get", cid, "-o", str(out), "--max-size", "100")
    assert result.exit_code == 1 and "limit of 100" in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.bin*"))
