"""The PostgreSQL starter the state tests use (ionflux.testing.postgres): a real server."""

from __future__ import annotations

import psycopg


def test_each_test_gets_a_fresh_empty_database(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE marker (x int)")


def test_databases_are_separate(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT to_regclass('public.marker')").fetchone()
        assert row == (None,)
