"""One append or batch as one PostgreSQL statement, serialised per session by its session row.

The write is a single statement in its own (implicit) transaction: the session row, the run
rows, the events and the NOTIFY that wakes every host's readers, committed together or not at
all (no gap after a rollback, no duplicate, nothing half-written), in one round trip. It is a
compare-and-set: the session row is updated only if it still holds the last seq and ``touched``
stamp (one per append, from a sequence) that the append's decisions were made from; the row
lock the update takes serialises appenders of a session across hosts, and one that lost the
race writes nothing and starts over from the state now stored.

Those decisions follow the files backend's rules (``eventsvc.store.rules``: idempotent re-sends,
expected seqs, run ownership, sizes) and its fold of the run and session summaries, made in
Python from the session's state: read in one statement (two round trips in all), or taken from
what this process wrote last (``KnownSessions``: one round trip). A known state is a guess that
the compare-and-set checks; what it cannot know, the constraints catch: a re-sent event id
fails on ``event_session_event_id_key``, a run it takes for new on ``run_pkey``; the append then
starts over from the stored state, and only that state ever answers a domain error.
"""
from __future__ import annotations

import dataclasses
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

import psycopg
import psycopg.errors

from ...errors import EventIdConflict, EventTooLarge, RunSessionConflict, SeqConflict, StorageError
from ...jsoncodec import dumps_compact as dumps
from ...summaries import RunSummary, SessionSummary, fold
from .. import rules
from ..base import AppendResult
from ..drafts import Draft
from . import summaries

CHANNEL = "eventsvc_appends"
# Each failed attempt means another append of the session committed in between: contention,
# not a fault, so the bound is generous; reaching it means the stored state contradicts itself.
MAX_ATTEMPTS = 100

_STATE = """
SELECT (SELECT row_to_json(s)::text FROM session s WHERE s.session_id = %(session)s),
       ARRAY(SELECT envelope FROM event WHERE session_id = %(session)s AND event_id = ANY(%(event_ids)b)),
       ARRAY(SELECT row_to_json(r)::text FROM run r WHERE r.run_id = ANY(%(run_ids)b))
"""
# The session row first: the runs and events join its RETURNING row, so a compare-and-set that
# fails writes nothing at all (and the foreign keys, checked at the statement's end, see the row).
# The UPDATE waits for the row lock of a concurrent append and then checks the row it committed.
# A new session is inserted only by an append that found none; of two racing, ON CONFLICT lets one.
# Runs and events travel as one JSON text each, encoded by the json module's C encoder: a
# parameter per column would cost psycopg's array dumping in Python.
_WRITE = f"""
WITH stamp AS (SELECT nextval('eventsvc_touched') AS touched),
session_updated AS (
    UPDATE session SET last_seq = %(last_seq)s, first_seq = %(s_first_seq)s, event_count = %(s_event_count)s,
        created_at = %(s_created_at)s, updated_at = %(s_updated_at)s, run_count = %(s_run_count)s,
        active_runs = %(s_active_runs)s, closed = %(s_closed)s, touched = stamp.touched
    FROM stamp
    WHERE session_id = %(session)s AND last_seq = %(known_seq)s AND session.touched = %(known_touched)s
    RETURNING stamp.touched
), session_created AS (
    INSERT INTO session (session_id, last_seq, first_seq, event_count, created_at, updated_at, run_count,
                         active_runs, closed, touched)
    SELECT %(session)s, %(last_seq)s, %(s_first_seq)s, %(s_event_count)s, %(s_created_at)s, %(s_updated_at)s,
           %(s_run_count)s, %(s_active_runs)s, %(s_closed)s, stamp.touched FROM stamp WHERE %(known_seq)s = 0
    ON CONFLICT (session_id) DO NOTHING
    RETURNING touched
), session_written AS (
    SELECT touched FROM session_updated UNION ALL SELECT touched FROM session_created
), given_run AS (
    SELECT * FROM json_to_recordset(%(runs)s::json) AS g({summaries.RUN_RECORD}, claimed boolean)
), run_claimed AS (
    -- A plain INSERT: a run that exists after all (another session's, or one this append did not
    -- know of) fails on run_pkey, and the whole statement with it.
    INSERT INTO run (run_id, session_id, first_seq, status, verify, last_seq, event_count, created_at, started_at,
                     ended_at, updated_at, blocked, warned, counts, touched)
    SELECT g.run_id, %(session)s, g.first_seq, g.status, g.verify, g.last_seq, g.event_count, g.created_at,
           g.started_at, g.ended_at, g.updated_at, g.blocked, g.warned, g.counts, w.touched
    FROM given_run g, session_written w WHERE g.claimed
), run_updated AS (
    -- The session's own runs: only its appends change them, and they hold its row.
    UPDATE run SET status = g.status, verify = g.verify, last_seq = g.last_seq, event_count = g.event_count,
        created_at = g.created_at, started_at = g.started_at, ended_at = g.ended_at, updated_at = g.updated_at,
        blocked = g.blocked, warned = g.warned, counts = g.counts, touched = w.touched
    FROM given_run g, session_written w WHERE NOT g.claimed AND run.run_id = g.run_id
), stored AS (
    INSERT INTO event (session_id, seq, run_id, type, event_id, "timestamp", envelope)
    SELECT %(session)s, e.seq, e.run_id, e.type, e.event_id, e.ts, e.envelope
    FROM json_to_recordset(%(events)s::json)
        AS e(seq bigint, run_id text, type text, event_id text, ts text, envelope text), session_written w
)
SELECT w.touched, pg_notify(%(channel)s, %(last_seq)s::text || ' ' || %(session)s) FROM session_written w
"""
# What a decision made from a stale or guessed state meets: an event id stored meanwhile (or
# re-sent, unseen by a known state), a run claimed meanwhile by another session (under its own
# row) or unknown to a known state.
_STALE = ("event_session_event_id_key", "run_pkey")
_DOMAIN_ERRORS = (SeqConflict, EventIdConflict, RunSessionConflict, EventTooLarge)


