"""One append or batch as one PostgreSQL transaction, serialised per session (as Message DB does).

A transaction-scoped advisory lock keyed by the session id is taken first; the state read
after it (last seq, stored ids, run owners) is therefore current, and the same checks as the
files backend (``eventsvc.store.appends``) decide what to write. The writes, the session's
new last seq and the NOTIFY that wakes every host's readers are one statement, committed
together or not at all: no gap after a rollback, no duplicate, nothing half-written. The run and
session summaries the append changes are folded in Python (the files backend's fold) and
written by the same statement.

The transaction travels in two round trips, in pipeline mode: BEGIN, the lock and the state
read; then the write and COMMIT. A hand-written INSERT + commit takes three (BEGIN, INSERT,
COMMIT), so the checks and summaries cost server work, not waiting on the network.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

import psycopg
import psycopg.errors

from ...errors import RunSessionConflict
from ...jsoncodec import dumps_compact as dumps
from ...summaries import fold
from .. import AppendResult, appends
from ..drafts import Draft
from . import summaries

CHANNEL = "eventsvc_appends"
T = TypeVar("T")

_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
_STATE = """
SELECT (SELECT row_to_json(s)::text FROM session s WHERE s.session_id = %(session)s),
       ARRAY(SELECT envelope FROM event WHERE session_id = %(session)s AND event_id = ANY(%(event_ids)b)),
       ARRAY(SELECT row_to_json(r)::text FROM run r WHERE r.run_id = ANY(%(run_ids)b))
