"""What the console's pages read, in one place: summaries, listings and pages of events.

Summaries and listings are the store's own (kept current at append time, a key lookup each);
pages of events are the store's reads, parsed once for the templates.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import NotFound, ValidationFailed
from ..store import EventStore

SCAN_PAGE = 1000  # events per read while drawing a timeline
LISTING_PAGE = 1000  # the store's largest listing page


@dataclass(frozen=True)
class EventsPage:
    events: list[dict[str, Any]]
    has_more: bool


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


def session_page(store: EventStore, session_id: str, *, since_seq: int, limit: int) -> EventsPage:
    page = store.read_page(session_id, since_seq=since_seq, limit=limit)
    return EventsPage([json.loads(line) for line in page.lines], page.has_more)


def run_page(store: EventStore, run_id: str, *, since_seq: int, limit: int) -> EventsPage:
    page = store.read_run_page(run_id, since_seq=since_seq, limit=limit)
    return EventsPage([json.loads(line) for line in page.lines], page.has_more)


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