@dataclass
class SessionState:
    """What an append decides from: the session's summary and ``touched`` stamp, and run summaries.

    ``runs`` holds every run of the append's events that exists (read from the database), or,
    for a known state, the runs this process last wrote (the others are taken for new).
    """

    session: SessionSummary
    touched: int
    runs: dict[str, RunSummary]
    stored: list[dict]  # envelopes already stored under the append's event ids (read states only)
    known: bool = False

    def copy(self) -> SessionState:
        """A copy the fold may change (it changes summaries in place)."""
        return SessionState(dataclasses.replace(self.session), self.touched,
                            {run_id: dataclasses.replace(run, counts=dict(run.counts))
                             for run_id, run in self.runs.items()}, self.stored, self.known)


class KnownSessions:
    """The state each session was left in by this process's last append to it (at most ``size``).

    Thread-safe. An entry may be stale (another process appended since): the write's
    compare-and-set notices, and the append starts over from the stored state.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._states: OrderedDict[str, SessionState] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str) -> SessionState | None:
        with self._lock:
            state = self._states.get(session_id)
            if state is not None:
                self._states.move_to_end(session_id)
        return state.copy() if state is not None else None

    def put(self, session_id: str, state: SessionState) -> None:
        with self._lock:
            self._states[session_id] = state
            self._states.move_to_end(session_id)
            while len(self._states) > self.size:
                self._states.popitem(last=False)

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._states.pop(session_id, None)


def append_transaction(conn: psycopg.Connection, session_id: str, drafts: list[Draft], max_event_bytes: int,
                       known: KnownSessions) -> tuple[AppendResult, int]:
    """Store the drafts that are new, with the summaries they change; returns the result and the last seq.

    Raises SeqConflict, EventIdConflict, RunSessionConflict or EventTooLarge with nothing written.
    """
    state = known.get(session_id)
    for _ in range(MAX_ATTEMPTS):
        if state is None:
            state = read_state(conn, session_id, drafts)
        try:
            outcome = _attempt(conn, session_id, drafts, max_event_bytes, state, known)
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name not in _STALE:
                raise
            outcome = None
        except _DOMAIN_ERRORS:
            if not state.known:
                raise
            outcome = None  # decided from a guess: only the stored state may refuse an append
        if outcome is not None:
            return outcome
        known.forget(session_id)
        state = None
    raise StorageError(f"session {session_id!r}: {MAX_ATTEMPTS} appends in a row lost the race for its row")


def read_state(conn: psycopg.Connection, session_id: str, drafts: list[Draft]) -> SessionState:
    """The stored state an append of ``drafts`` decides from, in one statement (one snapshot)."""
    session_row, stored, run_rows = conn.execute(_STATE, {
        "session": session_id, "event_ids": [draft.event_id for draft in drafts],
        "run_ids": sorted({draft.run_id for draft in drafts if draft.run_id is not None})}).fetchone()
    row = json.loads(session_row) if session_row else None
    runs = {run["run_id"]: summaries.run_of(run) for run in map(json.loads, run_rows)}
    return SessionState(summaries.session_of(row, session_id), row["touched"] if row else 0, runs,
                        [json.loads(text) for text in stored])


def _attempt(conn: psycopg.Connection, session_id: str, drafts: list[Draft], max_event_bytes: int,
             state: SessionState, known: KnownSessions) -> tuple[AppendResult, int] | None:
    """Decide from ``state`` and write; None when the session moved on since ``state``."""
    session, last_seq = state.session, state.session.last_seq
    resent = rules.find_resent(drafts, state.stored) if state.stored else {}
    fresh = [draft for draft in drafts if draft.event_id not in resent] if resent else drafts
    if not fresh:
        return AppendResult([resent[draft.event_id] for draft in drafts], 0), last_seq
    rules.check_expected_seqs(fresh, last_seq)
    owners = {run.run_id: run.session_id for run in state.runs.values()}
    claimed = {run_id for run_id, _ in rules.runs_to_claim(session_id, fresh, last_seq, owners)}
    lines = [draft.line(seq) for seq, draft in enumerate(fresh, last_seq + 1)]
    rules.check_sizes(fresh, lines, max_event_bytes)
    runs = state.runs
    changed = fold(session, runs, ((seq, draft.run_id, draft.envelope["type"], draft.envelope["timestamp"])
                                   for seq, draft in enumerate(fresh, last_seq + 1)))
    texts = [line[:-1].decode("utf-8") for line in lines]
    new_last = last_seq + len(fresh)
    row = conn.execute(_WRITE, {
        "channel": CHANNEL, "session": session_id, "last_seq": new_last, **summaries.session_params(session),
        "known_seq": last_seq, "known_touched": state.touched,
        "runs": summaries.runs_json((runs[run_id] for run_id in sorted(changed)), claimed),
        "events": dumps([{"seq": seq, "run_id": draft.run_id, "type": draft.envelope["type"],
                          "event_id": draft.event_id, "ts": draft.envelope["timestamp"], "envelope": text}
                         for seq, draft, text in zip(range(last_seq + 1, new_last + 1), fresh, texts)]),
    }).fetchone()
    if row is None:
        return None
    known.put(session_id, SessionState(session, row[0], {run_id: runs[run_id] for run_id in changed}, [], True))
    seqs = {draft.event_id: seq for seq, draft in enumerate(fresh, last_seq + 1)}
    events = [resent[d.event_id] if d.event_id in resent else d.stored(seqs[d.event_id]) for d in drafts]
    lines_by_id = {draft.event_id: text.encode("utf-8") for draft, text in zip(fresh, texts)}
    return AppendResult(events, len(fresh), [lines_by_id.get(draft.event_id) for draft in drafts]), new_last
