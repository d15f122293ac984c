"""``eventsvc audit --database``: the file audit's checks, on a PostgreSQL store (no Flask, no click).

Everything is read in one read-only snapshot. The set checks (seq gaps and repeats, duplicate
event ids, runs in two sessions, listing numbers) are SQL (``audit_sql``). Then one ordered pass over the event
rows through a server-side cursor, beside the session and run rows in the same order (a merge),
checks what needs the envelope itself: that its stored text parses, passes StoredEnvelopeSchema
and agrees with its row's columns; the run lifecycles; and that each session's and run's summary
row equals the one folded from its event rows by the store's own fold. Memory holds one
session's runs at a time, whatever the size of the database.

Findings use the file audit's codes and ``Finding`` shape. Their path names rows, not files:
``host:port/db/event/<session_id>`` with the seq as the line, ``.../session/<session_id>`` and
``.../run/<run_id>`` with line 0.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import groupby
from operator import itemgetter
from typing import Any

from marshmallow import ValidationError

from .audit import Finding, Summary, json_problem, schema_messages
from .audit_checks import Lifecycle
from .audit_sql import (Connection, RunOwners, check_event_ids, check_listing_numbers, check_run_owners, check_seqs,
                        event_path)
from ..schemas import StoredEnvelopeSchema, stored_envelope_is_valid
from ..store.files import untrusted
from ..store.postgres.connect import where as where_of
from ..store.postgres.snapshot import snapshot, stream
from ..store.postgres.summaries import RUN_COLUMNS, SESSION_COLUMNS
from ..summaries import RunSummary, SessionSummary, fold
from ..types import EVENT_TYPES, EventTypeSet

# An envelope longer than the largest event the service accepts is not even transferred (its length
# comes from the stored value's header); fetches shrink when envelopes are large (see snapshot.stream).
EVENTS = """
SELECT session_id, seq, run_id, type, event_id, "timestamp",
       CASE WHEN octet_length(envelope) <= %(max_line)s THEN envelope END, octet_length(envelope)
