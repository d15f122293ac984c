"""Run and session summaries on PostgreSQL: the same fold as the files backend (``eventsvc.summaries``),
kept current inside each append's transaction, read by primary key, listed newest first.

A listing orders by ``touched`` (one number per append, from a sequence: unique, so a cursor
``touched < n`` neither repeats nor skips a row in a walk that sees no appends).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import psycopg

from ...jsoncodec import dumps_compact
from ...summaries import RunSummary, SessionSummary, fold

SESSION_COLUMNS = "session_id, first_seq, last_seq, event_count, created_at, updated_at, run_count, active_runs, closed"
RUN_COLUMNS = ("run_id, session_id, status, verify, first_seq, last_seq, event_count, created_at, started_at, "
               "ended_at, updated_at, blocked, warned, counts")
# The columns of a run as the append's write statement reads them from JSON (see writes.py).
RUN_RECORD = ("run_id text, first_seq bigint, status text, verify text, last_seq bigint, event_count bigint, "
              "created_at text, started_at text, ended_at text, updated_at text, blocked bigint, warned bigint, "
              "counts text")


def session_of(row: dict[str, Any] | None, session_id: str) -> SessionSummary:
    """The summary from the session's row as JSON (None: a new session)."""
    if row is None:
        return SessionSummary(session_id)
    return SessionSummary(session_id, row["first_seq"], row["last_seq"], row["event_count"], row["created_at"],
                          row["updated_at"], row["run_count"], row["active_runs"], row["closed"])


def run_of(row: dict[str, Any]) -> RunSummary:
    return RunSummary(row["run_id"], row["session_id"], row["status"], row["verify"], row["first_seq"],
                      row["last_seq"], row["event_count"], row["created_at"], row["started_at"], row["ended_at"],
                      row["updated_at"], row["blocked"], row["warned"], json.loads(row["counts"]))


def session_params(session: SessionSummary) -> dict[str, Any]:
    return {"s_first_seq": session.first_seq, "s_event_count": session.event_count,
            "s_created_at": session.created_at, "s_updated_at": session.updated_at,
            "s_run_count": session.run_count, "s_active_runs": session.active_runs, "s_closed": session.closed}


def runs_json(runs: Iterable[RunSummary], claimed: set[str]) -> str:
    """The runs an append changed, as the JSON records the write statement reads; ``claimed``: new ones."""
    return dumps_compact([{"run_id": r.run_id, "first_seq": r.first_seq, "status": r.status, "verify": r.verify,
                           "last_seq": r.last_seq, "event_count": r.event_count, "created_at": r.created_at,
                           "started_at": r.started_at, "ended_at": r.ended_at, "updated_at": r.updated_at,
                           "blocked": r.blocked, "warned": r.warned,
                           "counts": json.dumps(r.counts, separators=(",", ":")), "claimed": r.run_id in claimed}
                          for r in runs])


def backfill(conn: psycopg.Connection, version: int) -> None:
    """Migration 2: compute every session's and run's summary from the events already stored."""
    if version != 2:
        return
    # Version 1 kept no order of appends: the last event's own timestamp stands for it.
    sessions = [row[0] for row in conn.execute(
        'SELECT s.session_id FROM session s JOIN event e ON e.session_id = s.session_id AND e.seq = s.last_seq '
        'ORDER BY e."timestamp", s.session_id')]
    for session_id in sessions:
        events = conn.execute("SELECT seq, run_id, type, \"timestamp\" FROM event WHERE session_id = %s ORDER BY seq",
                              (session_id,)).fetchall()
        session, runs = SessionSummary(session_id), {}
        fold(session, runs, events)
        touched = conn.execute("SELECT nextval('eventsvc_touched')").fetchone()[0]
        conn.execute("UPDATE session SET first_seq = %(s_first_seq)s, event_count = %(s_event_count)s, "
                     "created_at = %(s_created_at)s, updated_at = %(s_updated_at)s, run_count = %(s_run_count)s, "
                     "active_runs = %(s_active_runs)s, closed = %(s_closed)s, touched = %(touched)s "
                     "WHERE session_id = %(session)s", {**session_params(session), "touched": touched,
                                                        "session": session_id})
        for run in runs.values():
            conn.execute("UPDATE run SET status = %s, verify = %s, last_seq = %s, event_count = %s, created_at = %s, "
                         "started_at = %s, ended_at = %s, updated_at = %s, blocked = %s, warned = %s, counts = %s, "
                         "touched = %s WHERE run_id = %s",
                         (run.status, run.verify, run.last_seq, run.event_count, run.created_at, run.started_at,
                          run.ended_at, run.updated_at, run.blocked, run.warned,
                          json.dumps(run.counts, separators=(",", ":")), touched, run.run_id))


# -- reads ---------------------------------------------------------------------------------------

def get_session(conn: psycopg.Connection, session_id: str) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {SESSION_COLUMNS} FROM session WHERE session_id = %s", (session_id,)).fetchone()
    return _session_dict(row) if row else None


def get_run(conn: psycopg.Connection, run_id: str) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {RUN_COLUMNS} FROM run WHERE run_id = %s", (run_id,)).fetchone()
    return _run_dict(row) if row else None


def list_sessions(conn: psycopg.Connection, *, before: int | None, limit: int) -> list[tuple[int, dict]]:
    rows = conn.execute(f"SELECT {SESSION_COLUMNS}, touched FROM session"
                        + (" WHERE touched < %s" if before is not None else "") + " ORDER BY touched DESC LIMIT %s",
                        ((before, limit) if before is not None else (limit,))).fetchall()
    return [(row[9], _session_dict(row)) for row in rows]


def list_runs(conn: psycopg.Connection, *, session_id: str | None, statuses: list[str] | None,
              before: tuple[int, int] | None, limit: int) -> list[tuple[tuple[int, int], dict]]:
    where, params = ["true"], []
    if session_id is not None:
        where.append("session_id = %s")
        params.append(session_id)
    if statuses is not None:
        where.append("status = ANY(%s)")
        params.append(statuses)
    if before is not None:
        where.append("(touched, last_seq) < (%s, %s)")
        params += list(before)
    rows = conn.execute(f"SELECT {RUN_COLUMNS}, touched FROM run WHERE {' AND '.join(where)} "
                        "ORDER BY touched DESC, last_seq DESC LIMIT %s", (*params, limit)).fetchall()
    return [((row[14], row[5]), _run_dict(row)) for row in rows]


def list_session_runs(conn: psycopg.Connection, session_id: str, *, after: int, limit: int) -> list[dict]:
    rows = conn.execute(f"SELECT {RUN_COLUMNS} FROM run WHERE session_id = %s AND first_seq > %s "
                        "ORDER BY first_seq LIMIT %s", (session_id, after, limit)).fetchall()
    return [_run_dict(row) for row in rows]


def _session_dict(row: tuple) -> dict[str, Any]:
    return SessionSummary(*row[:9]).as_dict()


def _run_dict(row: tuple) -> dict[str, Any]:
    return RunSummary(*row[:13], json.loads(row[13])).as_dict()
