"""Copy a whole store to another (data folder <-> PostgreSQL), resumable and verified.

Each session's events are re-appended to the target in seq order with their own event_id,
timestamp, source, run and payload, and their seq as the expected seq. So the target stores
the very same envelope (the same line, byte for byte); a copy interrupted and run again skips
what is there already (idempotent re-sends by event_id); and a target whose session diverges
(other events at those seqs, a run owned elsewhere) stops the copy with the store's own
conflict error instead of mixing two histories. At the end every session is read back from
both stores and compared line by line.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any

from ..errors import Conflict
from ..store.base import Store

PAGE = 500


@dataclass
class SessionCopy:
    session_id: str
    events: int = 0  # events in the source session
    created: int = 0  # of which this run stored (the rest were already in the target)
    problem: str | None = None  # why the verification failed, if it did


@dataclass
class CopyReport:
    sessions: list[SessionCopy] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(session.events for session in self.sessions)

    @property
    def created(self) -> int:
        return sum(session.created for session in self.sessions)

    @property
    def problems(self) -> list[SessionCopy]:
        return [session for session in self.sessions if session.problem]


def copy_store(source: Store, target: Store, *, page: int = PAGE,
               on_session: Callable[[SessionCopy], None] = lambda copied: None) -> CopyReport:
    """Copy every session of ``source`` into ``target``, then verify; raises the target's conflict errors."""
    report = CopyReport()
    for session_id in source.session_ids():
        copied = SessionCopy(session_id)
        for lines in _pages(source, session_id, page):
            try:
                result = target.append_batch(session_id, [as_input(json.loads(line)) for line in lines])
            except Conflict as exc:  # the target's session holds other events: say which, and the code
                raise type(exc)(f"session {session_id!r} in the target: {exc.code}: {exc.message}",
                                exc.details) from None
            copied.events += len(lines)
            copied.created += result.created
        copied.problem = verify_session(source, target, session_id)
        report.sessions.append(copied)
        on_session(copied)
    return report


def as_input(envelope: dict[str, Any]) -> dict[str, Any]:
    """The append input that stores exactly ``envelope`` again (its seq as the expected seq)."""
    event = {key: envelope[key] for key in ("type", "timestamp", "seq", "source", "event_id", "payload")}
    if envelope["run_id"] is not None:
        event["run_id"] = envelope["run_id"]
    return event


def verify_session(source: Store, target: Store, session_id: str) -> str | None:
    """None when both stores hold the same lines for the session, else what differs first."""
    source_last, target_last = source.last_seq(session_id), target.last_seq(session_id)
    if source_last != target_last:
        return f"last seq {source_last} in the source, {target_last} in the target"
    pairs = zip_longest(_lines(source, session_id), _lines(target, session_id))
    for position, (theirs, ours) in enumerate(pairs, 1):
        if theirs is None or ours is None:
            return f"only the {'source' if ours is None else 'target'} has an event at position {position}"
        if theirs != ours:
            return f"the events at position {position} differ"
    return None


def _pages(store: Store, session_id: str, page: int) -> Iterator[list[bytes]]:
    since_seq = 0
    while True:
        read = store.read_page(session_id, since_seq=since_seq, limit=page)
        if read.lines:
            yield read.lines
            since_seq = read.seqs[-1]
        if not read.has_more:
            return


def _lines(store: Store, session_id: str) -> Iterator[bytes]:
    for lines in _pages(store, session_id, PAGE):
        yield from lines
