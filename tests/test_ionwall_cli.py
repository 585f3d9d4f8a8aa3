"""``ionflux consent|grants|audit|token`` through click's runner and a real process."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from ionflux.cli import main

from ionwall import ConsentRequired, Ionwall

REPO = Path(__file__).resolve().parents[1]
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
SCOPES = ["read_pod_data:reports/*", "publish_nats_topic:ionflux.digest.*"]


def _request(data_dir: Path) -> str:
    with Ionwall(data_dir / "ionwall") as wall:
        try:
            wall.authorize(CID, "digest", "1.0.0", SCOPES)
        except ConsentRequired as exc:
            return exc.request.id
    raise AssertionError("expected a consent request")


def _run(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--data-dir", str(data_dir), *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_consent_flow(tmp_path: Path) -> None:
    consent_id = _request(tmp_path)
    code, out, _ = _run(tmp_path, "consent", "list")
    assert code == 0 and consent_id in out and "pending" in out
    code, out, _ = _run(tmp_path, "consent", "show", consent_id)
    assert code == 0 and "read data from your IONPOD" in out
    code, out, _ = _run(
        tmp_path, "consent", "approve", consent_id, "--expires", "2d",
        "--only", "publish_nats_topic:ionflux.**",
    )  # fmt: skip
    assert code == 0, out
    assert "publish_nats_topic:ionflux.digest.*" in out and "read_pod_data" not in out
    grant_id = out.split("grant ")[1].split()[0]
    code, out, _ = _run(tmp_path, "grants", "list", "--json")
    assert [g["id"] for g in json.loads(out)] == [grant_id]
    code, out, _ = _run(tmp_path, "grants", "revoke", grant_id)
    assert code == 0 and f"revoked {grant_id}" in out
    code, out, _ = _run(tmp_path, "grants", "list")
    assert out.strip() == "no active grants"


def test_consent_errors_exit_1_with_one_line(tmp_path: Path) -> None:
    code, _, err = _run(tmp_path, "consent", "approve", "c-nope")
    assert (
        code == 1
        and err.strip() == "error: no consent request 'c-nope' (see `ionflux consent list`)"
    )
    consent_id = _request(tmp_path)
    assert _run(tmp_path, "consent", "deny", consent_id)[0] == 0
    code, _, err = _run(tmp_path, "consent", "approve", consent_id)
    assert code == 1 and "already denied" in err
    code, _, err = _run(tmp_path, "consent", "approve", consent_id, "--only", "nope:x")
    assert code == 2 and "unknown action 'nope'" in err
    code, _, err = _run(tmp_path, "consent", "approve", consent_id, "--expires", "soon")
    assert code == 2 and "cannot read duration" in err
    code, _, err = _run(tmp_path, "grants", "revoke", "g-nope")
    assert code == 1 and "no grant 'g-nope'" in err


def test_token_issue_and_verify(tmp_path: Path) -> None:
    code, token, err = _run(
        tmp_path, "token", "issue", "--scope", "execute_graph:digest", "--expires", "1h"
    )
    assert code == 0 and token.count(".") == 2 and "grant g-" in err
    code, out, _ = _run(tmp_path, "token", "verify", token.strip())
    assert code == 0 and json.loads(out)["scopes"] == ["execute_graph:digest"]
    code, _, err = _run(tmp_path, "token", "verify", token.strip(), "--scope", "execute_graph:x")
    assert code == 1 and err.startswith("refused: denied execute_graph:x")
    code, _, err = _run(tmp_path, "token", "verify", token.strip()[:-4] + "AAAA")
    assert code == 1 and "refused:" in err


def test_audit_tail_and_verify_names_the_entry(tmp_path: Path) -> None:
    with Ionwall(tmp_path / "ionwall") as wall:
        from ionwall import CallContext

        gate = wall.gate(None)
        for i in range(3):
            gate.check(CallContext(CID, "digest", "run-1", f"n{i}"), "emit_log:info")
    code, out, _ = _run(tmp_path, "audit", "tail", "-n", "2")
    assert code == 0 and out.count("DENY") == 2 and "#2" in out
    code, out, _ = _run(tmp_path, "audit", "verify")
    assert code == 0 and "intact: 3 entries" in out
    log = tmp_path / "ionwall" / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"n1", b"n9")
    log.write_bytes(b"".join(lines))
    code, _, err = _run(tmp_path, "audit", "verify")
    assert code == 1 and "entry 1 was altered" in err


def test_real_process(tmp_path: Path) -> None:
    exe = REPO / ".venv" / "bin" / "ionflux"
    if not exe.exists():
        pytest.skip("no .venv/bin/ionflux (run scripts/bootstrap.sh)")
    env = {**os.environ, "IONFLUX_DATA_DIR": str(tmp_path)}
    consent_id = _request(tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(exe), *args], env=env, capture_output=True, text=True, timeout=60
        )

    shown = run("consent", "show", consent_id)
    assert shown.returncode == 0, shown.stderr
    assert "Allow? ionflux consent approve" in shown.stdout
    approved = run("consent", "approve", consent_id)
    assert approved.returncode == 0 and "approved" in approved.stdout
    again = run("consent", "approve", consent_id)
    assert again.returncode == 1 and "already approved" in again.stderr
    assert "Traceback" not in again.stderr