"""
# Parent rows first, in CTEs of the same statement: the foreign keys are checked at its end.
# Runs and events travel as one JSON text each, encoded by the json module's C encoder: a
# parameter per column costs psycopg's array dumping in Python (and the text array format
# would escape every quote of every envelope once more).
_WRITE = f"""
WITH stamp AS (SELECT nextval('eventsvc_touched') AS touched),
touched AS (
    INSERT INTO session (session_id, last_seq, first_seq, event_count, created_at, updated_at, run_count,
                         active_runs, closed, touched)
    SELECT %(session)s, %(last_seq)s, %(s_first_seq)s, %(s_event_count)s, %(s_created_at)s, %(s_updated_at)s,
           %(s_run_count)s, %(s_active_runs)s, %(s_closed)s, stamp.touched FROM stamp
    ON CONFLICT (session_id) DO UPDATE SET last_seq = EXCLUDED.last_seq, first_seq = EXCLUDED.first_seq,
        event_count = EXCLUDED.event_count, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
        run_count = EXCLUDED.run_count, active_runs = EXCLUDED.active_runs, closed = EXCLUDED.closed,
        touched = EXCLUDED.touched
), given_run AS (
    SELECT * FROM json_to_recordset(%(runs)s::json) AS g({summaries.RUN_RECORD}, claimed boolean)
), run_claimed AS (
    -- A plain INSERT: a run another session claimed after our read (under its own session's lock)
    -- fails on run_pkey, and the whole transaction with it.
    INSERT INTO run (run_id, session_id, first_seq, status, verify, last_seq, event_count, created_at, started_at,
                     ended_at, updated_at, blocked, warned, counts, touched)
    SELECT g.run_id, %(session)s, g.first_seq, g.status, g.verify, g.last_seq, g.event_count, g.created_at,
           g.started_at, g.ended_at, g.updated_at, g.blocked, g.warned, g.counts, stamp.touched
    FROM given_run g, stamp WHERE g.claimed
), run_updated AS (
    -- The session's own runs: only its appends change them, and they hold its lock.
    UPDATE run SET status = g.status, verify = g.verify, last_seq = g.last_seq, event_count = g.event_count,
        created_at = g.created_at, started_at = g.started_at, ended_at = g.ended_at, updated_at = g.updated_at,
        blocked = g.blocked, warned = g.warned, counts = g.counts, touched = stamp.touched
    FROM given_run g, stamp WHERE NOT g.claimed AND run.run_id = g.run_id
), stored AS (
    INSERT INTO event (session_id, seq, run_id, type, event_id, "timestamp", envelope)
    SELECT %(session)s, e.seq, e.run_id, e.type, e.event_id, e.ts, e.envelope
    FROM json_to_recordset(%(events)s::json)
        AS e(seq bigint, run_id text, type text, event_id text, ts text, envelope text)
)
SELECT pg_notify(%(channel)s, %(last_seq)s::text || ' ' || %(session)s)
"""


def append_transaction(conn: psycopg.Connection, session_id: str, drafts: list[Draft],
                       max_event_bytes: int) -> tuple[AppendResult, int]:
    """Store the drafts that are new, with the summaries they change; returns the result and the last seq.

    Raises SeqConflict, EventIdConflict, RunSessionConflict or EventTooLarge with nothing written.
    """
    try:
        return _in_one_transaction(conn, lambda: _append(conn, session_id, drafts, max_event_bytes))
    except psycopg.errors.UniqueViolation as exc:
        _end_failed_transaction(conn)
        if exc.diag.constraint_name != "run_pkey":
            raise
        # Another session claimed one of these runs after our read (it held its own session's lock).
        run_ids = sorted({draft.run_id for draft in drafts if draft.run_id is not None})
        raise _claimed_elsewhere(conn, session_id, run_ids) from None
    except psycopg.Error:
        _end_failed_transaction(conn)
        raise


def _in_one_transaction(conn: psycopg.Connection, work: Callable[[], T]) -> T:
    """``work`` between BEGIN and COMMIT, in pipeline mode: statements are queued and sent together.

    Only fetching a result waits for the server (the state read), then leaving the pipeline
    (the write and COMMIT): two round trips. BEGIN and COMMIT are plain statements, since
    psycopg's ``transaction()`` would sync at each. A statement the server refused is raised
    after the pipeline is left (the server skipped the rest, COMMIT included); a domain error
    raised by ``work`` rolls back.
    """
    failure: psycopg.Error | None = None
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            try:
                result = work()
                conn.execute("COMMIT")
            except psycopg.Error as exc:
                failure = exc  # raised below: raising here would make psycopg log the pipeline's abort
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    except psycopg.errors.PipelineAborted:
        if failure is None:
            raise
    if failure is not None:
        raise failure
    return result


def _append(conn: psycopg.Connection, session_id: str, drafts: list[Draft],
            max_event_bytes: int) -> tuple[AppendResult, int]:
    event_ids = [draft.event_id for draft in drafts]
    run_ids = sorted({draft.run_id for draft in drafts if draft.run_id is not None})
    conn.execute(_LOCK, (session_id,))
    session_row, stored, run_rows = conn.execute(
        _STATE, {"session": session_id, "event_ids": event_ids, "run_ids": run_ids}).fetchone()
    session = summaries.session_of(json.loads(session_row) if session_row else None, session_id)
    last_seq = session.last_seq
    resent = appends.find_resent(drafts, [json.loads(text) for text in stored]) if stored else {}
    fresh = [draft for draft in drafts if draft.event_id not in resent] if resent else drafts
    if not fresh:
        return AppendResult([resent[draft.event_id] for draft in drafts], 0), last_seq
    appends.check_expected_seqs(fresh, last_seq)
    rows = [json.loads(text) for text in run_rows]
    claimed = {run_id for run_id, _ in appends.runs_to_claim(
        session_id, fresh, last_seq, {row["run_id"]: row["session_id"] for row in rows})}
    lines = [draft.line(seq) for seq, draft in enumerate(fresh, last_seq + 1)]
    appends.check_sizes(fresh, lines, max_event_bytes)
    runs = {row["run_id"]: summaries.run_of(row) for row in rows}
    changed = fold(session, runs, ((seq, draft.run_id, draft.envelope["type"], draft.envelope["timestamp"])
                                   for seq, draft in enumerate(fresh, last_seq + 1)))
    texts = [line[:-1].decode("utf-8") for line in lines]
    new_last = last_seq + len(fresh)
    conn.execute(_WRITE, {
        "channel": CHANNEL, "session": session_id, "last_seq": new_last, **summaries.session_params(session),
        "runs": summaries.runs_json((runs[run_id] for run_id in sorted(changed)), claimed),
        "events": dumps([{"seq": seq, "run_id": draft.run_id, "type": draft.envelope["type"],
                          "event_id": draft.event_id, "ts": draft.envelope["timestamp"], "envelope": text}
                         for seq, draft, text in zip(range(last_seq + 1, new_last + 1), fresh, texts)]),
    })
    seqs = {draft.event_id: seq for seq, draft in enumerate(fresh, last_seq + 1)}
    events = [resent[d.event_id] if d.event_id in resent else d.stored(seqs[d.event_id]) for d in drafts]
    lines_by_id = {draft.event_id: text.encode("utf-8") for draft, text in zip(fresh, texts)}
    return AppendResult(events, len(fresh), [lines_by_id.get(draft.event_id) for draft in drafts]), new_last


def _end_failed_transaction(conn: psycopg.Connection) -> None:
    """A statement that failed in the pipeline made the server skip the rest, COMMIT included: the
    transaction is still open, failed. Roll it back (psycopg's rollback also forgets the statements
    it meant to prepare in the skipped part) before the connection goes back to the pool."""
    if not conn.broken and conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
        conn.rollback()


def _claimed_elsewhere(conn: psycopg.Connection, session_id: str, run_ids: list[str]) -> RunSessionConflict:
    rows = conn.execute("SELECT run_id, session_id FROM run WHERE run_id = ANY(%s) AND session_id <> %s "
                        "ORDER BY run_id LIMIT 1", (run_ids, session_id)).fetchall()
    run_id, owner = rows[0] if rows else (run_ids[0], "another session")
    return RunSessionConflict(f"run {run_id!r} belongs to session {owner!r}", {"run_id": run_id, "session_id": owner})
