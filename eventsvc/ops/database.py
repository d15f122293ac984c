"""A read-only snapshot of an eventsvc PostgreSQL database, for the offline tools (stats, audit).

The tools read with their own connection rather than the store's pool: one REPEATABLE READ,
READ ONLY transaction, so every query of a report sees the same moment while appends go on, and
nothing the tool does can write. No statement timeout: a report over millions of events runs
as long as it needs (the server's own limits still apply).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from ..errors import StorageError
from ..store.postgres import schema
from ..store.postgres.connect import Options, connect, where

CONNECT_TIMEOUT = 5.0


@contextmanager
def snapshot(url: str) -> Iterator[psycopg.Connection]:
    """A connection inside one read-only snapshot transaction of the eventsvc database at ``url``.

    Raises StorageError (the server's reason in its message) when the database cannot be
    reached, SchemaMismatch when it has no eventsvc schema of this version.
    """
    conn = connect(url, Options(pool_size=1, connect_timeout=CONNECT_TIMEOUT, statement_timeout=0), say_why=True)
    try:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        schema.check(conn, where(url))
        yield conn
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"reading {where(url)} failed: {reason}") from None
    finally:
        conn.close()  # ends the transaction: nothing was written
