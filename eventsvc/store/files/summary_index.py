"""The summary columns of the index's run and session tables: kept current, read, listed.

``record`` runs inside the transaction that indexes an append (or a repair's or a rebuild's
rows, which go through the same commit), so a summary is never behind or ahead of the event
rows. A single append's usual event, one that only counts (not in ``summaries.STATEFUL_TYPES``)
to a session and a run that have events, is added in SQL alone (``_count_one``: the fold's step
for it is last_seq, event_count, updated_at and one count), decided on what
``Index.before_append`` read under the session lock, which every writer of a session's rows
holds. Anything else is folded with ``eventsvc.summaries.fold`` into the summaries read in the
commit's own transaction and written back: one statement for the session, one per run touched,
whatever the number of events. A run's ``counts`` are added to in SQL (``json_set``), never
decoded and encoded again in Python.

``touched`` orders the listings, newest first, through indexes that end with it (after the
status or session they filter on), so a page never sorts or scans. A commit that re-numbers
takes the next numbers above the highest any session holds: one per run it touches (in the order
of their last events), the session taking the last. Every run's number is unique, and a session
holds the highest of its runs' numbers; one row holds the highest of all. A commit to the
session and the run that hold the highest numbers (a run appended to again and again) leaves the
numbers, and so the listing indexes, as they are: it is still the most recently appended-to.
"""
from __future__ import annotations

import functools
import heapq
import json
import sqlite3
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

from ...errors import RunSessionConflict
from ...lifecycle import STATUSES
from ...summaries import STATEFUL_TYPES, RunSummary, SessionSummary, fold

_RUN_COLUMNS = ("run_id, session_id, first_seq, status, verify, last_seq, event_count, created_at, started_at,"
                " ended_at, updated_at, blocked, warned, counts, touched")
_SESSION_COLUMNS = "session_id, first_seq, last_seq, event_count, created_at, updated_at, run_count, active_runs, closed"
# A run's new ``touched`` is its session's, written first in the same commit, less the run's place
# from the end among the commit's runs (?15; ?13 in _update_run): read in SQL, since RETURNING it
# to Python costs a third of the whole upkeep (callgrind).
_INSERT_RUN = (f"INSERT INTO run ({_RUN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
               " ?14, (SELECT touched FROM session WHERE session_id = ?2) - ?15)")
_INSERT_NUMBERED_RUN = f"INSERT INTO run ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_NEWEST = "touched = (SELECT max(touched) FROM session)"  # whether a session holds the highest number
# What ``Index.before_append`` reads of the session's summary and of each run's: enough to tell
# whether a single event can be added in SQL alone (``_count_one``); a commit that folds reads the
# rest itself (_SUMMARIES_SQL), in its own transaction.
SESSION_BEFORE = f"event_count, touched, {_NEWEST}"
RUN_BEFORE = "session_id, run_id, event_count, touched"
# What a fold starts from: the session's summary (kind 0) and each run's (kind 1; its counts stay
# in SQLite: a commit adds to them there).
_SESSION_SUMMARY = f"first_seq, event_count, created_at, run_count, active_runs, closed, touched, {_NEWEST}"
_RUN_SUMMARY = ("session_id, run_id, status, verify, first_seq, last_seq, event_count, created_at, started_at,"
                " ended_at, updated_at, blocked, warned, touched")
_SUMMARIES_SQL = (f"SELECT 0, {_SESSION_SUMMARY}, NULL, NULL, NULL, NULL, NULL, NULL FROM session"
                  f" WHERE session_id = ?1 UNION ALL SELECT 1, {_RUN_SUMMARY} FROM run"
                  " WHERE run_id IN (SELECT value FROM json_each(?2))")
