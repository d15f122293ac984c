"""Reads that wait for the future: long-poll pages and catch-up subscriptions (no Flask here).

A subscription replays history from a cursor, then waits for appends and reads on from the
same cursor through the same index, so the switch from history to live can neither skip
nor repeat an event, whichever process made the append.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import RunNotFound, SessionNotFound, StorageError
from .store.base import Page, Store
from .types import RUN_TERMINAL_TYPES

HISTORY_PAGE = 500
_RUN_APPEAR_POLL = 0.1
_STORAGE_RETRY = 1.0


@dataclass(frozen=True)
class Delivery:
    seq: int
    type: str
    line: bytes  # the stored envelope, one line of JSON


@dataclass(frozen=True)
class KeepAlive:
    pass


@dataclass(frozen=True)
class End:
    reason: str  # "terminal" (the run ended) or "until_seq"
    last_seq: int


def resolve(store: Store, *, session_id: str | None, run_id: str | None, wait: float) -> str:
    """The session to read (the run's, for a run); waits up to ``wait`` seconds for it to appear.

    Raises SessionNotFound or RunNotFound when it does not appear in time.
    """
    deadline = time.monotonic() + wait
    if run_id is not None:
        while True:
            owner = store.run_session(run_id)
            if owner is not None:
                return owner
            if time.monotonic() >= deadline:
                raise RunNotFound(f"run {run_id!r} not found")
            time.sleep(min(_RUN_APPEAR_POLL, max(0.0, deadline - time.monotonic())))
    assert session_id is not None
    if store.last_seq(session_id) == 0 and wait > 0:
        store.wait_for_events(session_id, 0, wait)
    if store.last_seq(session_id) == 0:
        raise SessionNotFound(f"session {session_id!r} not found")
    return session_id


def long_poll(store: Store, session_id: str, *, run_id: str | None, since_seq: int, limit: int,
              wait: float, types: list[str] | None = None) -> Page:
    """A page after ``since_seq``; if empty, waits up to ``wait`` seconds for one to exist.

    Under a type filter an empty page that looked only part of the way answers at once
    (``has_more``): the client pages on from its ``next_since_seq``.
    """
    deadline = time.monotonic() + wait
    page = store.read_page(session_id, run_id=run_id, since_seq=since_seq, limit=limit, types=types)
    while not page.lines and not page.has_more and wait > 0:
        # Note the session's end before reading again, so an append in between is not missed.
        known_last = store.last_seq(session_id)
        page = store.read_page(session_id, run_id=run_id, since_seq=since_seq, limit=limit, types=types)
        remaining = deadline - time.monotonic()
        if page.lines or page.has_more or remaining <= 0:
            break
        store.wait_for_events(session_id, known_last, remaining)
    return page


def subscribe(store: Store, session_id: str, *, run_id: str | None, since_seq: int,
              until_seq: int | None, keepalive: float,
              types: list[str] | None = None) -> Iterator[Delivery | KeepAlive | End]:
    """``_subscribe``, kept open while the store is away (PostgreSQL restarting, a failing disk).

    Keepalives flow meanwhile; once the store answers, reading goes on from the last seq
    delivered, so an outage neither skips nor repeats an event.
    """
    cursor = since_seq
    while True:
        try:
            for item in _subscribe(store, session_id, run_id=run_id, since_seq=cursor, until_seq=until_seq,
                                   keepalive=keepalive, types=types):
                if isinstance(item, Delivery):
                    cursor = item.seq
                yield item
            return
        except StorageError:
            yield KeepAlive()
            time.sleep(min(keepalive, _STORAGE_RETRY))


def _subscribe(store: Store, session_id: str, *, run_id: str | None, since_seq: int,
               until_seq: int | None, keepalive: float,
               types: list[str] | None = None) -> Iterator[Delivery | KeepAlive | End]:
    """History after ``since_seq``, then each new event as it is appended (only of ``types``, if given).

    A run's subscription ends after the run's terminal event (whether or not the filter lets
    it through); any subscription ends once ``until_seq`` is reached. Holds no lock while the
    consumer is slow.
    """
    cursor = since_seq
    last_sent = time.monotonic()
    while True:
        known_last = store.last_seq(session_id)
        page = store.read_page(session_id, run_id=run_id, since_seq=cursor, limit=HISTORY_PAGE, types=types)
        # A filter may hide the run's terminal event: then the stream ends at it all the same.
        terminal = store.run_terminal_seq(session_id, run_id) if types is not None and run_id is not None else None
        for seq, line in zip(page.seqs, page.lines):
            if terminal is not None and seq > terminal:
                yield End("terminal", terminal)
                return
            if until_seq is not None and seq > until_seq:
                yield End("until_seq", cursor)
                return
            event_type = json.loads(line)["type"]
            yield Delivery(seq, event_type, line)
            last_sent = time.monotonic()
            cursor = seq
            if run_id is not None and event_type in RUN_TERMINAL_TYPES:
                yield End("terminal", seq)
                return
            if until_seq is not None and seq >= until_seq:
                yield End("until_seq", seq)
                return
        if types is not None:
            if terminal is not None and terminal <= page.next_since_seq:
                yield End("terminal", terminal)
                return
            if until_seq is not None and page.next_since_seq >= until_seq:
                yield End("until_seq", until_seq)
                return
            cursor = max(cursor, page.next_since_seq)
        if page.has_more:
            continue
        if until_seq is not None and known_last >= until_seq:
            yield End("until_seq", cursor)
            return
        if run_id is not None and _run_ended_before(store, session_id, run_id, cursor):
            yield End("terminal", cursor)
            return
        # Keepalives count from the last byte sent, not from the last event in the session: a
        # run's stream stays quiet while other runs keep its session busy.
        quiet_for = time.monotonic() - last_sent
        if quiet_for >= keepalive:
            yield KeepAlive()
            last_sent, quiet_for = time.monotonic(), 0.0
        store.wait_for_events(session_id, max(known_last, cursor), keepalive - quiet_for)


def _run_ended_before(store: Store, session_id: str, run_id: str, cursor: int) -> bool:
    """Whether the run's terminal event is at or before ``cursor`` (a resume after the end)."""
    terminal = store.run_terminal_seq(session_id, run_id)
    return terminal is not None and terminal <= cursor
