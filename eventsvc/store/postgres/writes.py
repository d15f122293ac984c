"""One append or batch as one PostgreSQL transaction, serialised per session (as Message DB does).

A transaction-scoped advisory lock keyed by the session id is taken first; the state read
after it (last seq, stored ids, run owners) is therefore current, and the same checks as the
files backend (``eventsvc.store.appends``) decide what to write. The writes, the session's
new last seq and the NOTIFY that wakes every host's readers are one statement, committed
together or not at all: no gap after a rollback, no duplicate, nothing half-written.
"""
from __future__ import annotations

import json
import psycopg
from psycopg import errors as pg_errors

from ...errors import RunSessionConflict
from .. import AppendResult, appends
from ..drafts import Draft

CHANNEL = "eventsvc_appends"

_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
_STATE = """
SELECT (SELECT last_seq FROM session WHERE session_id = %(session)s),
       ARRAY(SELECT envelope FROM event WHERE session_id = %(session)s AND event_id = ANY(%(event_ids)b)),
       ARRAY(SELECT ARRAY[run_id, session_id] FROM run WHERE run_id = ANY(%(run_ids)b))
"""
# Parent rows first, in CTEs of the same statement: the foreign keys are checked at its end.
# Arrays travel in binary (%b): the text format would escape every quote of every envelope.
_WRITE = """
WITH touched AS (
    INSERT INTO session (session_id, last_seq) VALUES (%(session)s, %(last_seq)s)
    ON CONFLICT (session_id) DO UPDATE SET last_seq = EXCLUDED.last_seq
    RETURNING session_id
), claimed AS (
    INSERT INTO run (run_id, session_id, first_seq)
    SELECT run_id, %(session)s, first_seq FROM unnest(%(run_ids)b::text[], %(first_seqs)b::bigint[])
        AS claim(run_id, first_seq)
    RETURNING run_id
), stored AS (
    INSERT INTO event (session_id, seq, run_id, type, event_id, "timestamp", envelope)
    SELECT %(session)s, seq, run_id, type, event_id, ts, envelope
    FROM unnest(%(seqs)b::bigint[], %(run_ids_of_events)b::text[], %(types)b::text[], %(event_ids)b::text[],
                %(timestamps)b::text[], %(envelopes)b::text[]) AS e(seq, run_id, type, event_id, ts, envelope)
    RETURNING seq
)
SELECT pg_notify(%(channel)s, %(last_seq)s::text || ' ' || %(session)s),
       (SELECT count(*) FROM touched), (SELECT count(*) FROM claimed), (SELECT count(*) FROM stored)
"""


def append_transaction(conn: psycopg.Connection, session_id: str, drafts: list[Draft],
                       max_event_bytes: int) -> tuple[AppendResult, int]:
    """Store the drafts that are new; returns the result and the session's last seq afterwards.

    Raises SeqConflict, EventIdConflict, RunSessionConflict or EventTooLarge with nothing written.
    """
    event_ids = [draft.event_id for draft in drafts]
    run_ids = sorted({draft.run_id for draft in drafts if draft.run_id is not None})
    try:
        # Pipelined: BEGIN, the lock and the state read travel together, then the write and COMMIT.
        with conn.transaction():
            conn.execute(_LOCK, (session_id,))
            last_seq, stored, owners = conn.execute(
                _STATE, {"session": session_id, "event_ids": event_ids, "run_ids": run_ids}).fetchone()
            last_seq = last_seq or 0
            resent = appends.find_resent(drafts, [json.loads(text) for text in stored]) if stored else {}
            fresh = [draft for draft in drafts if draft.event_id not in resent] if resent else drafts
            if not fresh:
                return AppendResult([resent[draft.event_id] for draft in drafts], 0), last_seq
            appends.check_expected_seqs(fresh, last_seq)
            new_runs = appends.runs_to_claim(session_id, fresh, last_seq, dict(owners))
            lines = [draft.line(seq) for seq, draft in enumerate(fresh, last_seq + 1)]
            appends.check_sizes(fresh, lines, max_event_bytes)
            texts = [line[:-1].decode("utf-8") for line in lines]
            new_last = last_seq + len(fresh)
            conn.execute(_WRITE, {
                "channel": CHANNEL, "session": session_id, "last_seq": new_last,
                "run_ids": [run_id for run_id, _ in new_runs], "first_seqs": [seq for _, seq in new_runs],
                "seqs": list(range(last_seq + 1, new_last + 1)),
                "run_ids_of_events": [draft.run_id for draft in fresh],
                "types": [draft.envelope["type"] for draft in fresh],
                "event_ids": [draft.event_id for draft in fresh],
                "timestamps": [draft.envelope["timestamp"] for draft in fresh],
                "envelopes": texts,
            })
    except pg_errors.UniqueViolation as exc:
        if exc.diag.constraint_name != "run_pkey":
            raise
        # Another session claimed one of these runs after our read (it held another session's lock).
        raise _claimed_elsewhere(conn, session_id, run_ids) from None
    seqs = {draft.event_id: seq for seq, draft in enumerate(fresh, last_seq + 1)}
    events = [resent[d.event_id] if d.event_id in resent else d.stored(seqs[d.event_id]) for d in drafts]
    written = {draft.event_id: text.encode("utf-8") for draft, text in zip(fresh, texts)}
    return AppendResult(events, len(fresh), [written.get(draft.event_id) for draft in drafts]), new_last


def _claimed_elsewhere(conn: psycopg.Connection, session_id: str, run_ids: list[str]) -> RunSessionConflict:
    rows = conn.execute("SELECT run_id, session_id FROM run WHERE run_id = ANY(%s) AND session_id <> %s "
                        "ORDER BY run_id LIMIT 1", (run_ids, session_id)).fetchall()
    run_id, owner = rows[0] if rows else (run_ids[0], "another session")
    return RunSessionConflict(f"run {run_id!r} belongs to session {owner!r}", {"run_id": run_id, "session_id": owner})

