"""The CLI on a full disk and on a read-only data directory: one line, never a traceback.

Real file systems, not a patched ``os.write``: a 1 MiB tmpfs for the full
disk, and a read-only bind mount for the read-only data directory (as root,
``chmod a-w`` stops nothing). Both need ``mount``; where it is refused (not
root, no CAP_SYS_ADMIN), those cases skip saying so. ``RLIMIT_FSIZE`` gives a
file-size limit (EFBIG) without privileges.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IONFLUX = REPO / ".venv" / "bin" / "ionflux"
MANIFEST = REPO / "manifests" / "uppercase.yaml"


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


def _umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a data directory on it fills after a few blocks."""
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) here: a real full disk cannot be made")
    target = tmp_path / "small"
    target.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield target
    finally:
        _umount(target)


@pytest.fixture
def read_only_data(tmp_path: Path) -> Iterator[Path]:
    """A data directory with a published transform, then seen through a read-only bind mount."""
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) here: a read-only bind mount cannot be made")
    source = tmp_path / "source"
    for args in (("publish", str(MANIFEST)), ("token", "issue", "--scope", "execute_graph:x")):
        made = _ionflux(source / "data", *args)
        assert made.returncode == 0, made.stderr
    target = tmp_path / "ro"
    target.mkdir()
    bound = _mount("--bind", str(source), str(target))
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount (needs root): {bound.stderr.strip()}")
    try:
        ro = _mount("-o", "remount,ro,bind", str(target))
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only: {ro.stderr.strip()}")
        probe = target / "probe"
        with pytest.raises(OSError):  # the mount really refuses writes, even root's
            probe.write_text("x")
        yield target / "data"
    finally:
        _umount(target)


def _ionflux(
    data_dir: Path, *args: str, fsize: int | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IONFLUX_")}

    def limit() -> None:
        if fsize is not None:  # Python ignores SIGXFSZ: the write fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(
        [str(IONFLUX), "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        preexec_fn=limit,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *expect: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expect:
        assert text in lines[0], lines[0]
    return lines[0]


def _no_temp_blocks(data_dir: Path) -> None:
    left = [p for p in (data_dir / "blocks").rglob(".tmp-*")]
    assert left == [], f"half-written blocks left behind: {left}"


def _fill(file: Path) -> None:
    """Writes ``file`` until the file system is full."""
    with file.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def _big_file(tmp_path: Path, size: int) -> Path:
    file = tmp_path / "big.bin"
    file.write_bytes(os.urandom(size))
    return file


def test_pod_put_on_a_full_disk_is_one_line_and_leaves_no_partial_block(
    full_disk: Path, tmp_path: Path
) -> None:
    data = full_disk / "data"
    result = _ionflux(data, "pod", "put", str(_big_file(tmp_path, 3 * 1024 * 1024)))
    line = _one_line_error(result, "No space left on device", str(data / "blocks"))
    assert "cannot write block" in line
    _no_temp_blocks(data)


def test_every_command_on_a_full_disk_is_one_line(full_disk: Path, tmp_path: Path) -> None:
    data = full_disk / "data"
    assert _ionflux(data, "publish", str(MANIFEST)).returncode == 0
    _fill(full_disk / "filler")
    failed = 0
    for args in (
        ("pod", "put", str(_big_file(tmp_path, 600 * 1024))),
        ("token", "issue", "--scope", "execute_graph:digest"),
        ("graph", "deploy", str(REPO / "graphs" / "digest.yaml")),
        ("publish", str(REPO / "manifests" / "text-stats.yaml")),
    ):
        result = _ionflux(data, *args)
        if result.returncode == 0:  # it fit in what the filler left: fine, nothing to show
            continue
        failed += 1
        _one_line_error(result, str(data))
    assert failed > 0, "the disk was not full after all"
    _no_temp_blocks(data)


def test_a_file_size_limit_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _ionflux(data, "pod", "ls").returncode == 0  # the data directory exists
    result = _ionflux(data, "pod", "put", str(_big_file(tmp_path, 400_000)), fsize=100_000)
    _one_line_error(result, "File too large", "cannot write block")
    _no_temp_blocks(data)


def test_read_commands_work_on_a_read_only_data_directory(read_only_data: Path) -> None:
    for args in (
        ("runs", "list"),
        ("transforms",),
        ("pod", "ls"),
        ("audit", "verify"),
        ("audit", "tail"),
        ("consent", "list"),
        ("grants", "list"),
    ):
        result = _ionflux(read_only_data, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert "uppercase" in _ionflux(read_only_data, "transforms").stdout


def test_runs_list_works_where_ionwall_never_wrote(tmp_path: Path) -> None:
    # The case: no IONWALL folder yet, and nothing may be created.
    source = tmp_path / "source"
    assert _ionflux(source / "data", "publish", str(MANIFEST)).returncode == 0
    target = tmp_path / "ro"
    target.mkdir()
    if _mount("--bind", str(source), str(target)).returncode != 0:
        pytest.skip("cannot bind-mount (needs root)")
    try:
        if _mount("-o", "remount,ro,bind", str(target)).returncode != 0:
            pytest.skip("cannot remount read-only")
        for args in (("runs", "list"), ("graph", "versions", "digest"), ("transforms",)):
            result = _ionflux(target / "data", *args)
            assert "Traceback" not in result.stderr, result.stderr
            assert result.returncode in (0, 1), result.stderr
        assert _ionflux(target / "data", "runs", "list").stdout.strip() == "no runs recorded"
    finally:
        _umount(target)


def test_up_on_a_read_only_data_directory_is_one_line_naming_it(read_only_data: Path) -> None:
    result = _ionflux(read_only_data, "up", "--http-port", "0")
    _one_line_error(result, str(read_only_data), "read-only")


def test_writes_on_a_read_only_data_directory_are_one_line(
    read_only_data: Path, tmp_path: Path
) -> None:
    result = _ionflux(read_only_data, "pod", "put", str(_big_file(tmp_path, 1000)))
    _one_line_error(result, "Read-only file system", str(read_only_data))
    result = _ionflux(read_only_data, "token", "issue", "--scope", "execute_graph:digest")
    _one_line_error(result, str(read_only_data))


def test_an_unexpected_error_still_shows_its_traceback(tmp_path: Path) -> None:
    # The translation is for the file system and SQLite only: a bug stays visible.
    code = (
        "import sys; from ionflux.cli import main, _app\n"
        "from ionflux.cli._app import error_line\n"
        "assert error_line(KeyError('x'), None) is None\n"
        "assert error_line(OSError(28, 'No space left on device', '/d/f'), None)"
        " == '/d/f: No space left on device (ENOSPC)'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
