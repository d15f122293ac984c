"""The SQLite index over the segments (Peewee models and the queries over them).

The index is derived: every row points at bytes in a segment, and the whole file can
be rebuilt from the segments. It answers "where are the events after seq N of this
session (or run)?" without reading the log, and it is where cross-process facts
(next seq, which session owns a run) are settled under SQLite's write lock.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, NamedTuple
import functools
import json
import shutil
import sqlite3
import tempfile
from pathlib import Path

import peewee as pw

from ...errors import StorageError, StorageFull
from . import summary_index, type_filter

INDEX_FILE = "index.sqlite3"
# 2: run and session summaries; 3: a run's own ``touched``. An older index is moved aside and rebuilt.
SCHEMA_VERSION = 3
BUSY_TIMEOUT_MS = 30_000


DRIVER_ERRORS = (pw.DatabaseError, sqlite3.DatabaseError)
FULL_BELOW_BYTES = 256 * 1024
_CORRUPTION = ("file is not a database", "malformed", "index schema version", "index schema differs")


def is_corruption(exc: BaseException) -> bool:
    """Whether a driver error says the file is not a usable index (as opposed to a full or busy disk)."""
    return any(sign in str(exc) for sign in _CORRUPTION)


def storage_error(exc: BaseException, where: Path) -> StorageError:
    """The driver's error in the service's terms: a full disk is 507, anything else 503.

    SQLite reports a full disk as "disk I/O error" when it fails to create its WAL or
    shared-memory file, so the free space is asked as well.
    """
    if "full" in str(exc).lower() or _nearly_full(where):
        return StorageFull("no space left on the device holding the index")
    return StorageError(f"the index could not be used ({exc})")


def _nearly_full(where: Path) -> bool:
    try:
        return shutil.disk_usage(where).free < FULL_BELOW_BYTES
    except OSError:
        return False


@dataclass(frozen=True)
class SessionState:
    """The index's checkpoint for one session: what it has seen of the log so far."""

    session_id: str
    last_seq: int
    segment: int  # base seq of the active segment
    end_offset: int  # byte offset just past the last indexed line in that segment


_RUN_PAGE_BY_RUN_SQL = (
    'SELECT e.seq, e.segment, e."offset", e.length FROM run AS r'
    " JOIN event AS e INDEXED BY idx_session_event_run_seq ON e.session_id = r.session_id AND e.run_id = r.run_id"
    " WHERE r.run_id = ?1 AND e.seq > ?2 ORDER BY e.seq LIMIT ?3")


def packed(page_sql: str) -> str:
    """A page query as one row: each column a comma-separated list, in the page's order.

    ``fetchall`` steps SQLite once per row and gives up the interpreter lock at every step;
    under gthread each give-up lets another request's thread in ahead of this one, so a
    hundred-row page is fetched in one step instead.
    """
    return ('SELECT group_concat(seq), group_concat(segment), group_concat("offset"), group_concat(length)'
            f" FROM ({page_sql})")


_PACKED_RUN_PAGE_SQL = (
    "SELECT r.session_id, p.* FROM run AS r, (" + packed(_RUN_PAGE_BY_RUN_SQL) + ") AS p WHERE r.run_id = ?1")


def unpacked(columns: Sequence[str | None]) -> list[Location]:
    """The locations of a packed page, in seq order."""
    if columns[0] is None:
        return []
    seqs, segments, offsets, lengths = json.loads("[[%s],[%s],[%s],[%s]]" % tuple(columns))
    locations = list(zip(seqs, segments, offsets, lengths))
    if seqs != sorted(seqs):  # group_concat keeps the subquery's order in practice; SQLite does not promise it
        locations.sort()
    return locations


_BEFORE_APPEND_SQL = (
    # kind 0: the checkpoint and what the commit needs of the session's summary; 1: an event_id already
    # stored; 2: a run's owner and what the commit needs of its summary (summary_index.*_BEFORE);
    # 3: a pending-batch mark (under the session lock: one left behind, see BeforeAppend.stale_mark).
    f"SELECT 0, last_seq, segment, end_offset, {summary_index.SESSION_BEFORE} FROM session WHERE session_id = ?1"
    ' UNION ALL SELECT 1, seq, segment, "offset", length, event_id, NULL FROM event INDEXED BY idx_session_event_id'
    " WHERE session_id = ?1 AND event_id IN (SELECT value FROM json_each(?2))"
    f" UNION ALL SELECT 2, {summary_index.RUN_BEFORE}, NULL, NULL FROM run"
    " WHERE run_id IN (SELECT value FROM json_each(?3))"
    " UNION ALL SELECT 3, NULL, NULL, NULL, NULL, NULL, NULL FROM pending_batch WHERE session_id = ?1")
