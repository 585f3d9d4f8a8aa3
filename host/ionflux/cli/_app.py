"""The object every CLI command receives: configuration and parts, built lazily;
and the one-line form of every error a command can end in."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ionwall import read_only

from .. import DataDirError
from ..config import Config, load_config

if TYPE_CHECKING:
    from ..host import Host


@dataclass
class App:
    config_path: Path | None = None
    data_dir: Path | None = None
    _closers: list[object] = field(default_factory=list)

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path, data_dir=self.data_dir)

    @cached_property
    def host(self) -> Host:
        from ..host import Host

        return Host(self.config)

    def close(self) -> None:
        """Closes what commands opened for themselves (IONWALL: its files, or its
        database pools and feed), newest first; at the end of every command."""
        while self._closers:
            close = getattr(self._closers.pop(), "close", None)
            if callable(close):
                with contextlib.suppress(Exception):  # the command's own outcome stands
                    close()

    def require_writable(self, data_dir: Path | None = None) -> None:
        """Raises ``DataDirError`` unless ``data_dir`` (default: the configured
        one) and IONWALL's folder in it can be written: for the commands that
        must record what they do (``ionflux up``), checked before they start."""
        root = data_dir or self.config.data_dir
        for directory in (root, root / "ionwall"):
            if directory.is_dir() and read_only(directory):
                raise DataDirError(
                    f"{directory}: the data directory is read-only (a read-only file system "
                    "or no write permission), and the host records runs, audit entries and "
                    "blocks there; give it a writable --data-dir"
                )


pass_app = click.make_pass_decorator(App)


def os_error_line(exc: OSError) -> str:
    """``OSError`` as one line naming the path and the reason, e.g.
    ``/data/blocks/ab/bafk…: No space left on device (ENOSPC)``."""
    reason = exc.strerror or str(exc)
    name = None if exc.errno is None else errno.errorcode.get(exc.errno)
    if name is not None:
        reason += f" ({name})"
    if exc.filename is not None and exc.filename2 is not None:
        return f"{exc.filename} -> {exc.filename2}: {reason}"
    if exc.filename is not None:
        return f"{exc.filename}: {reason}"
    return reason


def error_line(exc: BaseException, app: App | None) -> str | None:
    """The one line (without ``error: ``) for an error a command may end in that
    is not an ``IonfluxError``/``IonwallError``: the file system (full disk,
    read-only, permissions, file too large) and SQLite saying the same. None
    for anything else (a bug: its traceback is wanted)."""
    if isinstance(exc, OSError):
        return os_error_line(exc)
    if isinstance(exc, sqlite3.Error):
        where = "a database"
        config = None if app is None else vars(app).get("config")
        if isinstance(config, Config):
            where = f"a database in {config.data_dir}"
        return f"{where}: {exc}"
    return None
