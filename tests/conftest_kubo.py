"""Kubo fixtures: a real daemon (``ionflux.testing.kubo``) per session, or per test.

Import the fixtures into a test module (``from conftest_kubo import kubo, kubo_bin``).
The session daemon is started once per pytest session however many modules
import it, and stopped at the end. The binary comes from ``$IONFLUX_KUBO_BIN``,
else the cache ``scripts/install_kubo.sh`` builds into, else ``ipfs`` on PATH;
without one the tests that need it are skipped with the command to run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ionflux.testing.kubo import KUBO_VERSION, KuboDaemon, find_kubo

__all__ = ["KUBO_VERSION", "KuboDaemon", "find_kubo", "kubo", "kubo_bin", "own_kubo"]

_STASH = pytest.StashKey["KuboDaemon"]()


@pytest.fixture(scope="session")
def kubo_bin() -> Path:
    binary = find_kubo()
    if binary is None:
        pytest.skip("no Kubo binary: run `bash scripts/install_kubo.sh` (or set IONFLUX_KUBO_BIN)")
    return binary


@pytest.fixture(scope="session")
def kubo(request: pytest.FixtureRequest, kubo_bin: Path) -> KuboDaemon:
    """The session's daemon (one per session, even when several modules import this)."""
    daemon = request.config.stash.get(_STASH, None)
    if daemon is None:
        daemon = KuboDaemon(kubo_bin).start()
        request.config.stash[_STASH] = daemon
        request.config.add_cleanup(daemon.cleanup)
    return daemon


@pytest.fixture
def own_kubo(kubo_bin: Path) -> Iterator[KuboDaemon]:
    """A daemon of the test's own, for tests that stop it."""
    daemon = KuboDaemon(kubo_bin).start()
    try:
        yield daemon
    finally:
        daemon.cleanup()
