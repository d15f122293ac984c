"""Connections to PostgreSQL: the bounded pool, the session settings, and driver errors translated.

Every connection runs with ``synchronous_commit = on`` (acknowledged means committed and
flushed) and a statement timeout; connecting and waiting for a pooled connection are bounded
by the connect timeout, so an unreachable server is a prompt 503, never a hung request.

The statement timeout is the server's: it does nothing when the server cannot be reached once a
request is under way. So a request's work on a pooled connection also has a deadline of our own
(connect timeout + statement timeout, ``Deadlines``), past which its socket is shut and it
answers 503; and TCP keepalives with ``tcp_user_timeout`` end a connection whose peer has gone
silent (a partition), the listener's included, instead of the kernel's ~15 minutes.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from ...config import without_password
from ...errors import StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    pool_size: int = 10
    connect_timeout: float = 5.0
    statement_timeout: float = 30.0
    # A transaction left open (a crashed request) gives its locks and snapshot back after this; the
    # offline tools' read-only snapshot sets 0, since a paused reader (a pager) is not a fault.
    idle_in_transaction_timeout: float = 60.0


def check_url(url: str) -> None:
    """Raise StorageError, naming no password, when libpq cannot parse ``url`` (a pool would retry it
    for ever and log libpq's message, which quotes the whole URL)."""
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        reason = " ".join(without_password(str(exc), url).split())  # libpq's message ends with a newline
        raise StorageError(f"the database URL cannot be parsed: {reason}") from None


def where(url: str) -> str:
    """A database named for messages: host, port and name, never the password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unparsable database URL)"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def connection_kwargs(options: Options) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "connect_timeout": max(1, round(options.connect_timeout)),
        "application_name": "eventsvc",
        "options": (f"-c synchronous_commit=on -c statement_timeout={int(options.statement_timeout * 1000)}"
                    f" -c idle_in_transaction_session_timeout={int(options.idle_in_transaction_timeout * 1000)}"),
        # An idle connection (the listener's, a pooled one) learns that its peer is gone: after ~25 s,
        # or with tcp_user_timeout (below) after about that long, which Linux then counts instead.
        "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
    }
    if options.statement_timeout > 0:  # data never acknowledged: the connection ends with the work's deadline
        kwargs["tcp_user_timeout"] = int(work_deadline(options) * 1000)
    return kwargs


def work_deadline(options: Options) -> float:
    """Seconds a unit of work may take on a pooled connection before it is cut off (0: no limit)."""
    return options.connect_timeout + options.statement_timeout if options.statement_timeout > 0 else 0.0


def connect(url: str, options: Options, *, autocommit: bool = False, say_why: bool = False) -> psycopg.Connection:
    """One connection outside the pool (the listener, upgrades, tools); ``say_why`` puts the driver's reason
    in the error's message (for an operator's command, not for an HTTP client)."""
    check_url(url)
    try:
        return psycopg.connect(url, autocommit=autocommit, **connection_kwargs(options))
    except psycopg.Error as exc:
        if say_why:
            # libpq's message is several lines (the failure, then a hint indented by a tab): one line here.
            lines = without_password(str(exc), url).splitlines()
            reason = "; ".join(line.strip() for line in lines if line.strip()) or type(exc).__name__
            raise StorageError(f"the database {where(url)} is unavailable: {reason}") from None
        raise unreachable(url, exc) from None


def open_pool(url: str, options: Options) -> ConnectionPool:
    """A bounded pool that fills in the background: opening never waits for the server."""
    # Autocommit: a read is one statement and one round trip; appends open their own transaction.
    pool = ConnectionPool(url, min_size=1, max_size=options.pool_size,
                          kwargs={**connection_kwargs(options), "autocommit": True},
                          timeout=options.connect_timeout, open=False, name="eventsvc",
                          reconnect_timeout=24 * 3600.0)
    if type(getattr(pool, "_pool", None)) is deque:  # else (another psycopg_pool) it stays first-in, first-out
        pool._pool = MostRecentFirst()
    pool.open()
    return pool


class MostRecentFirst(deque):
    """A pool's idle connections, the one returned last handed out first (as SQLAlchemy's
    ``pool_use_lifo``): psycopg_pool takes from the left and returns to the right, so a caller
    with little concurrency would go round every connection the pool ever opened, each with its
    caches and its server process cold; an append costs ~150 µs more that way (bench figure 10)."""

    def append(self, conn: Any) -> None:
        self.appendleft(conn)


def unreachable(url: str, exc: Exception) -> StorageError:
    log.warning("PostgreSQL at %s: %s", where(url), without_password(str(exc), url))
    return StorageError(f"the database {where(url)} is unavailable; retry shortly")


class Pooled:
    """Runs a unit of work on a pooled connection, retrying while the failure was a dead connection.

    After PostgreSQL restarts, every idle pooled connection is dead; each attempt that meets
    one throws it away, so service resumes without an error once the server is back. A
    retried append is safe: its event ids were fixed before the first attempt, so a commit
    whose answer was lost comes back as an idempotent re-send.
    """

    def __init__(self, url: str, options: Options) -> None:
        check_url(url)
        self.url = url
        self.options = options
        self.pool = open_pool(url, options)
        self.deadlines = Deadlines(work_deadline(options))

    def run(self, work: Callable[[psycopg.Connection], T]) -> T:
        attempts = self.options.pool_size + 1
        for attempt in range(attempts):
            try:
                with self._connection() as conn:
                    return work(conn)
            except _Dead as dead:
                if dead.cut_off or attempt + 1 == attempts:  # a server that does not answer is not retried
                    raise unreachable(self.url, dead.cause) from None
            except psycopg.Error as exc:
                raise unreachable(self.url, exc) from None
        raise AssertionError("unreachable")

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        with self.pool.connection() as conn, self.deadlines.watch(conn) as watched:
            try:
                yield conn
            except psycopg.OperationalError as exc:
                if conn.broken:
                    raise _Dead(exc, cut_off=watched.cut_off) from None
                raise

    def close(self) -> None:
        self.deadlines.close()
        self.pool.close()


class _Watched:
    __slots__ = ("conn", "deadline", "cut_off")

    def __init__(self, conn: psycopg.Connection, deadline: float) -> None:
        self.conn, self.deadline, self.cut_off = conn, deadline, False


class Deadlines:
    """Cuts off work that outlives its deadline on a connection whose server has stopped answering
    (the statement timeout is enforced by that server): one thread per process looks twice a second
    and shuts the socket of each overdue connection, so the worker's wait ends with a driver error
    (a 503), the pool drops the connection, and the server rolls back whatever did not commit."""

    TICK = 0.5

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._watched: dict[int, _Watched] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False

    @contextmanager
    def watch(self, conn: psycopg.Connection) -> Iterator[_Watched]:
        watched = _Watched(conn, time.monotonic() + self.seconds)
        if not self.seconds:
            yield watched
            return
        with self._lock:
            if self._pid != os.getpid():  # first use in this process (a forked worker has no thread)
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._sweep, name="eventsvc-db-deadlines", daemon=True)
                self._thread.start()
            self._watched[id(watched)] = watched
        try:
            yield watched
        finally:
            with self._lock:
                self._watched.pop(id(watched), None)

    def close(self) -> None:
        self._closed = True

    def _sweep(self) -> None:
        while not self._closed:
            time.sleep(self.TICK)
            now = time.monotonic()
            # Under the lock: the work is still inside watch(), so its connection (and socket) is open.
            with self._lock:
                for watched in self._watched.values():
                    if watched.deadline <= now and not watched.cut_off:
                        watched.cut_off = True
                        log.warning("PostgreSQL gave no answer within %.0fs; the connection is cut off", self.seconds)
                        _shut(watched.conn)


def _shut(conn: psycopg.Connection) -> None:
    """End the connection's socket under the thread blocked on it: shut down, through a duplicate
    descriptor (closing the connection's own from here would race with the driver using it)."""
    try:
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    except (OSError, psycopg.Error):
        return  # closed meanwhile
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


class _Dead(Exception):
    def __init__(self, cause: Exception, *, cut_off: bool = False) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.cut_off = cut_off
