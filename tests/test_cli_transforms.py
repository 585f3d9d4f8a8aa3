"""`ionflux publish | transforms | invoke` as a user runs them: a real process,
JSON on stdout, one clear line on stderr and a non-zero exit on failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import MANIFESTS, REPO

IONFLUX = [sys.executable, "-m", "ionflux.cli"]


def run(data_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IONFLUX, "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        cwd=REPO,
    )


def test_publish_list_invoke(tmp_path: Path, built: Path) -> None:
    published = run(tmp_path, "publish", str(MANIFESTS / "uppercase.yaml"))
    assert published.returncode == 0, published.stderr
    assert published.stdout.startswith("published uppercase@0.1.0 bafkrei")
    listed = run(tmp_path, "transforms", "--json")
    (entry,) = json.loads(listed.stdout)
    assert entry["name"] == "uppercase" and entry["abi"] == "component"
    assert entry["size"] == (built / "uppercase.wasm").stat().st_size
    assert entry["published_at"] > 0  # the same fields as GET /transforms
    out = run(tmp_path, "invoke", "uppercase", "--input", '{"text": "abc"}')
    assert out.returncode == 0 and json.loads(out.stdout) == {"text": "ABC"}
    piped = run(tmp_path, "invoke", entry["cid"], "--input", "-", stdin='{"text": "x"}')
    assert json.loads(piped.stdout) == {"text": "X"}


def test_errors_are_one_line_and_exit_non_zero(tmp_path: Path, built: Path) -> None:
    run(tmp_path, "publish", str(MANIFESTS / "uppercase.yaml"))
    bad_json = run(tmp_path, "invoke", "uppercase", "--input", "{nope")
    assert bad_json.returncode == 1
    assert bad_json.stderr.startswith("error: input is not JSON")
    assert len(bad_json.stderr.strip().splitlines()) == 1
    unknown = run(tmp_path, "invoke", "missing", "--input", "{}")
    assert unknown.returncode == 1 and "no published transform 'missing'" in unknown.stderr
    needs_consent = run(tmp_path, "publish", str(MANIFESTS / "pod-store.yaml"))
    assert needs_consent.returncode == 0
    refused = run(tmp_path, "invoke", "pod-store", "--input", '{"path": "a/b", "data": 1}')
    assert refused.returncode == 1 and "ionflux consent approve" in refused.stderr


def test_publish_with_wrong_module_names_the_cid(tmp_path: Path, built: Path) -> None:
    other = built / "text-stats.wasm"
    out = run(tmp_path, "publish", str(MANIFESTS / "uppercase.yaml"), str(other))
    assert out.returncode == 1
    assert "does not match its CID" in out.stderr
    assert run(tmp_path, "transforms", "--json").stdout.strip() == "[]"


def test_help_is_there_for_a_new_user(tmp_path: Path) -> None:
    out = run(tmp_path, "--help")
    assert out.returncode == 0
    for command in ("publish", "transforms", "invoke", "consent", "graph", "pod", "up"):
        assert command in out.stdout
