"""The README's demo command, end to end in a real process: publish, invoke,
consent, a graph over a nats-server the host starts itself, the audit log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_demo_runs_twice(tmp_path: Path, built: Path) -> None:
    for attempt in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "ionflux.cli", "--data-dir", str(tmp_path), "demo"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert '{"text":"HELLO, IONFLUX"}' in out
        assert "WEEKLY NOTES: 4 words in 2 lines" in out
        assert '"overall_status": "success"' in out
        assert "audit log intact" in out
        if attempt == 0:
            assert "write_pod_data:private/keys.json: not covered by grant" in out
        else:
            assert "already granted earlier" in out
