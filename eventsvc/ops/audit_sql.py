"""The PostgreSQL audit's set checks, done by the server: seq gaps and repeats, duplicate event
ids, runs in two sessions, listing numbers (no Flask, no click).

Each is one statement over the event rows that returns only what is wrong, read through a
server-side cursor, so neither the server's answer nor this process grows with the database.
The schema's keys make most of this damage impossible while they stand (primary key
``(session_id, seq)``, unique ``(session_id, event_id)``); the audit still asks, because a
restored dump, a hand edit or a dropped constraint is exactly what it is for.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..store.postgres.snapshot import stream

Emit = Callable[[str, int, str, str], None]
Connection = Any  # a snapshot's connection (eventsvc.store.postgres.snapshot); the driver stays in the store
ITERSIZE = 2000  # rows per fetch of a finding query

# One ordered pass over the primary key: each row whose seq is not one past the previous one's.
SEQ_BREAKS = """
SELECT session_id, seq, prev FROM (
    SELECT session_id, seq, lag(seq, 1, 0::bigint) OVER (PARTITION BY session_id ORDER BY seq) AS prev FROM event
) e WHERE seq <> prev + 1 ORDER BY session_id, seq
"""
# Seqs lost at a session's end: its counter is past its highest event (one index probe per session).
SEQ_TAILS = """
SELECT s.session_id, s.last_seq, coalesce(m.top, 0) FROM session s
LEFT JOIN LATERAL (SELECT max(seq) AS top FROM event WHERE session_id = s.session_id) m ON true
WHERE s.last_seq > coalesce(m.top, 0) ORDER BY s.session_id
"""
# Counted over the unique index (while it stands); only the few repeated ids are joined back for their seqs.
DUPLICATE_IDS = """
WITH repeated AS (SELECT session_id, event_id FROM event GROUP BY session_id, event_id HAVING count(*) > 1)
SELECT e.session_id, e.event_id, array_agg(e.seq ORDER BY e.seq) FROM repeated r
JOIN event e ON e.session_id = r.session_id AND e.event_id = r.event_id
GROUP BY e.session_id, e.event_id ORDER BY e.session_id, min(e.seq)
"""
# Each (run, session) pair its events form, against the run table's owner: a pair in another
# session than the owner, or of a run without a row. ``per`` is read off idx_session_event_run_seq.
RUN_OWNERS = """
WITH per AS (
    SELECT run_id, session_id, min(seq) AS first_seq FROM event WHERE run_id IS NOT NULL GROUP BY session_id, run_id
), marked AS (
    SELECT p.run_id, p.session_id, p.first_seq, r.session_id AS owner,
           min(p.session_id) OVER (PARTITION BY p.run_id) AS lowest, count(*) OVER (PARTITION BY p.run_id) AS sessions
    FROM per p LEFT JOIN run r ON r.run_id = p.run_id
)
SELECT run_id, session_id, first_seq, owner, lowest, sessions FROM marked
WHERE owner IS NULL OR owner <> session_id ORDER BY session_id, first_seq, run_id
"""

# The numbers the listings order by (store.postgres.summaries): a session's ``touched`` is unique, a
# run's position ``(touched, last_seq)`` is unique, and no run is newer than its session. Each
# statement returns only the rows that break one of these, over the listing indexes.
SHARED_SESSION_NUMBERS = """
SELECT touched, count(*), array_agg(session_id ORDER BY session_id) FROM session
GROUP BY touched HAVING count(*) > 1 ORDER BY touched
"""
SHARED_RUN_POSITIONS = """
SELECT touched, last_seq, count(*), array_agg(run_id ORDER BY run_id) FROM run
GROUP BY touched, last_seq HAVING count(*) > 1 ORDER BY touched, last_seq
"""
RUNS_ABOVE_SESSION = """
SELECT r.run_id, r.touched, s.session_id, s.touched FROM run r JOIN session s ON s.session_id = r.session_id
WHERE r.touched > s.touched ORDER BY r.run_id
"""


@dataclass
class RunOwners:
    """What the run check found: the runs whose rows the summary check must leave alone, and how
    many (run, session) pairs beyond the first each run has (to count distinct runs)."""

    flagged: set[str] = field(default_factory=set)
    extra_pairs: dict[str, int] = field(default_factory=dict)


def event_path(where: str, session_id: str) -> str:
    """How a finding about a session's event rows names them: ``host:port/db/event/<session_id>``
    (the finding's line is the seq)."""
    return f"{where}/event/{session_id}"


def _stream(conn: Connection, name: str, sql: str) -> Iterator[tuple[Any, ...]]:
    return stream(conn, name, sql, itersize=ITERSIZE)


def check_seqs(conn: Connection, where: str, emit: Emit) -> None:
    """SEQ_GAP for seqs missing from 1 up to each session's last seq; SEQ_REPEAT for each row
    whose seq another row of the session holds."""
    for session_id, seq, prev in _stream(conn, "audit_seq_breaks", SEQ_BREAKS):
        path = event_path(where, session_id)
        if seq == prev:
            emit(path, seq, "SEQ_REPEAT", f"seq {seq} is already held by another row of the session")
        elif seq > prev + 1:
            missing = f"seq {prev + 1} is" if seq == prev + 2 else f"seqs {prev + 1}-{seq - 1} are"
            emit(path, seq, "SEQ_GAP", f"{missing} missing before seq {seq}")
    for session_id, last_seq, top in _stream(conn, "audit_seq_tails", SEQ_TAILS):
        missing = f"seq {top + 1} is" if last_seq == top + 1 else f"seqs {top + 1}-{last_seq} are"
        after = f" after seq {top}" if top else " (the session has no event rows)"
        emit(event_path(where, session_id), top, "SEQ_GAP",
             f"{missing} missing{after}: the session row's last_seq is {last_seq}")


def check_event_ids(conn: Connection, where: str, emit: Emit) -> None:
    """DUPLICATE_EVENT_ID for each row after the first that holds an event_id of its session."""
    for session_id, event_id, seqs in _stream(conn, "audit_duplicate_ids", DUPLICATE_IDS):
        for seq in seqs[1:]:
            emit(event_path(where, session_id), seq, "DUPLICATE_EVENT_ID",
                 f"event_id {event_id!r} is already used in this session by seq {seqs[0]}")


def check_run_owners(conn: Connection, where: str, emit: Emit) -> RunOwners:
    """RUN_IN_TWO_SESSIONS for each session whose events name a run another session owns (the run
    row's session, or without a row the lowest session id naming it, as the file audit's order
    has it); INDEX_MISSING_ROW for a run named by events with no row in the run table."""
    found = RunOwners()
    for run_id, session_id, first_seq, owner, lowest, sessions in _stream(conn, "audit_run_owners", RUN_OWNERS):
        found.flagged.add(run_id)
        found.extra_pairs[run_id] = sessions - 1
        path = event_path(where, session_id)
        if owner is None and session_id == lowest:
            emit(path, first_seq, "INDEX_MISSING_ROW", f"run {run_id!r} has no row in the run table")
        elif owner is None:
            emit(path, first_seq, "RUN_IN_TWO_SESSIONS", f"run {run_id!r} is also used in session {lowest!r}")
        else:
            emit(path, first_seq, "RUN_IN_TWO_SESSIONS", f"run {run_id!r} belongs to session {owner!r} "
                 f"(its run row), but seq {first_seq} of this session names it")
    return found


def check_listing_numbers(conn: Connection, where: str, emit: Emit) -> None:
    """INDEX_WRONG_SUMMARY, as the file audit's ``listing_numbers``, for session rows that share a
    listing number, run rows that share a listing position, and a run listed as newer than its
    session: a walk of a listing by its cursor would repeat or skip them."""
    for touched, count, session_ids in _stream(conn, "audit_shared_session_numbers", SHARED_SESSION_NUMBERS):
        emit(f"{where}/session/{session_ids[0]}", 0, "INDEX_WRONG_SUMMARY",
             f"{count} session rows share the listing number (touched) {touched} ({_names(session_ids)}): "
             "a walk of their listing can repeat or skip them")
    for touched, last_seq, count, run_ids in _stream(conn, "audit_shared_run_positions", SHARED_RUN_POSITIONS):
        emit(f"{where}/run/{run_ids[0]}", 0, "INDEX_WRONG_SUMMARY",
             f"{count} run rows share the listing position (touched {touched}, last_seq {last_seq}) "
             f"({_names(run_ids)}): a walk of their listing can repeat or skip them")
    for run_id, touched, session_id, session_touched in _stream(conn, "audit_runs_above_session",
                                                                RUNS_ABOVE_SESSION):
        emit(f"{where}/run/{run_id}", 0, "INDEX_WRONG_SUMMARY", f"run {run_id!r} has the listing number "
             f"(touched) {touched}, above its session {session_id!r}'s {session_touched}")


def _names(ids: list[str], shown: int = 5) -> str:
    names = ", ".join(repr(one) for one in ids[:shown])
    return names + (f" and {len(ids) - shown} more" if len(ids) > shown else "")
