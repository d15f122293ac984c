"""The summary columns of the index's run and session tables: kept current, read, listed.

``record`` runs inside the transaction that indexes an append (or a repair's or a rebuild's
rows, which go through the same commit), so a summary is never behind or ahead of the event
rows. It reads the touched runs and the session by primary key, folds the new rows in with
``eventsvc.summaries.fold`` and writes them back: the cost is per run touched, not per event.

``touched`` numbers the commits (one past the highest a session holds); the listings order by
it, newest first, through indexes that start with it, so a page never sorts or scans.
"""
from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

from ...errors import RunSessionConflict
from ...lifecycle import STATUSES
from ...summaries import RunSummary, SessionSummary, fold

_RUN_COLUMNS = ("run_id, session_id, first_seq, status, verify, last_seq, event_count, created_at, started_at,"
                " ended_at, updated_at, blocked, warned, counts, touched")
_SESSION_COLUMNS = "session_id, first_seq, last_seq, event_count, created_at, updated_at, run_count, active_runs, closed"
_INSERT_RUN = f"INSERT INTO run ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPDATE_RUN = ("UPDATE run SET status = ?4, verify = ?5, last_seq = ?6, event_count = ?7, created_at = ?8,"
               " started_at = ?9, ended_at = ?10, updated_at = ?11, blocked = ?12, warned = ?13, counts = ?14,"
               " touched = ?15 WHERE run_id = ?1")
# What a commit must know first, in one statement: the highest ``touched`` and the session's summary
# (the row whose run_id is NULL), then the rows of the runs the commit names.
_BEFORE = ("SELECT NULL, (SELECT max(touched) FROM session), s.first_seq, s.event_count, s.created_at, s.run_count,"
           " s.active_runs, s.closed, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
           " FROM (SELECT 1) LEFT JOIN session AS s ON s.session_id = ?")
_UPSERT_SESSION = (
    "INSERT INTO session (session_id, last_seq, segment, end_offset, first_seq, event_count, created_at,"
    " updated_at, run_count, active_runs, closed, touched) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (session_id) DO UPDATE SET last_seq = excluded.last_seq, segment = excluded.segment,"
    " end_offset = excluded.end_offset, first_seq = excluded.first_seq, event_count = excluded.event_count,"
    " created_at = excluded.created_at, updated_at = excluded.updated_at, run_count = excluded.run_count,"
    " active_runs = excluded.active_runs, closed = excluded.closed, touched = excluded.touched")
_ORDER = " ORDER BY touched DESC, last_seq DESC LIMIT ?"


_decode = json.JSONDecoder().decode
_encode = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps with options builds an encoder per call


def _run_of(row: Sequence[Any]) -> RunSummary:
    return RunSummary(row[0], row[1], row[3], row[4], row[2], row[5], row[6], row[7], row[8], row[9], row[10],
                      row[11], row[12], _decode(row[13]))


def _run_values(run: RunSummary, touched: int) -> tuple:
    return (run.run_id, run.session_id, run.first_seq, run.status, run.verify, run.last_seq, run.event_count,
            run.created_at, run.started_at, run.ended_at, run.updated_at, run.blocked, run.warned,
            _encode(run.counts), touched)


def record(conn: sqlite3.Connection, session_id: str, checkpoint: tuple[int, int, int], rows: Sequence[tuple]) -> None:
    """Fold index rows ``(session_id, seq, run_id, type, event_id, timestamp, …)`` into the summaries
    and write the session's ``checkpoint`` (last_seq, segment, end_offset). Caller holds the transaction.

    Raises RunSessionConflict when a run of ``rows`` belongs to another session.
    """
    run_ids = list(dict.fromkeys(row[2] for row in rows if row[2] is not None))
    sql = _BEFORE
    if run_ids:
        sql += f" UNION ALL SELECT {_RUN_COLUMNS} FROM run WHERE run_id IN ({', '.join('?' * len(run_ids))})"
    runs: dict[str, RunSummary] = {}
    session = SessionSummary(session_id)
    touched = 1
    for row in conn.execute(sql, (session_id, *run_ids)):
        if row[0] is None:
            touched = (row[1] or 0) + 1
            if row[2] is not None:
                session = SessionSummary(session_id, row[2], 0, row[3], row[4], None, row[5], row[6], bool(row[7]))
        elif row[1] != session_id:
            raise RunSessionConflict(f"run {row[0]!r} belongs to session {row[1]!r}",
                                     {"run_id": row[0], "session_id": row[1]})
        else:
            runs[row[0]] = _run_of(row)
    known = set(runs)
    fold(session, runs, ((row[1], row[2], row[3], row[5]) for row in rows))
    for run_id in run_ids:
        conn.execute(_UPDATE_RUN if run_id in known else _INSERT_RUN, _run_values(runs[run_id], touched))
    _write_session(conn, session, checkpoint, touched)


def _write_session(conn: sqlite3.Connection, session: SessionSummary, checkpoint: tuple[int, int, int],
                   touched: int) -> None:
    conn.execute(_UPSERT_SESSION, (session.session_id, *checkpoint, session.first_seq, session.event_count,
                                   session.created_at, session.updated_at, session.run_count, session.active_runs,
                                   int(session.closed), touched))


def recompute(conn: sqlite3.Connection, session_id: str, checkpoint: tuple[int, int, int]) -> None:
    """Rebuild one session's summaries from its event rows (after rows were dropped: a rare repair)."""
    events = conn.execute("SELECT seq, run_id, type, timestamp FROM event WHERE session_id = ? ORDER BY seq",
                          (session_id,))
    session, runs = SessionSummary(session_id), {}
    fold(session, runs, events)
    top = conn.execute("SELECT max(touched) FROM session").fetchone()[0]
    touched = (top or 0) + 1
    conn.execute("DELETE FROM run WHERE session_id = ?", (session_id,))
    for run in runs.values():
        conn.execute(_INSERT_RUN, _run_values(run, touched))
    _write_session(conn, session, checkpoint, touched)


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

    Each status is one range of the (status, touched, last_seq) index; several (all seven without a
    filter) are merged here rather than sorted by SQLite, so a page reads at most ``limit`` rows per status.
    """
    after = " AND (touched, last_seq) < (?, ?)" if before is not None else ""
    position = tuple(before) if before is not None else ()
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
