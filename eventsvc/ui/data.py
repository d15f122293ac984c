"""What the console's pages read, in one place: summaries, listings and pages of events.

Summaries and listings are the store's own (kept current at append time, a key lookup each);
pages of events are the store's reads, parsed once for the templates.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import NotFound, ValidationFailed
from ..store import EventStore, Page

SCAN_PAGE = 1000  # events per read while drawing a timeline
LISTING_PAGE = 1000  # the store's largest listing page
# A filtered read looks at a bounded window of the log (``store.rules.TYPE_FILTER_WINDOW`` rows, in
# both backends); a page of a rare type takes at most this many, then says how far it looked.
FILTERED_READS = 10


@dataclass(frozen=True)
class EventsPage:
    events: list[dict[str, Any]]
    has_more: bool
    # Where the next page starts (its since_seq): the last event's seq, or past it under a type
    # filter, whose reads look at every event up to here whether they match or not.
    next_since_seq: int


def list_sessions(store: EventStore, *, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Session summaries, most recently active first, and the cursor of the next page (None at the end).

    Raises NotFound for a cursor the store does not recognise (the page shows a 404).
    """
    try:
        page = store.list_sessions(limit=limit, cursor=cursor)
    except ValidationFailed:
        raise NotFound("There is no such page of sessions.") from None
    return page.items, page.next_cursor


def get_session(store: EventStore, session_id: str) -> dict[str, Any] | None:
    return store.get_session(session_id)


def list_session_runs(store: EventStore, session_id: str, *, limit: int) -> list[dict[str, Any]]:
    """The session's first ``limit`` run summaries in order of first seq."""
    runs: list[dict[str, Any]] = []
    cursor = None
    while len(runs) < limit:
        page = store.list_session_runs(session_id, limit=min(LISTING_PAGE, limit - len(runs)), cursor=cursor)
        runs += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return runs


def get_run(store: EventStore, run_id: str) -> dict[str, Any] | None:
    return store.get_run(run_id)


def session_page(store: EventStore, session_id: str, *, since_seq: int, limit: int,
                 types: list[str] | None = None) -> EventsPage:
    """Up to ``limit`` of the session's events after ``since_seq`` (only of ``types``, if given)."""
    return _filled(lambda since, most: store.read_page(session_id, since_seq=since, limit=most, types=types),
                   since_seq=since_seq, limit=limit)


def run_page(store: EventStore, run_id: str, *, since_seq: int, limit: int,
             types: list[str] | None = None) -> EventsPage:
    """Up to ``limit`` of the run's events after ``since_seq`` (only of ``types``, if given)."""
    return _filled(lambda since, most: store.read_run_page(run_id, since_seq=since, limit=most, types=types),
                   since_seq=since_seq, limit=limit)


def _filled(read: Callable[[int, int], Page], *, since_seq: int, limit: int) -> EventsPage:
    """One read, then more while a filtered read stopped at its window short of ``limit`` matches."""
    page = read(since_seq, limit)
    lines = list(page.lines)
    for _ in range(FILTERED_READS - 1):
        if len(lines) >= limit or not page.has_more or page.next_since_seq <= since_seq:
            break
        since_seq = page.next_since_seq
        page = read(since_seq, limit - len(lines))
        lines += page.lines
    return EventsPage([json.loads(line) for line in lines], page.has_more, page.next_since_seq)


def run_events(store: EventStore, run_id: str, *, cap: int | None = None) -> Iterator[dict[str, Any]]:
    """The run's events in seq order (the first ``cap`` of them when given)."""
    since_seq, seen = 0, 0
    while cap is None or seen < cap:
        try:
            page = store.read_run_page(run_id, since_seq=since_seq, limit=SCAN_PAGE)
        except NotFound:
            return
        for line in page.lines[: None if cap is None else cap - seen]:
            yield json.loads(line)
            seen += 1
        if not page.has_more or not page.seqs:
            return
        since_seq = page.seqs[-1]
