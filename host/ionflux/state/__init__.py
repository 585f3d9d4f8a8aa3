"""Where a host keeps its state: SQLite files under its data directory (one machine,
the default) or one PostgreSQL database that every host of a cluster shares
(``state.backend: postgres``, ``state.url``).

The stores themselves (``Registry``, ``GraphRepository``, ``RunHistory``) keep one
body of SQL and take either backend; this package holds what PostgreSQL adds:
the connection pool that runs that SQL (``PgDatabase``), the schema as versioned
SQL files and their runner (``migrate``, ``ionflux db migrate``), and
``open_state`` which a host calls once. psycopg loads only when PostgreSQL is
used (the names below load on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Config
    from ._migrate import Migration, applied, check_current, latest_version, migrate, migrations
    from ._pg import PgChanges, PgDatabase, translate

__all__ = [
    "Migration",
    "PgChanges",
    "PgDatabase",
    "applied",
    "check_current",
    "cluster_warnings",
    "latest_version",
    "migrate",
    "migrations",
    "open_state",
    "translate",
]

_LAZY = {
    "Migration": "_migrate",
    "applied": "_migrate",
    "check_current": "_migrate",
    "latest_version": "_migrate",
    "migrate": "_migrate",
    "migrations": "_migrate",
    "PgChanges": "_pg",
    "PgDatabase": "_pg",
    "translate": "_pg",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ionflux.state' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)


def open_state(config: Config, *, migrate_schema: bool = True) -> PgDatabase | None:
    """The shared database of ``config`` (its schema migrated first, unless told not
    to: then it must be current), or None for the SQLite backend."""
    settings = config.state
    if settings.backend == "sqlite":
        return None
    from .._errors import ConfigError
    from ._migrate import check_current, migrate
    from ._pg import PgDatabase

    if not settings.url:
        raise ConfigError("state.backend is postgres but state.url is not set (postgresql://...)")
    if migrate_schema:
        migrate(settings.url)
    else:
        check_current(settings.url)
    return PgDatabase(settings.url, size=settings.pool_size, timeout_s=settings.connect_timeout_s)


def cluster_warnings(config: Config) -> list[str]:
    """What a host sharing its state should be told about the rest of its set-up
    (``ionflux up`` logs each as a warning when it starts)."""
    if config.state.backend != "postgres":
        return []
    found = []
    if config.store.backend == "local":
        found.append(
            "state.backend is postgres but store.backend is local: modules, run logs and "
            f"step outputs stay in {config.data_dir} on this machine, so other hosts cannot "
            "run what this one publishes nor read its run logs; a cluster needs "
            "store.backend: kubo (single machine only as configured)"
        )
    if config.nats.url is None:
        found.append(
            "state.backend is postgres but nats.url is not set: this host starts a "
            "nats-server of its own, so it shares no work, triggers or schedules with "
            "other hosts; point every host at one NATS (nats.url)"
        )
    return found