# The same without the summaries, as before them: for the bench's index that keeps none (Index.keeps_summaries).
_BEFORE_APPEND_WITHOUT_SUMMARIES_SQL = (
    "SELECT 0, last_seq, segment, end_offset, NULL, NULL FROM session WHERE session_id = ?1"
    ' UNION ALL SELECT 1, seq, segment, "offset", length, event_id FROM event INDEXED BY idx_session_event_id'
    " WHERE session_id = ?1 AND event_id IN (SELECT value FROM json_each(?2))"
    " UNION ALL SELECT 2, session_id, run_id, NULL, NULL, NULL FROM run"
    " WHERE run_id IN (SELECT value FROM json_each(?3))"
    " UNION ALL SELECT 3, NULL, NULL, NULL, NULL, NULL FROM pending_batch WHERE session_id = ?1")


class Location(NamedTuple):
    """Where one event's line is: a tuple, because pages build a hundred of them per request."""

    seq: int
    segment: int
    offset: int
    length: int


def open_database(path: Path) -> pw.SqliteDatabase:
    """All pragmas in one place. ``synchronous=normal`` is enough: the log, not the index, is durable."""
    return pw.SqliteDatabase(
        str(path),
        pragmas={
            "journal_mode": "wal",
            "synchronous": "normal",
            "busy_timeout": BUSY_TIMEOUT_MS,
            "cache_size": -4_000,  # per connection, and gthread workers hold one per thread
            "foreign_keys": 0,
            # The index may have come with a folder from elsewhere: functions with side effects are
            # never run from its schema (its triggers and views are refused outright, see check_schema).
            "trusted_schema": 0,
        },
        lock_type="IMMEDIATE",
        timeout=BUSY_TIMEOUT_MS / 1000,
    )