FROM event ORDER BY session_id, seq
"""
SESSIONS = f"SELECT {SESSION_COLUMNS} FROM session ORDER BY session_id"
RUNS = f"SELECT {RUN_COLUMNS} FROM run ORDER BY session_id, first_seq, run_id"
# Columns that repeat a field of the envelope, and the envelope key each repeats (session_id apart).
_COLUMN_KEYS = ("seq", "run_id", "type", "event_id", "timestamp")


def audit_database(url: str, *, event_types: EventTypeSet = EVENT_TYPES,
                   on_finding: Callable[[Finding], None] | None = None,
                   max_line: int = untrusted.DEFAULT_MAX_LINE) -> Summary:
    """Audit the eventsvc database at ``url``; findings go to ``on_finding`` as they are found.

    An envelope longer than ``max_line`` bytes is LINE_TOO_LONG, neither read nor parsed (its
    row's columns still count towards the summaries and lifecycles).

    Raises StorageError when it cannot be read, SchemaMismatch when it holds no eventsvc schema
    of this version (see ``store.postgres.snapshot``).
    """
    audit = _DatabaseAudit(where_of(url), event_types, on_finding or (lambda finding: None), max_line)
    with snapshot(url) as conn:
        audit.run(conn)
    return audit.summary


ITERSIZE = 2000  # rows per fetch of the ordered passes


def _rows(conn: Connection, name: str, sql: str) -> Iterator[tuple[Any, ...]]:
    return stream(conn, name, sql, itersize=ITERSIZE)


class _Peek:
    """An ordered row stream keyed by its session_id column, taken a session at a time."""

    def __init__(self, rows: Iterator[tuple[Any, ...]], key: int) -> None:
        self.rows, self.key = rows, key
        self.head = next(rows, None)

    def next_key(self) -> str | None:
        return self.head[self.key] if self.head is not None else None

    def take(self, session_id: str) -> list[tuple[Any, ...]]:
        taken = []
        while self.head is not None and self.head[self.key] == session_id:
            taken.append(self.head)
            self.head = next(self.rows, None)
        return taken


class _DatabaseAudit:
    def __init__(self, where: str, event_types: EventTypeSet, on_finding: Callable[[Finding], None],
                 max_line: int) -> None:
        self.where = where
        self.max_line = max_line
        self.event_types = event_types
        self.schema = StoredEnvelopeSchema(event_types=event_types)
        self.on_finding = on_finding
        self.summary = Summary()
        self.owners = RunOwners()

    def emit(self, path: str, line: int, code: str, message: str) -> None:
        self.summary.findings[code] += 1
        self.on_finding(Finding(path, line, code, message))

    def run(self, conn: Connection) -> None:
        check_seqs(conn, self.where, self.emit)
        check_event_ids(conn, self.where, self.emit)
        self.owners = check_run_owners(conn, self.where, self.emit)
        check_listing_numbers(conn, self.where, self.emit)
        sessions = _Peek(_rows(conn, "audit_sessions", SESSIONS), 0)
        runs = _Peek(_rows(conn, "audit_runs", RUNS), 1)
        events = groupby(stream(conn, "audit_events", EVENTS, {"max_line": self.max_line}, itersize=ITERSIZE,
                                row_bytes=itemgetter(7)), key=itemgetter(0))
        group = next(events, None)
        folded_runs = 0
        while True:
            keys = [key for key in (group[0] if group else None, sessions.next_key(), runs.next_key())
                    if key is not None]
            if not keys:
                break
            session_id = min(keys)
            rows = group[1] if group is not None and group[0] == session_id else iter(())
            folded_runs += self._session(session_id, rows, sessions.take(session_id), runs.take(session_id))
            if group is not None and group[0] == session_id:
                group = next(events, None)
        self.summary.runs = folded_runs - sum(self.owners.extra_pairs.values())

    def _session(self, session_id: str, rows: Iterator[tuple[Any, ...]], session_rows: list[tuple[Any, ...]],
                 run_rows: list[tuple[Any, ...]]) -> int:
        """Check one session's event rows and its summary rows; returns how many runs its events name."""
        self.summary.sessions += 1
        path = event_path(self.where, session_id)
        lifecycle = Lifecycle(self.emit)
        folded, runs = SessionSummary(session_id), {}
        fold(folded, runs, self._checked(path, rows, lifecycle))
        lifecycle.finish()
        session_path = f"{self.where}/session/{session_id}"
        if not session_rows:
            if folded.event_count:
                self.emit(session_path, 0, "INDEX_MISSING_ROW", f"session {session_id!r} has event rows but no row "
                          "in the session table")
        elif not folded.event_count:
            self.emit(session_path, 0, "INDEX_EXTRA_ROW", f"session {session_id!r} is in the session table, "
                      "but no event row has it")
        else:
            self._compare(session_path, f"session {session_id!r}: its summary row",
                          SessionSummary(*session_rows[0][:9]).as_dict(), folded.as_dict())
        stored = {row[0]: row for row in run_rows}
        for run_id in sorted(set(stored).difference(runs).difference(self.owners.flagged)):
            self.emit(f"{self.where}/run/{run_id}", 0, "INDEX_EXTRA_ROW", f"run {run_id!r} is in the run table "
                      f"(session {session_id!r}), but no event row of that session names it")
        for run_id, run in runs.items():
            if run_id in stored and run_id not in self.owners.flagged:
                row = stored[run_id]
                self._compare(f"{self.where}/run/{run_id}", f"session {session_id!r}: run {run_id!r}'s summary row",
                              _run_dict(row), run.as_dict())
        return len(runs)

    def _checked(self, path: str, rows: Iterator[tuple[Any, ...]],
                 lifecycle: Lifecycle) -> Iterator[tuple[int, str | None, str, str]]:
        """Each row after the envelope and lifecycle checks, as the fold takes it (from its columns:
        the summaries were folded from the same values when it was appended)."""
        summary = self.summary
        for session_id, seq, run_id, type_, event_id, timestamp, envelope, length in rows:
            summary.events += 1
            summary.bytes += length + 1
            if envelope is None:
                self.emit(path, seq, "LINE_TOO_LONG", f"an envelope of {length} bytes, longer than the largest event "
                          f"the service accepts ({self.max_line} bytes): not read, not parsed")
            else:
                self._envelope(path, (session_id, seq, run_id, type_, event_id, timestamp), envelope)
            if run_id is not None:
                lifecycle.step(run_id, type_, seq, path, seq)
            yield seq, run_id, type_, timestamp

    def _envelope(self, path: str, columns: tuple[Any, ...], envelope: str) -> None:
        """The stored text parses, passes the schema and holds its row's columns."""
        raw = envelope.encode("utf-8")
        seq = columns[1]
        try:
            obj = untrusted.decode(raw)
        except ValueError as exc:
            self.emit(path, seq, "INVALID_JSON", json_problem(exc, raw))
            return
        if not stored_envelope_is_valid(obj, self.event_types):
            self.emit(path, seq, "INVALID_ENVELOPE", self._envelope_problem(obj))
        if isinstance(obj, dict):
            get = obj.get
            if (get("session_id"), get("seq"), get("run_id"), get("type"), get("event_id"),
                    get("timestamp")) != columns:
                self._disagrees(path, columns, obj)

    def _disagrees(self, path: str, columns: tuple[Any, ...], envelope: dict[str, Any]) -> None:
        """Name each field the envelope holds that differs from its row's column (a missing key is
        the schema check's finding)."""
        session_id, seq = columns[0], columns[1]
        if "session_id" in envelope and envelope["session_id"] != session_id:
            self.emit(path, seq, "SESSION_MISMATCH", f"session_id {envelope['session_id']!r} in the envelope is "
                      f"not its row's {session_id!r}")
        wrong = [f"{key} {column!r} (the envelope's is {envelope[key]!r})"
                 for key, column in zip(_COLUMN_KEYS, columns[1:]) if key in envelope and envelope[key] != column]
        if wrong:
            self.emit(path, seq, "INDEX_WRONG_BYTES", f"the row for seq {seq} has " + ", ".join(wrong))

    def _envelope_problem(self, obj: Any) -> str:
        try:
            self.schema.load(obj)
        except ValidationError as exc:
            return schema_messages(exc.messages)
        return "the fast envelope check and StoredEnvelopeSchema disagree"  # never expected: see tests

    def _compare(self, path: str, what: str, stored: dict[str, Any], folded: dict[str, Any]) -> None:
        wrong = [f"{key} {stored[key]!r} (the events' is {folded[key]!r})"
                 for key in folded if stored.get(key) != folded[key]]
        if wrong:
            self.emit(path, 0, "INDEX_WRONG_SUMMARY", f"{what} has " + ", ".join(wrong))


def _run_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """A run row as the summary it stores (counts that are not JSON compare as their text)."""
    summary = RunSummary(*row[:13]).as_dict()
    try:
        summary["counts"] = untrusted.decode(row[13].encode("utf-8"))
    except ValueError:
        summary["counts"] = row[13]
    return summary
