"""A read-only snapshot of an eventsvc database, for the offline tools (``eventsvc stats`` and
``audit --database``), which bring their own SQL and stay free of the driver.

The tools read with their own connection rather than a store's pool: one REPEATABLE READ,
READ ONLY transaction, so every query of a report sees the same moment while appends go on and
nothing a tool does can write; server-side cursors, so a report over millions of events holds
a page of rows at a time; and no statement timeout, so it runs as long as it needs.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg

from ...errors import StorageError
from . import schema
from .connect import Options, connect, where

CONNECT_TIMEOUT = 5.0
ITERSIZE = 2000
FETCH_BYTES = 32 * 1024 * 1024  # a fetch's rough size when rows say how large they are


@contextmanager
def snapshot(url: str) -> Iterator[psycopg.Connection]:
    """A connection inside one read-only snapshot transaction of the eventsvc database at ``url``.

    Raises StorageError (with the server's reason) when the database cannot be reached or a
    query fails, SchemaMismatch when it has no eventsvc schema of this version.
    """
    conn = connect(url, Options(pool_size=1, connect_timeout=CONNECT_TIMEOUT, statement_timeout=0,
                                       idle_in_transaction_timeout=0), say_why=True)
    try:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        schema.check(conn, where(url))
        yield conn
    except psycopg.Error as exc:
        reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        raise StorageError(f"reading {where(url)} failed: {reason}") from None
    finally:
        conn.close()  # ends the transaction: nothing was written


def stream(conn: psycopg.Connection, name: str, sql: str, params: Mapping[str, Any] | None = None,
           *, itersize: int | None = None, row_bytes: Callable[[tuple[Any, ...]], int] | None = None,
           fetch_bytes: int = FETCH_BYTES) -> Iterator[tuple[Any, ...]]:
    """The rows of ``sql`` through a server-side cursor called ``name``, up to ``itersize`` rows per
    fetch (default ITERSIZE): memory holds one fetch, however many rows the statement yields.

    With ``row_bytes`` (a row's size), each fetch after the first asks for as many rows as would
    fit ``fetch_bytes`` if each were as large as the largest of the fetch before, so a run of
    large rows is read in smaller fetches.
    """
    limit = itersize or ITERSIZE
    with conn.cursor(name=name) as cursor:
        cursor.execute(sql, params)
        size = limit
        while True:
            rows = cursor.fetchmany(size)
            if not rows:
                return
            yield from rows
            if row_bytes is not None:
                size = max(1, min(limit, fetch_bytes // max(1, max(map(row_bytes, rows)))))
