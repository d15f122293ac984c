"""One append or batch as one PostgreSQL transaction, serialised per session (as Message DB does).

A transaction-scoped advisory lock keyed by the session id is taken first; the state read
after it (last seq, stored ids, run owners) is therefore current, and the same rules as the
files backend (``eventsvc.store.rules``) decide what to write. The writes, the session's
new last seq and the NOTIFY that wakes every host's readers are one statement, committed
together or not at all: no gap after a rollback, no duplicate, nothing half-written. The run and
session summaries the append changes are folded in Python (the files backend's fold) and
written by the same statement.
"""
from __future__ import annotations

import json
import psycopg

from ...errors import RunSessionConflict
from ...summaries import fold
from .. import rules
from ..base import AppendResult
from ..drafts import Draft
from . import summaries

CHANNEL = "eventsvc_appends"

_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
_STATE = """
SELECT (SELECT row_to_json(s)::text FROM session s WHERE s.session_id = %(session)s),
       ARRAY(SELECT envelope FROM event WHERE session_id = %(session)s AND event_id = ANY(%(event_ids)b)),
       ARRAY(SELECT row_to_json(r)::text FROM run r WHERE r.run_id = ANY(%(run_ids)b))
"""
# Parent rows first, in CTEs of the same statement: the foreign keys are checked at its end.
# Arrays travel in binary (%b): the text format would escape every quote of every envelope.
# A run row is only ever updated by its own session; a run another session claimed meanwhile
# (under its own session's lock) is left alone and missing from ``runs_written``.
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
    RETURNING session_id
), runs_written AS (
    INSERT INTO run (run_id, session_id, first_seq, status, verify, last_seq, event_count, created_at, started_at,
                     ended_at, updated_at, blocked, warned, counts, touched)
    SELECT u.run_id, %(session)s, u.first_seq, u.status, u.verify, u.last_seq, u.event_count, u.created_at,
           u.started_at, u.ended_at, u.updated_at, u.blocked, u.warned, u.counts, stamp.touched
    FROM unnest({summaries.RUN_ARRAYS}) AS u(run_id, first_seq, status, verify, last_seq, event_count, created_at,
                                             started_at, ended_at, updated_at, blocked, warned, counts), stamp
    ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, verify = EXCLUDED.verify,
        last_seq = EXCLUDED.last_seq, event_count = EXCLUDED.event_count, created_at = EXCLUDED.created_at,
        started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, updated_at = EXCLUDED.updated_at,
        blocked = EXCLUDED.blocked, warned = EXCLUDED.warned, counts = EXCLUDED.counts, touched = EXCLUDED.touched
        WHERE run.session_id = EXCLUDED.session_id
    RETURNING run_id
), stored AS (
    INSERT INTO event (session_id, seq, run_id, type, event_id, "timestamp", envelope)
    SELECT %(session)s, seq, run_id, type, event_id, ts, envelope
    FROM unnest(%(seqs)b::bigint[], %(run_ids_of_events)b::text[], %(types)b::text[], %(event_ids)b::text[],
                %(timestamps)b::text[], %(envelopes)b::text[]) AS e(seq, run_id, type, event_id, ts, envelope)
    RETURNING seq
)
SELECT pg_notify(%(channel)s, %(last_seq)s::text || ' ' || %(session)s),
       (SELECT count(*) FROM touched), (SELECT count(*) FROM runs_written), (SELECT count(*) FROM stored)
"""


def append_transaction(conn: psycopg.Connection, session_id: str, drafts: list[Draft],
                       max_event_bytes: int) -> tuple[AppendResult, int]:
    """Store the drafts that are new, with the summaries they change; returns the result and the last seq.

    Raises SeqConflict, EventIdConflict, RunSessionConflict or EventTooLarge with nothing written.
    """
    event_ids = [draft.event_id for draft in drafts]
    run_ids = sorted({draft.run_id for draft in drafts if draft.run_id is not None})
    with conn.transaction():
        conn.execute(_LOCK, (session_id,))
        session_row, stored, run_rows = conn.execute(
            _STATE, {"session": session_id, "event_ids": event_ids, "run_ids": run_ids}).fetchone()
        session = summaries.session_of(json.loads(session_row) if session_row else None, session_id)
        last_seq = session.last_seq
        resent = rules.find_resent(drafts, [json.loads(text) for text in stored]) if stored else {}
        fresh = [draft for draft in drafts if draft.event_id not in resent] if resent else drafts
        if not fresh:
            return AppendResult([resent[draft.event_id] for draft in drafts], 0), last_seq
        rules.check_expected_seqs(fresh, last_seq)
        rows = [json.loads(text) for text in run_rows]
        rules.runs_to_claim(session_id, fresh, last_seq, {row["run_id"]: row["session_id"] for row in rows})
        lines = [draft.line(seq) for seq, draft in enumerate(fresh, last_seq + 1)]
        rules.check_sizes(fresh, lines, max_event_bytes)
        runs = {row["run_id"]: summaries.run_of(row) for row in rows}
        changed = fold(session, runs, ((seq, draft.run_id, draft.envelope["type"], draft.envelope["timestamp"])
                                       for seq, draft in enumerate(fresh, last_seq + 1)))
        texts = [line[:-1].decode("utf-8") for line in lines]
        new_last = last_seq + len(fresh)
        written = conn.execute(_WRITE, {
            "channel": CHANNEL, "session": session_id, "last_seq": new_last,
            **summaries.session_params(session), **summaries.run_params(runs[run_id] for run_id in sorted(changed)),
            "seqs": list(range(last_seq + 1, new_last + 1)),
            "run_ids_of_events": [draft.run_id for draft in fresh],
            "types": [draft.envelope["type"] for draft in fresh],
            "event_ids": [draft.event_id for draft in fresh],
            "timestamps": [draft.envelope["timestamp"] for draft in fresh],
            "envelopes": texts,
        }).fetchone()
        if written[2] != len(changed):
            # Another session claimed one of these runs after our read (it held its own session's lock).
            raise _claimed_elsewhere(conn, session_id, sorted(changed))
    seqs = {draft.event_id: seq for seq, draft in enumerate(fresh, last_seq + 1)}
    events = [resent[d.event_id] if d.event_id in resent else d.stored(seqs[d.event_id]) for d in drafts]
    lines_by_id = {draft.event_id: text.encode("utf-8") for draft, text in zip(fresh, texts)}
    return AppendResult(events, len(fresh), [lines_by_id.get(draft.event_id) for draft in drafts]), new_last


def _claimed_elsewhere(conn: psycopg.Connection, session_id: str, run_ids: list[str]) -> RunSessionConflict:
    rows = conn.execute("SELECT run_id, session_id FROM run WHERE run_id = ANY(%s) AND session_id <> %s "
                        "ORDER BY run_id LIMIT 1", (run_ids, session_id)).fetchall()
    run_id, owner = rows[0] if rows else (run_ids[0], "another session")
    return RunSessionConflict(f"run {run_id!r} belongs to session {owner!r}", {"run_id": run_id, "session_id": owner})
