"""What the console's pages read, in one place: summaries, listings and pages of events.

Today the summaries are folded from the events (``summaries``), cached until the session's
next append; when the store keeps summaries itself, only this module changes.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from ..errors import NotFound
from ..schemas import is_valid_id, parse_timestamp
from ..store import EventStore
from .summaries import fold_run, fold_session, new_run

SCAN_PAGE = 1000  # events per read while folding a summary


@dataclass(frozen=True)
class EventsPage:
    events: list[dict[str, Any]]
    has_more: bool


def list_sessions(store: EventStore, *, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Session summaries, most recently active first, and the cursor of the next page (None at the end)."""
    offset = int(cursor) if cursor and cursor.isascii() and cursor.isdigit() and len(cursor) < 10 else 0
    latest = []
    for session_id in store.session_ids():
        last_seq = store.last_seq(session_id)
        if last_seq:
            latest.append((_moment(_last_timestamp(store, session_id, last_seq)), session_id, last_seq))
    latest.sort(key=lambda item: (item[0], item[1]), reverse=True)
    chosen = latest[offset:offset + limit]
    summaries = [_scan_session(store, session_id, last_seq)[0] for _, session_id, last_seq in chosen]
    next_cursor = str(offset + limit) if offset + limit < len(latest) else None
    return summaries, next_cursor


def get_session(store: EventStore, session_id: str) -> dict[str, Any] | None:
    last_seq = store.last_seq(session_id) if is_valid_id(session_id) else 0
    return _scan_session(store, session_id, last_seq)[0] if last_seq else None


def list_session_runs(store: EventStore, session_id: str, *, limit: int) -> list[dict[str, Any]]:
    """The session's first ``limit`` run summaries in order of first seq."""
    last_seq = store.last_seq(session_id) if is_valid_id(session_id) else 0
    return list(_scan_session(store, session_id, last_seq)[1][:limit]) if last_seq else []


def get_run(store: EventStore, run_id: str) -> dict[str, Any] | None:
    session_id = store.run_session(run_id) if is_valid_id(run_id) else None
    if session_id is None:
        return None
    run = new_run(run_id, session_id)
    for event in run_events(store, run_id):
        fold_run(run, event)
    return run


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


@lru_cache(maxsize=256)
def _scan_session(store: EventStore, session_id: str, last_seq: int) -> tuple[dict[str, Any], tuple[dict, ...]]:
    """The session's summaries as of ``last_seq`` (the cache key: an append makes a new entry)."""
    session, runs = fold_session(session_id, _session_events(store, session_id, last_seq))
    return session, tuple(runs)


def _session_events(store: EventStore, session_id: str, last_seq: int) -> Iterator[dict[str, Any]]:
    since_seq = 0
    while since_seq < last_seq:
        page = store.read_page(session_id, since_seq=since_seq, limit=min(SCAN_PAGE, last_seq - since_seq))
        if not page.lines:
            return
        for line in page.lines:
            yield json.loads(line)
        since_seq = page.seqs[-1]


@lru_cache(maxsize=4096)
def _last_timestamp(store: EventStore, session_id: str, last_seq: int) -> str:
    page = store.read_page(session_id, since_seq=last_seq - 1, limit=1)
    return json.loads(page.lines[0])["timestamp"] if page.lines else ""


def _moment(timestamp: str) -> datetime:
    try:
        return parse_timestamp(timestamp)
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