# The session's summary, its checkpoint and its new number (?12 above the highest: one per run the
# commit touches, at least one), in one statement.
_UPSERT_SESSION = (
    "INSERT INTO session (session_id, last_seq, segment, end_offset, first_seq, event_count, created_at,"
    " updated_at, run_count, active_runs, closed, touched) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
    " (SELECT coalesce(max(touched), 0) + ?12 FROM session))"
    " ON CONFLICT (session_id) DO UPDATE SET last_seq = excluded.last_seq, segment = excluded.segment,"
    " end_offset = excluded.end_offset, first_seq = excluded.first_seq, event_count = excluded.event_count,"
    " created_at = excluded.created_at, updated_at = excluded.updated_at, run_count = excluded.run_count,"
    " active_runs = excluded.active_runs, closed = excluded.closed, touched = excluded.touched")
# The same for a session that keeps its number (the fold read, in this transaction, that it holds
# the highest).
_UPDATE_SESSION = (
    "UPDATE session SET last_seq = ?2, segment = ?3, end_offset = ?4, first_seq = ?5, event_count = ?6,"
    " created_at = ?7, updated_at = ?8, run_count = ?9, active_runs = ?10, closed = ?11 WHERE session_id = ?1")
# One event that only counts (summaries.STATEFUL_TYPES), added to a session that has events and to
# its run, which has events: the fold's step for such an event (last_seq, event_count, updated_at,
# counts) in SQL, the numbers kept or renumbered as a fold would. Keeping them is checked again in
# the commit's transaction (another session may have committed since the read).
_COUNT_IN_NEWEST_SESSION = (
    "UPDATE session SET last_seq = ?2, segment = ?3, end_offset = ?4, event_count = event_count + 1,"
    f" updated_at = ?5 WHERE session_id = ?1 AND {_NEWEST}")
_COUNT_IN_SESSION = (
    "UPDATE session SET last_seq = ?2, segment = ?3, end_offset = ?4, event_count = event_count + 1,"
    " updated_at = ?5, touched = (SELECT max(touched) FROM session) + 1 WHERE session_id = ?1")
_COUNT_IN_NEWEST_RUN = (
    "UPDATE run SET last_seq = ?2, event_count = event_count + 1, updated_at = ?3,"
    " counts = json_set(counts, ?4, coalesce(json_extract(counts, ?4), 0) + 1) WHERE run_id = ?1")
_COUNT_IN_RUN = (
    "UPDATE run SET last_seq = ?2, event_count = event_count + 1, updated_at = ?3,"
    " counts = json_set(counts, ?4, coalesce(json_extract(counts, ?4), 0) + 1),"
    " touched = (SELECT touched FROM session WHERE session_id = ?5) WHERE run_id = ?1")
_ORDER = " ORDER BY touched DESC LIMIT ?"


_decode = json.JSONDecoder().decode
_encode = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps with options builds an encoder per call


@functools.cache
def _update_run(types: int, status: bool, renumber: bool) -> str:
    """The UPDATE of a run's summary that adds to ``types`` of its counts (type names are [a-z0-9_]).

    It sets ``status`` and ``touched`` only when they change: SQLite re-keys an index whenever
    the statement sets one of its columns, whether or not the value differs.
    """
    added = ", ".join(f"?{n}, coalesce(json_extract(counts, ?{n}), 0) + ?{n + 1}"
                      for n in range(14, 14 + 2 * types, 2))
    return ("UPDATE run SET verify = ?3, last_seq = ?5, event_count = ?6, created_at = ?7, started_at = ?8,"
            " ended_at = ?9, updated_at = ?10, blocked = ?11, warned = ?12"
            + (", status = ?4" if status else "")
            + (", touched = (SELECT touched FROM session WHERE session_id = ?2) - ?13" if renumber else "")
            + f", counts = json_set(counts, {added}) WHERE run_id = ?1")


def _run_of(row: Sequence[Any]) -> RunSummary:
    return RunSummary(row[0], row[1], row[3], row[4], row[2], row[5], row[6], row[7], row[8], row[9], row[10],
                      row[11], row[12], _decode(row[13]))


def _run_values(run: RunSummary) -> tuple:
    return (run.run_id, run.session_id, run.first_seq, run.status, run.verify, run.last_seq, run.event_count,
            run.created_at, run.started_at, run.ended_at, run.updated_at, run.blocked, run.warned,
            _encode(run.counts))


