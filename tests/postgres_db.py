"""Throwaway PostgreSQL databases for tests: created per module, dropped after, never anyone else's.

The server is EVENTSVC_TEST_DATABASE_URL (an admin connection, default the machine's local
server). Where none answers, the tests that need one skip with one line saying why, unless
EVENTSVC_TEST_REQUIRE_POSTGRES=1 (CI), where they fail.
"""
from __future__ import annotations

import os
import secrets
from urllib.parse import urlsplit, urlunsplit

import pytest

ADMIN_URL = os.environ.get("EVENTSVC_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRED = os.environ.get("EVENTSVC_TEST_REQUIRE_POSTGRES", "") == "1"
TABLES = ("event", "run", "session")
_unreachable: list[str] = []


def _admin():
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)


def url_of(name: str) -> str:
    """The admin URL with another database name (EVENTSVC_TEST_DATABASE_URL must be a postgresql:// URL)."""
    parts = urlsplit(ADMIN_URL)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def create_database(*, upgraded: bool = True) -> str:
    """A new empty UTF8 database (with the eventsvc schema unless told otherwise); returns its URL.

    Skips the calling test (one reason, one line in the summary) when no server answers.
    """
    if _unreachable and not REQUIRED:
        pytest.skip(_unreachable[0])
    name = f"eventsvc_test_{secrets.token_hex(6)}"
    try:
        with _admin() as conn:
            conn.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server is the same verdict
        reason = f"PostgreSQL not reachable at EVENTSVC_TEST_DATABASE_URL ({type(exc).__name__})"
        if REQUIRED:
            pytest.fail(f"{reason}: {exc}")
        _unreachable.append(reason)
        pytest.skip(reason)
    url = url_of(name)
    if upgraded:
        from eventsvc.store.postgres import upgrade

        upgrade(url)
    return url


def drop_database(url: str) -> None:
    from psycopg.conninfo import conninfo_to_dict

    name = conninfo_to_dict(url)["dbname"]
    assert name.startswith("eventsvc_test_")  # only ever our own
    with _admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def empty(url: str) -> None:
    """Remove every event, run and session (between the tests of one module)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)}")


def rows(url: str) -> dict[str, list[tuple]]:
    """Every row of every table, in key order: what 'nothing was written' compares."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall() for table in TABLES}
