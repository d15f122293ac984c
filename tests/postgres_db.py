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

    Skips the calling test when no server answers (fails it under EVENTSVC_TEST_REQUIRE_POSTGRES=1).
    """
    url = try_create_database(upgraded=upgraded)
    if url is None:
        skip_unreachable()
    return url


def try_create_database(*, upgraded: bool = True) -> str | None:
    """``create_database``, or None when no server answers."""
    if _unreachable:
        return None
    name = f"eventsvc_test_{secrets.token_hex(6)}"
    try:
        with _admin() as conn:
            conn.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server is the same verdict
        _unreachable.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
        return None
    url = url_of(name)
    if upgraded:
        from eventsvc.store.postgres import upgrade

        upgrade(url)
    return url


def unreachable_reason() -> str | None:
    """Why no PostgreSQL test can run here (one connection attempt per test run), or None."""
    if not _unreachable:
        try:
            _admin().close()
        except Exception as exc:  # noqa: BLE001 - any failure to reach the server is the same verdict
            _unreachable.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
    return f"PostgreSQL not reachable at EVENTSVC_TEST_DATABASE_URL ({_unreachable[0]})" if _unreachable else None


def needs_postgres(item: pytest.Item) -> bool:
    fixtures = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    return bool({"pg_url", "pg_database"} & fixtures) or (callspec is not None and
                                                         callspec.params.get("backend") == "postgres")


def skip_unreachable() -> None:
    """The one place these tests skip from, so pytest's summary folds them into one line."""
    reason = f"PostgreSQL not reachable at EVENTSVC_TEST_DATABASE_URL ({_unreachable[0]})"
    if REQUIRED:
        pytest.fail(reason)
    pytest.skip(reason)


def drop_database(url: str) -> None:
    from psycopg.conninfo import conninfo_to_dict

    name = conninfo_to_dict(url)["dbname"]
    assert name.startswith("eventsvc_test_")  # only ever our own
    with _admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def empty(url: str) -> None:
    """Remove every event, run and session (between the tests of one module)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for table in TABLES:  # DELETE, not TRUNCATE: a few rows, and no file rewritten per test
            conn.execute(f"DELETE FROM {table}")


def rows(url: str) -> dict[str, list[tuple]]:
    """Every row of every table, in key order: what 'nothing was written' compares."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall() for table in TABLES}