def session_before(session_id: str, row: Sequence[Any] | None) -> SessionSummary:
    """A session's summary from the ``_SESSION_SUMMARY`` columns (None: a new session)."""
    if row is None:
        return SessionSummary(session_id)
    return SessionSummary(session_id, row[0], 0, row[1], row[2], None, row[3], row[4], bool(row[5]))


def run_before(row: Sequence[Any]) -> RunSummary:
    """A run's summary from the ``_RUN_SUMMARY`` columns, its counts empty: what a commit adds to them."""
    return RunSummary(row[1], row[0], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10],
                      row[11], row[12], {})


def record(conn: sqlite3.Connection, session_id: str, checkpoint: tuple[int, int, int], rows: Sequence[tuple],
           session_row: Sequence[Any] | None, run_rows: dict[str, Sequence[Any]]) -> None:
    """Fold index rows ``(session_id, seq, run_id, type, event_id, timestamp, …)`` into the summaries
    and write the session's ``checkpoint`` (last_seq, segment, end_offset). Caller holds the transaction
    and the session lock.

    ``session_row`` and ``run_rows`` (run_id -> row) are the ``SESSION_BEFORE`` / ``RUN_BEFORE`` columns
    read under that lock. A fold reads the summaries again in the commit's transaction: a run of
    ``rows`` without one is new and claimed here. Raises RunSessionConflict when a run of ``rows``
    belongs to another session (which may have claimed it since ``run_rows`` was read).
    """
    if len(rows) == 1 and session_row is not None and rows[0][3] not in STATEFUL_TYPES and _count_one(
            conn, session_id, checkpoint, rows[0], session_row, run_rows):
        return
    session_row, run_rows = None, {}
    run_ids = list({row[2] for row in rows if row[2] is not None})
    for row in conn.execute(_SUMMARIES_SQL, (session_id, json.dumps(run_ids))):
        if row[0] == 0:
            session_row = row[1:]
        else:
            run_rows[row[2]] = row[1:]
    session = session_before(session_id, session_row)
    runs: dict[str, RunSummary] = {}
    for run_id, before in run_rows.items():
        if before[0] != session_id:
            raise RunSessionConflict(f"run {run_id!r} belongs to session {before[0]!r}",
                                     {"run_id": run_id, "session_id": before[0]})
        runs[run_id] = run_before(before)
    touched_runs = fold(session, runs, [(row[1], row[2], row[3], row[5]) for row in rows])
    ordered = sorted(touched_runs, key=lambda run_id: runs[run_id].last_seq)
    # The session and its only run touched hold the highest numbers already: no new numbers, no
    # listing index re-keyed.
    renumber = not (session_row is not None and session_row[7] and (
        not ordered or len(ordered) == 1 and ordered[0] in run_rows and run_rows[ordered[0]][13] == session_row[6]))
    values = _session_values(session, checkpoint)
    if renumber:
        conn.execute(_UPSERT_SESSION, (*values, max(1, len(ordered))))
    else:
        conn.execute(_UPDATE_SESSION, values)
    for place, run_id in enumerate(reversed(ordered)):
        run = runs[run_id]
        before = run_rows.get(run_id)
        if before is not None:
            added = [value for name, count in run.counts.items() for value in (_path(name), count)]
            conn.execute(_update_run(len(run.counts), run.status != before[2], renumber), (
                run_id, session_id, run.verify, run.status, run.last_seq, run.event_count, run.created_at,
                run.started_at, run.ended_at, run.updated_at, run.blocked, run.warned, place, *added))
        else:
            conn.execute(_INSERT_RUN, (*_run_values(run), place))  # no row in this transaction's read: new



def _session_values(session: SessionSummary, checkpoint: tuple[int, int, int]) -> tuple:
    """The session's row (``_UPDATE_SESSION``; ``_UPSERT_SESSION`` takes its new number after it)."""
    return (session.session_id, *checkpoint, session.first_seq, session.event_count, session.created_at,
            session.updated_at, session.run_count, session.active_runs, int(session.closed))

