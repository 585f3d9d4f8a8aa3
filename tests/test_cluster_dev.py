"""``ionflux dev cluster`` (``just cluster``): the real servers and hosts it starts, their
URLs, and that Ctrl-C stops every one of them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from ionflux.testing.kubo import KuboDaemon


def test_dev_cluster_starts_servers_and_hosts_and_ctrl_c_stops_all(
    tmp_path: Path, kubo: KuboDaemon, built: Path
) -> None:
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ionflux.cli",
            "dev",
            "cluster",
            "--hosts",
            "2",
            "--dir",
            str(tmp_path / "c"),
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "IONFLUX_KUBO_BIN": str(kubo.binary)},
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the cluster did not start"
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        assert info["postgres"].startswith("postgresql://postgres@127.0.0.1:")
        assert info["nats"].startswith("nats://127.0.0.1:") and info["kubo"]
        dirs = {h["data_dir"] for h in info["hosts"]}
        assert len(dirs) == 2
        for host in info["hosts"]:
            assert httpx.get(host["url"] + "/healthz", timeout=10).status_code == 200
            config = json.loads((Path(host["data_dir"]) / "ionflux.yaml").read_text())
            assert config["state"] == {"backend": "postgres", "url": info["postgres"]}
            assert config["store"]["backend"] == "kubo"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode()
        text = out.decode()
        assert all(h["url"] in text for h in info["hosts"]) and info["postgres"] in text
        for host in info["hosts"]:  # every host process is gone
            try:
                os.kill(host["pid"], 0)
                raise AssertionError(f"host {host['pid']} still runs")
            except ProcessLookupError:
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
