"""PostgresStore: the Store protocol on PostgreSQL, for deployments with several application hosts.

Events are rows keyed ``(session_id, seq)`` holding the exact envelope text the files backend
writes, so reads serve stored bytes and both backends export identical lines. Appends are one
statement each (see ``writes``), live tail rides on LISTEN/NOTIFY (see ``listen``).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg

from ...errors import RunNotFound, SchemaMismatch, SessionNotFound, StorageError
from ...schemas import EventInputSchema, is_valid_id
from ...types import EVENT_TYPES, RUN_TERMINAL_TYPES, EventTypeSet
from .. import listings, rules
from ..base import AppendResult, EnvelopeReads, Page
from ..drafts import AppendShortcuts, prepare
from ..listings import SummaryPage
from . import pages
from . import schema
from . import summaries as pg_summaries
from .connect import Options, Pooled, connect, where
from .listen import NotifyWatcher
from .writes import KnownSessions, append_transaction

log = logging.getLogger(__name__)
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
T = TypeVar("T")


class PostgresStore(AppendShortcuts, EnvelopeReads):
    """The Store protocol on a PostgreSQL database prepared by ``eventsvc db upgrade URL``.

    Safe to share between threads; any number of processes and hosts may open the same
    database. Opening checks the schema version when the server answers (SchemaMismatch if it
    is missing or another version); when it does not, opening succeeds and every call answers
    StorageError until it does.
    """

    def __init__(self, url: str, *, pool_size: int = 10, connect_timeout: float = 5.0,
                 statement_timeout: float = 30.0, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
                 event_types: EventTypeSet = EVENT_TYPES) -> None:
        self.url = url
        self.where = where(url)
        self.max_event_bytes = max_event_bytes
        self.event_types = event_types
        self._schema = EventInputSchema(event_types=event_types)
        self._options = Options(pool_size, connect_timeout, statement_timeout)
        self._schema_checked = False
        self._pooled = Pooled(url, self._options)
        self._known = KnownSessions()
        self.watcher = NotifyWatcher(lambda: connect(url, self._options, autocommit=True), self._last_seqs)
        try:
            self._run(lambda conn: None)  # the schema check, now, so a wrong database stops the start
        except SchemaMismatch:
            self._pooled.close()
            raise
        except StorageError as exc:
            log.error("PostgreSQL is not reachable yet (%s); will retry on each request", exc.message)

    def _run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """``work`` on a pooled connection, after the one-time schema check; driver errors become StorageError."""
        def checked(conn: psycopg.Connection) -> T:
            if not self._schema_checked:
                schema.check(conn, self.where)
                self._schema_checked = True
            return work(conn)

        return self._pooled.run(checked)

    def close(self) -> None:
        self.watcher.close()
        self._pooled.close()

    # -- appends ---------------------------------------------------------------------------------

    def append_batch(self, session_id: str, events: Sequence[dict[str, Any]], *,
                     default_source: str = "api") -> AppendResult:
        if not events:
            return AppendResult([], 0)
        # Ids and timestamps are fixed here, once: a retry after a lost commit answer is a re-send.
        drafts = prepare(session_id, events, schema=self._schema, default_source=default_source)
        result, last_seq = self._run(lambda conn: append_transaction(conn, session_id, drafts, self.max_event_bytes,
                                                                     self._known))
        if result.created:
            self.watcher.appended(session_id, last_seq)
        return result

    # -- reads -----------------------------------------------------------------------------------

    def read_page(self, session_id: str, *, run_id: str | None = None, since_seq: int = 0,
                  limit: int = 100, types: Iterable[str] | None = None) -> Page:
        rules.check_page_bounds(since_seq, limit)
        wanted = self.check_types(types)
        if not is_valid_id(session_id) or (run_id is not None and not is_valid_id(run_id)):
            page = pages.page_of(session_id, [], limit, since_seq)  # no such id can be stored
        elif wanted is not None:
            page = self._run(lambda conn: pages.filtered_page(conn, session_id, run_id, wanted,
                                                                 since_seq=since_seq, limit=limit))
        else:
            page = pages.page_of(session_id, self._rows(session_id, run_id, since_seq, limit + 1), limit, since_seq)
        if not page.lines and self.last_seq(session_id) == 0:
            raise SessionNotFound(f"session {session_id!r} not found")
        return page

    def read_run_page(self, run_id: str, *, since_seq: int = 0, limit: int = 100,
                      types: Iterable[str] | None = None) -> Page:
        rules.check_page_bounds(since_seq, limit)
        wanted = self.check_types(types)
        if wanted is not None:
            session_id = self.run_session(run_id)
            if session_id is None:
                raise RunNotFound(f"run {run_id!r} not found")
            return self._run(lambda conn: pages.filtered_page(conn, session_id, run_id, wanted,
                                                                 since_seq=since_seq, limit=limit))
        rows = (self._run(lambda conn: conn.execute(pages.RUN_PAGE_BY_ID, (since_seq, limit + 1, run_id)).fetchall())
                if is_valid_id(run_id) else [])
        if not rows:
            raise RunNotFound(f"run {run_id!r} not found")
        return pages.page_of(rows[0][0], [(seq, text) for _, seq, text in rows if seq is not None], limit, since_seq)

    def check_types(self, types: Iterable[str] | None) -> list[str] | None:
        return listings.check_types(types, self.event_types)

    def _envelopes(self, session_id: str, run_id: str | None, since_seq: int, limit: int,
                   types: Iterable[str] | None) -> list[dict]:
        rules.check_page_bounds(since_seq, limit)
        wanted = self.check_types(types)
        if wanted is None:
            return [json.loads(text) for _, text in self._rows(session_id, run_id, since_seq, limit)]
        if not is_valid_id(session_id) or (run_id is not None and not is_valid_id(run_id)):
            return []
        lines: list[bytes] = []
        while len(lines) < limit:
            page = self._run(lambda conn: pages.filtered_page(conn, session_id, run_id, wanted,
                                                                 since_seq=since_seq, limit=limit - len(lines)))
            lines += page.lines
            if not page.has_more:
                break
            since_seq = page.next_since_seq
        return [json.loads(line) for line in lines]

    def _rows(self, session_id: str, run_id: str | None, since_seq: int, limit: int) -> list[tuple[int, str]]:
        if not is_valid_id(session_id) or (run_id is not None and not is_valid_id(run_id)):
            return []  # no such id can be stored (and a NUL byte would not even reach the server)
        if run_id is None:
            return self._run(lambda conn: conn.execute(pages.PAGE, (session_id, since_seq, limit)).fetchall())
        return self._run(lambda conn: conn.execute(pages.RUN_PAGE, (session_id, run_id, since_seq, limit)).fetchall())

    def last_seq(self, session_id: str) -> int:
        return self._last_seqs([session_id]).get(session_id, 0)

    def _last_seqs(self, session_ids: list[str]) -> dict[str, int]:
        valid = [session_id for session_id in session_ids if is_valid_id(session_id)]
        if not valid:
            return {}
        rows = self._run(lambda conn: conn.execute(
            "SELECT session_id, last_seq FROM session WHERE session_id = ANY(%s)", (valid,)).fetchall())
        return dict(rows)

    def run_terminal_seq(self, session_id: str, run_id: str) -> int | None:
        if not (is_valid_id(session_id) and is_valid_id(run_id)):
            return None
        return self._run(lambda conn: conn.execute(
            "SELECT min(seq) FROM event WHERE session_id = %s AND run_id = %s AND type = ANY(%s)",
            (session_id, run_id, sorted(RUN_TERMINAL_TYPES))).fetchone()[0])

    def run_session(self, run_id: str) -> str | None:
        if not is_valid_id(run_id):
            return None
        row = self._run(lambda conn: conn.execute("SELECT session_id FROM run WHERE run_id = %s",
                                                  (run_id,)).fetchone())
        return row[0] if row else None

    def session_ids(self) -> list[str]:
        return [row[0] for row in self._run(lambda conn: conn.execute(
            "SELECT session_id FROM session ORDER BY session_id").fetchall())]

    # -- summaries and listings ------------------------------------------------------------------

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        if not is_valid_id(session_id):
            return None
        return self._run(lambda conn: pg_summaries.get_session(conn, session_id))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        if not is_valid_id(run_id):
            return None
        return self._run(lambda conn: pg_summaries.get_run(conn, run_id))

    def list_sessions(self, limit: int = 100, cursor: str | None = None) -> SummaryPage:
        listings.check_limit(limit)
        position = listings.decode(listings.SESSIONS, cursor)
        found = self._run(lambda conn: pg_summaries.list_sessions(conn, before=position[0] if position else None,
                                                                  limit=limit + 1))
        return listings.page_of(found, limit, listings.SESSIONS)

    def list_runs(self, *, session_id: str | None = None, statuses: Iterable[str] | None = None,
                  limit: int = 100, cursor: str | None = None) -> SummaryPage:
        listings.check_limit(limit)
        wanted = listings.check_statuses(statuses)
        if session_id is not None:
            listings.check_id("session_id", session_id)
        position = listings.decode(listings.RUNS, cursor)
        found = self._run(lambda conn: pg_summaries.list_runs(
            conn, session_id=session_id, statuses=wanted, before=position if position else None, limit=limit + 1))
        return listings.page_of(found, limit, listings.RUNS)

    def list_session_runs(self, session_id: str, *, limit: int = 100, cursor: str | None = None) -> SummaryPage:
        listings.check_limit(limit)
        position = listings.decode(listings.SESSION_RUNS, cursor)
        if not is_valid_id(session_id) or self.last_seq(session_id) == 0:
            raise SessionNotFound(f"session {session_id!r} not found")
        found = self._run(lambda conn: pg_summaries.list_session_runs(
            conn, session_id, after=position[0] if position else 0, limit=limit + 1))
        return listings.page_of([(run["first_seq"], run) for run in found], limit, listings.SESSION_RUNS)

    def wait_for_events(self, session_id: str, after_seq: int, timeout: float) -> int:
        return self.watcher.wait(session_id, after_seq, timeout)


def upgrade(url: str, *, connect_timeout: float = 5.0) -> tuple[int | None, int]:
    """Create or migrate the schema of the database at ``url``; returns (version before, version after)."""
    conn = connect(url, Options(pool_size=1, connect_timeout=connect_timeout, statement_timeout=0), say_why=True)
    try:
        return schema.upgrade(conn, pg_summaries.backfill)
    except psycopg.Error as exc:
        raise StorageError(f"upgrading {where(url)} failed: {exc}") from None
    finally:
        conn.close()


__all__ = ["PostgresStore", "SchemaMismatch", "upgrade", "where"]
