"""``ionflux up --workers N``: more host processes on the same listening socket.

A host is one Python process: its event loop and its share of the GIL bound
what it serves. With N workers, the first process (the one the user started)
binds the HTTP socket, starts the nats-server when it owns one, and then
starts N-1 more ``ionflux up`` processes that inherit the socket (the kernel
hands each new connection to whichever process accepts it first) and join
the same NATS queue group. All share the data directory: the registry, the
graph versions and the run history are SQLite databases in WAL mode,
IONWALL's grant store and audit log take their own locks, the pod is
content-addressed. Only the first process runs the scheduled triggers.

Each worker dies with the first process (``PR_SET_PDEATHSIG``); a worker that
exits on its own is started again after a second. Stopping the first process
stops the workers, each draining its runs in flight.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .._process import die_with_parent
from ..config import Config

log = logging.getLogger("ionflux.up")

RESTART_DELAY_S = 1.0


class Workers:
    def __init__(
        self,
        config: Config,
        sock: socket.socket,
        nats_url: str,
        *,
        drain_timeout: float,
        require_token: bool,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self.dir = config.data_dir / "workers"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.config_file = self.dir / "config.json"
        # The first process's configuration exactly (command-line overrides too).
        # It may hold secret values (ionwall.secret_values): readable by the owner only.
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an older file keeps its mode otherwise
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(config.model_dump(mode="json")))
        self.config = config
        self.fd = sock.fileno()
        os.set_inheritable(self.fd, True)
        self.nats_url = nats_url
        self.drain_timeout = drain_timeout
        self.require_token = require_token
        self.procs: list[subprocess.Popen[bytes]] = []
        # The first process's stop: set by its signal handler at once, so a worker
        # that a Ctrl-C (sent to the whole process group) stopped is not restarted.
        self._stop = stopping or asyncio.Event()
        self._watch: asyncio.Task[None] | None = None

    def _args(self) -> list[str]:
        args = [
            sys.executable,
            "-c",
            "from ionflux.cli import main; main()",
            "--config",
            str(self.config_file),
            "--data-dir",
            str(self.config.data_dir),
            "up",
            "--worker-fd",
            str(self.fd),
            "--nats-url",
            self.nats_url,
            "--drain-timeout",
            str(self.drain_timeout),
        ]
        if not self.require_token:
            args.append("--no-auth-management")
        return args

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self._args(),
            pass_fds=(self.fd,),
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )

    async def start(self, timeout: float = 60.0) -> None:
        """Starts the workers and waits until each serves (its ready file exists)."""
        for _ in range(self.config.http.workers - 1):
            self.procs.append(self._spawn())
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            while not ready_file(self.dir, proc.pid).exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {proc.pid} exited with {proc.returncode} at start")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {proc.pid} did not start within {timeout:.0f}s")
                await asyncio.sleep(0.05)
        self._watch = asyncio.get_running_loop().create_task(self._restart_dead())

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def _restart_dead(self) -> None:
        while not self.stopping:
            await asyncio.sleep(0.5)
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None and not self.stopping:
                    log.error(
                        "worker %d exited with %s; starting another", proc.pid, proc.returncode
                    )
                    ready_file(self.dir, proc.pid).unlink(missing_ok=True)
                    await asyncio.sleep(RESTART_DELAY_S)
                    if not self.stopping:
                        self.procs[i] = self._spawn()

    def signal_stop(self) -> None:
        """Tells every worker to drain and stop (they do so alongside this process)."""
        self._stop.set()
        if self._watch is not None:
            self._watch.cancel()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    async def wait(self) -> None:
        """Waits for the workers to stop (their drain timeout and a margin), then kills."""
        deadline = time.monotonic() + self.drain_timeout + 10
        for proc in self.procs:
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                log.error("worker %d did not stop; killing it", proc.pid)
                proc.kill()
                proc.wait()
            ready_file(self.dir, proc.pid).unlink(missing_ok=True)


def ready_file(directory: Path, pid: int) -> Path:
    return directory / f"{pid}.ready"
