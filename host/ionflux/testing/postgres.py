"""Start a real PostgreSQL server for tests, benchmarks and ``ionflux dev cluster``.

Debian's PostgreSQL 15 (``/usr/lib/postgresql/15/bin``, else the newest under
``/usr/lib/postgresql``, else ``initdb`` on PATH; ``$IONFLUX_PG_BIN`` names the
directory explicitly). ``initdb`` refuses to run as root, so when we are root
every server command runs as the unprivileged ``postgres`` user
(``runuser -u postgres --``) on a data directory that user owns. The server
listens on a free loopback port only, its socket in the temp directory
(``-k DIR``), trust authentication (loopback, a throwaway cluster), fsync off.

    server = PostgresServer().start()
    url = server.create_database("t1")   # postgresql://postgres@127.0.0.1:PORT/t1
    ...
    server.stop()                        # and removes the directory
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresServer", "find_postgres_bin", "free_port"]

_RUN_AS = "postgres"


def find_postgres_bin() -> Path | None:
    """The directory holding ``initdb``/``pg_ctl``, or None when PostgreSQL is not installed."""
    explicit = os.environ.get("IONFLUX_PG_BIN")
    if explicit:
        return Path(explicit)
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted(
            (p for p in debian.iterdir() if (p / "bin" / "initdb").is_file()),
            key=lambda p: int(p.name) if p.name.isdigit() else 0,
        )
        if (debian / "15" / "bin" / "initdb").is_file():
            return debian / "15" / "bin"
        if versions:
            return versions[-1] / "bin"
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port() -> int:
    """A loopback TCP port free at the time of asking."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temp directory, on a loopback port, for as long as it runs."""

    def __init__(
        self, bin_dir: Path | None = None, directory: Path | None = None, port: int | None = None
    ) -> None:
        found = bin_dir or find_postgres_bin()
        if found is None:
            raise RuntimeError(
                "PostgreSQL is not installed: run scripts/bootstrap.sh "
                "(apt-get install postgresql) or set IONFLUX_PG_BIN"
            )
        self.bin_dir = found
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="ionflux-pg-"))
        self.data = self.directory / "data"
        self.socket_dir = self.directory / "sock"
        self.log = self.directory / "server.log"
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.user = "postgres"
        self._as_other = os.geteuid() == 0
        self.running = False

    # -- commands -------------------------------------------------------------

    def _cmd(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin_dir / tool), *args]
        if self._as_other:
            return ["runuser", "-u", _RUN_AS, "--", *command]
        return command

    def _run(self, tool: str, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            self._cmd(tool, *args), capture_output=True, text=True, timeout=timeout, cwd="/"
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)}: {(done.stderr or done.stdout).strip()}")
        return done.stdout

    def _chown(self, path: Path) -> None:
        if self._as_other:
            shutil.chown(path, user=_RUN_AS, group=_RUN_AS)

    # -- life cycle -----------------------------------------------------------

    def start(self) -> PostgresServer:
        """initdb (the first time), then ``pg_ctl start -w``: back once it accepts connections."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._chown(self.directory)
        self.socket_dir.mkdir(exist_ok=True)
        self._chown(self.socket_dir)
        if not (self.data / "PG_VERSION").exists():
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                self.user,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
        options = (
            f"-p {self.port} -k {self.socket_dir} -h {self.host} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200 -c shared_buffers=64MB"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self.running = True
        return self

    def stop(self, *, remove: bool = True) -> None:
        """``pg_ctl stop -m fast``; removes the temp directory unless told not to (or not ours)."""
        if self.running:
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
            except (RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", timeout=60)
            self.running = False
        if remove and self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases ------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for one database of this server (TCP on loopback)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name must be letters, digits and _: {name!r}")
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def sql(self, statement: str, database: str = "postgres") -> None:
        """Run one statement (autocommit) as the superuser."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(statement.encode())

    def wait_ready(self, timeout: float = 30) -> None:
        """Poll until a connection succeeds (after a start by someone else)."""
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