def _count_one(conn: sqlite3.Connection, session_id: str, checkpoint: tuple[int, int, int], row: tuple,
               session_row: Sequence[Any], run_rows: dict[str, Sequence[Any]]) -> bool:
    """Add one event that only counts in SQL, without the fold's objects (a single append's usual
    case), when its session and its run (if any) have events; False, having written nothing, when
    they do not (``record`` then folds)."""
    run_id = row[2]
    if not session_row[0]:
        return False
    newest = session_row[2]
    if run_id is not None:
        before = run_rows.get(run_id)
        if before is None or before[0] != session_id or not before[2]:
            return False
        newest = newest and before[3] == session_row[1]
    values = (session_id, *checkpoint, row[5])
    if not (newest and conn.execute(_COUNT_IN_NEWEST_SESSION, values).rowcount):
        newest = False
        conn.execute(_COUNT_IN_SESSION, values)
    if run_id is not None:
        if newest:
            conn.execute(_COUNT_IN_NEWEST_RUN, (run_id, row[1], row[5], _path(row[3])))
        else:
            conn.execute(_COUNT_IN_RUN, (run_id, row[1], row[5], _path(row[3]), session_id))
    return True


@functools.cache
def _path(event_type: str) -> str:
    """The JSON path of a type's count (registered type names need no quoting)."""
    return "$." + event_type


def checkpoint_only(conn: sqlite3.Connection, session_id: str, checkpoint: tuple[int, int, int],
                    rows: Sequence[tuple], session_row: Sequence[Any] | None,
                    run_rows: dict[str, Sequence[Any]]) -> None:
    """What the commit wrote before summaries (5270f37^): claim the new runs, write the checkpoint.

    Only for the bench, which weighs ``record`` against it in one run (``Index.keeps_summaries``);
    an index written through it has no usable summaries.
    """
    claims = dict.fromkeys(row[2] for row in rows if row[2] is not None and row[2] not in run_rows)
    for run_id in claims:
        first_seq = next(row[1] for row in rows if row[2] == run_id)
        conn.execute("INSERT OR IGNORE INTO run (run_id, session_id, first_seq, status, last_seq, event_count,"
                     " blocked, warned, counts, touched) VALUES (?, ?, ?, 'unknown', 0, 0, 0, 0, '{}', 0)",
                     (run_id, session_id, first_seq))
        owner = conn.execute("SELECT session_id FROM run WHERE run_id = ?", (run_id,)).fetchone()[0]
        if owner != session_id:
            raise RunSessionConflict(f"run {run_id!r} belongs to session {owner!r}",
                                     {"run_id": run_id, "session_id": owner})
    conn.execute("INSERT INTO session (session_id, last_seq, segment, end_offset, first_seq, event_count, run_count,"
                 " active_runs, closed, touched) VALUES (?, ?, ?, ?, 0, 0, 0, 0, 0, 0) ON CONFLICT (session_id)"
                 " DO UPDATE SET last_seq = excluded.last_seq, segment = excluded.segment,"
                 " end_offset = excluded.end_offset", (session_id, *checkpoint))


def recompute(conn: sqlite3.Connection, session_id: str, checkpoint: tuple[int, int, int]) -> None:
    """Rebuild one session's summaries from its event rows (after rows were dropped: a rare repair).

    Dropping a session's last rows appends nothing, so the session keeps its place in the listings,
    and its runs keep theirs among the numbers they held (re-dealt in the order of their last
    events, which the drop may have changed): no number is new, so every number stays unique
    and none of a run's rises above its session's.
    """
    held = conn.execute("SELECT touched FROM session WHERE session_id = ?", (session_id,)).fetchone()
    numbers = dict(conn.execute("SELECT run_id, touched FROM run WHERE session_id = ?", (session_id,)))
    events = conn.execute("SELECT seq, run_id, type, timestamp FROM event WHERE session_id = ? ORDER BY seq",
                          (session_id,))
    session, runs = SessionSummary(session_id), {}
    fold(session, runs, events)
    ordered = sorted(runs.values(), key=lambda run: run.last_seq)
    conn.execute("DELETE FROM run WHERE session_id = ?", (session_id,))
    if held is not None and all(run.run_id in numbers for run in ordered):
        conn.execute(_UPDATE_SESSION, _session_values(session, checkpoint))
        kept = sorted(numbers[run.run_id] for run in ordered)
        for run, touched in zip(ordered, kept):
            conn.execute(_INSERT_NUMBERED_RUN, (*_run_values(run), touched))
        return
    conn.execute(_UPSERT_SESSION, (*_session_values(session, checkpoint), max(1, len(ordered))))
    for place, run in enumerate(reversed(ordered)):
        conn.execute(_INSERT_RUN, (*_run_values(run), place))