def define_models(db: pw.SqliteDatabase) -> tuple[type[pw.Model], ...]:
    """Model classes bound to one store's database, so several stores can live in one process."""

    class BaseModel(pw.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Event(BaseModel):
        session_id = pw.TextField()
        seq = pw.IntegerField()
        run_id = pw.TextField(null=True)
        type = pw.TextField()
        event_id = pw.TextField()
        timestamp = pw.TextField()
        segment = pw.IntegerField()
        offset = pw.IntegerField()
        length = pw.IntegerField()

        class Meta:
            primary_key = pw.CompositeKey("session_id", "seq")
            without_rowid = True

    # Run reads are the hot path: the index carries the segment, offset and length so a page
    # of a run is answered from the index alone, with no lookup into the table per row.
    # The type comes last, so a run read filtered by type is answered from this index too.
    Event.add_index(Event.index(Event.session_id, Event.run_id, Event.seq,
                                Event.segment, Event.offset, Event.length, Event.type,
                                name="idx_session_event_run_seq"))
    Event.add_index(Event.index(Event.session_id, Event.event_id, unique=True, name="idx_session_event_id"))

    class Run(BaseModel):
        """A run's owner and its summary (kept current by every commit that indexes its events)."""

        run_id = pw.TextField(primary_key=True)
        session_id = pw.TextField()
        first_seq = pw.IntegerField()
        status = pw.TextField()
        verify = pw.TextField(null=True)
        last_seq = pw.IntegerField()
        event_count = pw.IntegerField()
        created_at = pw.TextField(null=True)
        started_at = pw.TextField(null=True)
        ended_at = pw.TextField(null=True)
        updated_at = pw.TextField(null=True)
        blocked = pw.IntegerField()
        warned = pw.IntegerField()
        counts = pw.TextField()  # JSON object: type -> events of that type
        touched = pw.IntegerField()  # unique; the highest is the run most recently appended-to (summary_index)

        class Meta:
            without_rowid = True
            indexes = (  # each ordered for one listing; unfiltered run listings merge the status ranges
                (("status", "touched"), False),
                (("session_id", "touched"), False),
                (("session_id", "first_seq"), False),
            )

    class Session(BaseModel):
        """A session's checkpoint (what the index has seen of its log) and its summary."""

        session_id = pw.TextField(primary_key=True)
        last_seq = pw.IntegerField()
        segment = pw.IntegerField()
        end_offset = pw.IntegerField()
        first_seq = pw.IntegerField()
        event_count = pw.IntegerField()
        created_at = pw.TextField(null=True)
        updated_at = pw.TextField(null=True)
        run_count = pw.IntegerField()
        active_runs = pw.IntegerField()
        closed = pw.IntegerField()
        touched = pw.IntegerField(index=True)

        class Meta:
            without_rowid = True

    class PendingBatch(BaseModel):
        """A multi-event append between its write and its index commit (at most one per session)."""

        session_id = pw.TextField(primary_key=True)
        segment = pw.IntegerField()
        offset = pw.IntegerField()
        end_offset = pw.IntegerField()

        class Meta:
            without_rowid = True

    return Event, Run, Session, PendingBatch


SchemaRow = tuple[str, str, str, "str | None"]  # sqlite_master's type, name, tbl_name, sql


def schema_rows(connection: sqlite3.Connection) -> dict[str, SchemaRow]:
    """Every object of a database's schema by name (tables, indexes, triggers, views)."""
    return {row[1]: tuple(row) for row in  # type: ignore[misc]
            connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")}


@functools.cache
def expected_schema() -> dict[str, SchemaRow]:
    """The schema ``Index`` creates, read back from a fresh index in a scratch folder: whatever
    tables the store adds, this is the one reference, never SQL text written twice."""
    with tempfile.TemporaryDirectory(prefix="eventsvc-schema-") as folder:
        path = Path(folder) / INDEX_FILE
        Index(path).close()
        connection = sqlite3.connect(path)
        try:
            return schema_rows(connection)
        finally:
            connection.close()


def schema_problem(connection: sqlite3.Connection, *, exact: bool) -> str | None:
    """Why the database on ``connection`` is not (``exact``) or not part of (not ``exact``) the
    store's own index schema; None when it is. Reads only sqlite_master and user_version, with
    ``trusted_schema`` off, so nothing the file holds runs. A part of the schema is what a store
    that is still creating its index leaves: the rest is created with IF NOT EXISTS.
    """
    connection.execute("PRAGMA trusted_schema = OFF")
    found, expected = schema_rows(connection), expected_schema()
    foreign = sorted(name for name, row in found.items() if expected.get(name) != row)
    if foreign:
        shown = ", ".join(f"{found[name][0]} {name!r}" for name in foreign[:5])
        return f"index schema differs from the store's: {shown}{' and more' if len(foreign) > 5 else ''}"
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if exact and (found.keys() != expected.keys() or version != SCHEMA_VERSION):
        missing = sorted(expected.keys() - found.keys())
        return (f"index schema differs from the store's: {', '.join(map(repr, missing[:5]))} missing"
                if missing else f"index schema version {version} is not {SCHEMA_VERSION}")
    if version not in (0, SCHEMA_VERSION):
        return f"index schema version {version} is not {SCHEMA_VERSION}"
    return None


def index_version_before(path: Path) -> int | None:
    """The schema version of an index written by an older eventsvc (1 to SCHEMA_VERSION - 1), else None.

    Read-only, from the file's header (``user_version``): nothing the file holds runs.
    """
    if not path.is_file() or path.is_symlink():
        return None
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error:
        return None
    return version if 1 <= version < SCHEMA_VERSION else None


@dataclass(frozen=True)
class BeforeAppend:
    """What an append (or a repair indexing lines found in the log) must know first, read in one statement.

    Read under the session lock, which every writer of the session's rows holds (a reindex holds
    the whole store), so what it says of the session's and its runs' summaries is still true at the
    commit, except whether the session holds the highest number (summary_index checks that again).
    """

    state: SessionState | None
    stored: dict[str, Location]  # event_id -> where it is, for the append's ids already in the session
    run_owners: dict[str, str]  # run_id -> owning session, for the append's runs that have one
    session_summary: tuple | None = None  # summary_index.SESSION_BEFORE columns
    run_summaries: dict[str, tuple] = field(default_factory=dict)  # run_id -> summary_index.RUN_BEFORE columns
    # A pending-batch mark, seen under the session lock, is a batch's that died between its mark and
    # its first byte (or failed and could not clear it): see EventStore._append_locked.
    stale_mark: bool = False


class Index:
    """Queries and the one write transaction of the index. Thread-safe (a connection per thread)."""

    # Off only in the bench, which weighs the summaries' upkeep against the commit as it was before
    # them (summary_index.checkpoint_only) in one run; an index written with it off has wrong summaries.
    keeps_summaries = True

    def __init__(self, path: Path, *, write_lock: Callable[[], AbstractContextManager[None]] | None = None) -> None:
        self.path = path
        self._write_lock = write_lock or nullcontext
        self.db = open_database(path)
        self.Event, self.Run, self.Session, self.PendingBatch = define_models(self.db)
        with self.db.connection_context():
            version = self.db.execute_sql("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise pw.DatabaseError(f"index schema version {version} is not {SCHEMA_VERSION}")
            self.db.create_tables([self.Event, self.Run, self.Session, self.PendingBatch], safe=True)
            self.db.execute_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
        # Peewee writes the page queries once; building them anew costs more than running them.
        self._session_page_sql = self._compiled_page_query(run_id=None)
        self._run_page_sql = self._compiled_page_query(run_id="")
        self._packed_session_page_sql = packed(self._session_page_sql)
        self._packed_run_page_sql = packed(self._run_page_sql)

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    # -- reads -------------------------------------------------------------------------------

    def session_state(self, session_id: str) -> SessionState | None:
        row = self.db.execute_sql(
            "SELECT last_seq, segment, end_offset FROM session WHERE session_id = ?", (session_id,)
        ).fetchone()
        return SessionState(session_id, *row) if row else None

    def last_seqs(self, session_ids: list[str]) -> dict[str, int]:
        return dict(self.db.execute_sql(
            "SELECT session_id, last_seq FROM session WHERE session_id IN (SELECT value FROM json_each(?))",
            (json.dumps(session_ids),)))

    def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite's cheap change counter)."""
        return self.db.execute_sql("PRAGMA data_version").fetchone()[0]

    def session_states(self) -> list[SessionState]:
        rows = self.db.execute_sql("SELECT session_id, last_seq, segment, end_offset FROM session")
        return [SessionState(*row) for row in rows]

    def _page_query(self, session_id: str, run_id: str | None, since_seq: int, limit: int) -> pw.Select:
        Event = self.Event
        conditions = [Event.session_id == session_id]
        if run_id is not None:
            conditions.append(Event.run_id == run_id)
        conditions.append(Event.seq > since_seq)
        query = Event.select(Event.seq, Event.segment, Event.offset, Event.length).where(*conditions)
        return query.order_by(Event.seq).limit(limit)

    def _compiled_page_query(self, *, run_id: str | None) -> str:
        """The page query's SQL, its parameters in the order (session_id[, run_id], since_seq, limit)."""
        sql, params = self._page_query("\x00session", None if run_id is None else "\x00run", -7, -9).sql()
        expected = ["\x00session", -7, -9] if run_id is None else ["\x00session", "\x00run", -7, -9]
        if params != expected:
            raise AssertionError(f"page query parameters changed order: {params!r}")
        return sql

    def page(self, session_id: str, run_id: str | None, *, since_seq: int, limit: int) -> list[Location]:
        """Up to ``limit`` locations after ``since_seq`` in seq order (a run's only, when run_id is given).

        The locations are plain tuples in Location's field order: a page is the hottest path,
        and wrapping a hundred of them in named tuples costs more than the query.
        """
        if run_id is None:
            cursor = self.db.execute_sql(self._packed_session_page_sql, (session_id, since_seq, limit))
        else:
            cursor = self.db.execute_sql(self._packed_run_page_sql, (session_id, run_id, since_seq, limit))
        return unpacked(cursor.fetchone())

    def run_page(self, run_id: str, *, since_seq: int, limit: int) -> tuple[str | None, list[tuple]]:
        """(the run's session, up to ``limit`` of its locations after ``since_seq``) in one statement.

        A run read does not know its session; asking the run table and then the event index
        would be two round trips, each releasing and retaking the interpreter lock.
        """
        row = self.db.execute_sql(_PACKED_RUN_PAGE_SQL, (run_id, since_seq, limit)).fetchone()
        return (row[0], unpacked(row[1:])) if row else (None, [])

    def filtered_page(self, session_id: str, run_id: str | None, types: Sequence[str], *, since_seq: int,
                      limit: int) -> type_filter.FilteredPage:
        """Up to ``limit`` locations of ``types`` after ``since_seq``, looking at a bounded window of rows."""
        return type_filter.page(self.db.connection(), session_id, run_id, types, since_seq=since_seq, limit=limit)

    def first_of_types(self, session_id: str, run_id: str, types: Iterable[str]) -> int | None:
        """Seq of the run's first event with one of ``types`` (None when it has none)."""
        Event = self.Event
        row = (Event.select(Event.seq)
               .where((Event.session_id == session_id) & (Event.run_id == run_id) & Event.type.in_(list(types)))
               .order_by(Event.seq).limit(1).tuples().first())
        return row[0] if row else None

    def last_within(self, session_id: str, segment: int, end: int) -> Location | None:
        """The last indexed event of ``segment`` whose line ends at or before byte ``end``."""
        Event = self.Event
        row = (Event.select(Event.seq, Event.segment, Event.offset, Event.length)
               .where((Event.session_id == session_id) & (Event.segment == segment)
                      & (Event.offset + Event.length <= end))
               .order_by(Event.seq.desc()).limit(1).tuples().first())
        return Location(*row) if row else None

    def before_append(self, session_id: str, event_ids: Sequence[str], run_ids: Iterable[str]) -> BeforeAppend:
        """The checkpoint and summary, the stored ones of ``event_ids`` and the owners and summaries of
        ``run_ids``, in one statement.

        One statement rather than three: each is a read transaction of its own, and each step
        of one gives up the interpreter lock.
        """
        sql = _BEFORE_APPEND_SQL if self.keeps_summaries else _BEFORE_APPEND_WITHOUT_SUMMARIES_SQL
        rows = self.db.execute_sql(sql, (session_id, json.dumps(list(event_ids)), json.dumps(list(run_ids)))).fetchall()
        state, stored, owners, session_summary, run_summaries, stale_mark = None, {}, {}, None, {}, False
        for row in rows:
            kind = row[0]
            if kind == 0:
                state = SessionState(session_id, row[1], row[2], row[3])
                session_summary = row[4:7]
            elif kind == 1:
                stored[row[5]] = Location(row[1], row[2], row[3], row[4])
            elif kind == 2:
                owners[row[2]] = row[1]
                run_summaries[row[2]] = row[1:5]
            else:
                stale_mark = True
        return BeforeAppend(state, stored, owners, session_summary, run_summaries, stale_mark)

    def run_session(self, run_id: str) -> str | None:
        row = self.db.execute_sql("SELECT session_id FROM run WHERE run_id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def pending_batch(self, session_id: str) -> tuple[int, int, int] | None:
        """(segment, offset, end) of a batch append that was written but never committed."""
        row = self.db.execute_sql("SELECT segment, \"offset\", end_offset FROM pending_batch WHERE session_id = ?",
                                  (session_id,)).fetchone()
        return tuple(row) if row else None

    # -- the write ---------------------------------------------------------------------------

    def mark_batch(self, session_id: str, segment: int, offset: int, end: int, *, durable: bool) -> None:
        """Record where a multi-event append is about to be written, before it is written.

        Recovery uses it to tell a batch cut short by a crash (cut aside whole, so a batch is
        all or none) from complete lines that only missed their index commit (indexed).
        ``durable`` commits with synchronous=FULL so the mark survives a power loss too.
        """
        with self._synchronous_full(durable), self._write_lock(), self.db.atomic():
            self.db.execute_sql('INSERT OR REPLACE INTO pending_batch (session_id, segment, "offset", end_offset)'
                                " VALUES (?, ?, ?, ?)", (session_id, segment, offset, end))

    def clear_batch(self, session_id: str, *, durable: bool = False) -> None:
        """Drop the session's mark; ``durable`` as in ``mark_batch``."""
        with self._synchronous_full(durable), self._write_lock(), self.db.atomic():
            self.db.execute_sql("DELETE FROM pending_batch WHERE session_id = ?", (session_id,))

    @contextmanager
    def _synchronous_full(self, durable: bool) -> Iterator[None]:
        """A commit made inside is durable when ``durable`` (and, in WAL mode, every commit before it)."""
        if not durable:
            yield
            return
        conn = self.db.connection()
        conn.execute("PRAGMA synchronous = FULL")
        try:
            yield
        finally:
            conn.execute("PRAGMA synchronous = NORMAL")

    def commit_append(self, state: SessionState, rows: Sequence[tuple], known: BeforeAppend, *,
                      marked: bool = True) -> None:
        """Index one append in one transaction: event rows, the summaries of the runs and the session
        they touch, the session checkpoint (and the end of its pending-batch mark).

        ``rows`` are (session_id, seq, run_id, type, event_id, timestamp, segment, offset, length);
        ``known`` is what ``before_append`` read for them under the session lock, which the caller
        still holds. A run without a row yet is claimed by this session. Raises RunSessionConflict,
        leaving the index unchanged, when another session claimed one of them first (the check
        before the write cannot see a claim made concurrently).
        """
        record = summary_index.record if self.keeps_summaries else summary_index.checkpoint_only
        with self._write_lock(), self.db.atomic():
            conn = self.db.connection()
            record(conn, state.session_id, (state.last_seq, state.segment, state.end_offset), rows,
                   known.session_summary, known.run_summaries)
            # The hot path: one executemany through the same handle, not a Peewee object per row.
            conn.executemany(
                'INSERT INTO event (session_id, seq, run_id, type, event_id, timestamp, segment, "offset", length)'
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            if marked:  # only a batch append leaves a mark behind; a single one need not look
                conn.execute("DELETE FROM pending_batch WHERE session_id = ?", (state.session_id,))

    def forget_after(self, session_id: str, seq: int, state: SessionState | None) -> int:
        """Drop rows past ``seq`` (the log lost them), reset the checkpoint and recompute the session's
        summaries from the rows that remain; returns rows dropped."""
        with self._write_lock(), self.db.atomic():
            dropped = self.Event.delete().where(
                (self.Event.session_id == session_id) & (self.Event.seq > seq)).execute()
            if state is None:
                self.Run.delete().where(self.Run.session_id == session_id).execute()
                self.Session.delete().where(self.Session.session_id == session_id).execute()
            else:
                summary_index.recompute(self.db.connection(), session_id,
                                        (state.last_seq, state.segment, state.end_offset))
        return dropped

    # -- summaries (primary-key reads and index-ordered listings; see summary_index) -------------

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        return summary_index.get_run(self.db.connection(), run_id)

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        return summary_index.get_session(self.db.connection(), session_id)

    def list_sessions(self, *, before: int | None, limit: int) -> list[tuple[int, dict]]:
        return summary_index.list_sessions(self.db.connection(), before=before, limit=limit)

    def list_runs(self, *, session_id: str | None, statuses: Iterable[str] | None,
                  before: tuple[int, int] | None, limit: int) -> list[tuple[tuple[int, int], dict]]:
        return summary_index.list_runs(self.db.connection(), session_id=session_id, statuses=statuses,
                                       before=before, limit=limit)

    def list_session_runs(self, session_id: str, *, after: int, limit: int) -> list[dict]:
        return summary_index.list_session_runs(self.db.connection(), session_id, after=after, limit=limit)

    def counts(self) -> tuple[int, int]:
        """(events, sessions) in the index."""
        events = self.db.execute_sql("SELECT count(*) FROM event").fetchone()[0]
        sessions = self.db.execute_sql("SELECT count(*) FROM session").fetchone()[0]
        return events, sessions

    def replace_from(self, other: Path) -> None:
        """Replace every row with those of the index file ``other``, in one transaction."""
        self.db.execute_sql("ATTACH DATABASE ? AS fresh", (str(other),))
        try:
            with self._write_lock(), self.db.atomic():
                for table in ("event", "run", "session", "pending_batch"):
                    self.db.execute_sql(f"DELETE FROM main.{table}")
                    self.db.execute_sql(f"INSERT INTO main.{table} SELECT * FROM fresh.{table}")
        finally:
            self.db.execute_sql("DETACH DATABASE fresh")

    def run_page_plan(self, run_id: str) -> str:
        """SQLite's plan for a run page found by run id alone."""
        return " | ".join(row[3] for row in self.db.execute_sql("EXPLAIN QUERY PLAN " + _PACKED_RUN_PAGE_SQL,
                                                                (run_id, 0, 100)))

    def query_plan(self, session_id: str, run_id: str | None, *, since_seq: int = 0, limit: int = 100) -> str:
        """SQLite's plan for a page query, for tests and the curious."""
        sql = self._packed_session_page_sql if run_id is None else self._packed_run_page_sql
        params = (session_id, since_seq, limit) if run_id is None else (session_id, run_id, since_seq, limit)
        return " | ".join(row[3] for row in self.db.execute_sql("EXPLAIN QUERY PLAN " + sql, params))
