"""Start a real Kubo daemon for tests and benchmarks (not a fake: the real ``ipfs``).

``ipfs init --profile=test`` in a temp repo (loopback API on a port Kubo picks,
read back from ``$IPFS_PATH/api``), then ``ipfs daemon --offline``; ready once
``/api/v0/id`` answers. The binary comes from ``$IONFLUX_KUBO_BIN``, else the
cache ``scripts/install_kubo.sh`` builds into, else ``ipfs`` on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

KUBO_VERSION = "v0.41.0"  # keep in step with scripts/install_kubo.sh


def find_kubo() -> Path | None:
    explicit = os.environ.get("IONFLUX_KUBO_BIN")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    built = cache / "ionflux" / f"kubo-{KUBO_VERSION}" / "ipfs"
    if built.is_file():
        return built
    found = shutil.which("ipfs")
    return Path(found) if found else None


class KuboDaemon:
    """One ``ipfs daemon --offline`` on a loopback port chosen by Kubo (the test profile's 0)."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.repo = Path(tempfile.mkdtemp(prefix="ionflux-kubo-"))
        self.env = {**os.environ, "IPFS_PATH": str(self.repo)}
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = ""

    def ipfs(self, *args: str, input: bytes | None = None) -> bytes:
        """Run the ``ipfs`` CLI against this daemon's repo."""
        done = subprocess.run(
            [str(self.binary), *args], env=self.env, input=input, capture_output=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"ipfs {' '.join(args)}: {done.stderr.decode().strip()}")
        return done.stdout

    def start(self) -> KuboDaemon:
        if not (self.repo / "config").exists():
            self.ipfs("init", "--profile=test", "--empty-repo")
        api_file = self.repo / "api"
        api_file.unlink(missing_ok=True)
        log = open(self.repo / "daemon.log", "wb")
        self.proc = subprocess.Popen(
            [str(self.binary), "daemon", "--offline"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "ipfs daemon exited: " + (self.repo / "daemon.log").read_text()[-2000:]
                )
            if api_file.exists():
                addr = api_file.read_text().strip()  # /ip4/127.0.0.1/tcp/PORT
                parts = addr.split("/")
                if len(parts) >= 5:
                    self.api = f"http://{parts[2]}:{parts[4]}"
                    try:
                        if httpx.post(self.api + "/api/v0/id", timeout=2).status_code == 200:
                            return self
                    except httpx.HTTPError:
                        pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("ipfs daemon did not answer /api/v0/id within 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.repo, ignore_errors=True)