# -- reads ---------------------------------------------------------------------------------------

def get_run(conn: sqlite3.Connection, run_id: str) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM run WHERE run_id = ?", (run_id,)).fetchone()
    return _run_of(row).as_dict() if row else None


def get_session(conn: sqlite3.Connection, session_id: str) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {_SESSION_COLUMNS} FROM session WHERE session_id = ?", (session_id,)).fetchone()
    return _session_dict(row) if row else None


def _session_dict(row: Sequence[Any]) -> dict[str, Any]:
    return SessionSummary(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], bool(row[8])).as_dict()


def list_sessions(conn: sqlite3.Connection, *, before: int | None, limit: int) -> list[tuple[int, dict]]:
    """Up to ``limit`` (touched, summary), most recently appended-to first, below ``before``."""
    sql = f"SELECT {_SESSION_COLUMNS}, touched FROM session"
    params: list[Any] = []
    if before is not None:
        sql += " WHERE touched < ?"
        params.append(before)
    rows = conn.execute(sql + " ORDER BY touched DESC LIMIT ?", (*params, limit))
    return [(row[9], _session_dict(row)) for row in rows]


def list_runs(conn: sqlite3.Connection, *, session_id: str | None, statuses: Iterable[str] | None,
              before: tuple[int, int] | None, limit: int) -> list[tuple[tuple[int, int], dict]]:
    """Up to ``limit`` ((touched, last_seq), summary), most recently appended-to first, below ``before``.

    ``touched`` alone orders (it is unique); last_seq rides along in the position for the cursor's
    shape, which both backends share. Each status is one range of the (status, touched) index;
    several (all seven without a filter) are merged here rather than sorted by SQLite, so a page
    reads at most ``limit`` rows per status.
    """
    after = " AND touched < ?" if before is not None else ""
    position = (before[0],) if before is not None else ()
    if session_id is not None:
        where, params = "session_id = ?", [session_id]
        if statuses is not None:
            wanted = list(statuses)
            where += f" AND status IN ({', '.join('?' * len(wanted))})"
            params += wanted
        queries = [(where, params)]
    else:  # no status filter: every status's range, merged (one index fewer for appends to keep current)
        queries = [("status = ?", [status]) for status in dict.fromkeys(STATUSES if statuses is None else statuses)]
    streams = []
    for where, params in queries:
        rows = conn.execute(f"SELECT {_RUN_COLUMNS} FROM run WHERE {where}{after}{_ORDER}",
                            (*params, *position, limit)).fetchall()
        streams.append([((row[14], row[5]), row) for row in rows])
    merged = islice(heapq.merge(*streams, key=lambda item: item[0], reverse=True), limit)
    return [(key, _run_of(row).as_dict()) for key, row in merged]


def list_session_runs(conn: sqlite3.Connection, session_id: str, *, after: int, limit: int) -> list[dict]:
    """Up to ``limit`` of the session's run summaries with ``first_seq > after``, in first_seq order."""
    rows = conn.execute(f"SELECT {_RUN_COLUMNS} FROM run WHERE session_id = ? AND first_seq > ?"
                        " ORDER BY first_seq LIMIT ?", (session_id, after, limit))
    return [_run_of(row).as_dict() for row in rows]
