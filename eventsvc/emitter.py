"""EventEmitter: how agent code records events, with ``run_scope`` supplying the run_id.

The run_id lives in a ContextVar, so a scope follows the code that opened it across threads
started with ``contextvars.copy_context`` and across asyncio tasks, and never leaks into
another request's events.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

_current_run: ContextVar[str | None] = ContextVar("eventsvc_run_id", default=None)


class Appender(Protocol):
    def append(self, session_id: str, event: dict[str, Any], *, default_source: str = ...) -> dict[str, Any]: ...


def current_run_id() -> str | None:
    """The run_id of the innermost ``run_scope`` around the caller, if any."""
    return _current_run.get()


@contextmanager
def run_scope(run_id: str) -> Iterator[str]:
    """Inside this block, emitted events get ``run_id`` unless they pass one explicitly."""
    token = _current_run.set(run_id)
    try:
        yield run_id
    finally:
        _current_run.reset(token)


class EventEmitter:
    """Builds envelopes for a store (or anything with the store's ``append``)."""

    def __init__(self, store: Appender, source: str = "session") -> None:
        self.store = store
        self.source = source

    run_scope = staticmethod(run_scope)

    def emit(self, session_id: str, type: str, payload: dict[str, Any] | None = None, *,
             run_id: str | None = None, event_id: str | None = None, source: str | None = None,
             timestamp: str | None = None) -> dict[str, Any]:
        """Append one event and return the stored envelope.

        A run-scoped type with no run_id, outside any ``run_scope``, raises the store's
        ValidationFailed (a ValueError) and writes nothing.
        """
        event = make_event(type, payload, run_id=run_id, event_id=event_id, source=source, timestamp=timestamp)
        return self.store.append(session_id, event, default_source=self.source)


def make_event(type: str, payload: dict[str, Any] | None = None, *, run_id: str | None = None,
               event_id: str | None = None, source: str | None = None,
               timestamp: str | None = None) -> dict[str, Any]:
    """The event ``emit`` sends: the run_id from the innermost ``run_scope`` unless passed."""
    event: dict[str, Any] = {"type": type, "payload": {} if payload is None else payload}
    run_id = run_id if run_id is not None else _current_run.get()
    if run_id is not None:
        event["run_id"] = run_id
    if event_id is not None:
        event["event_id"] = event_id
    if timestamp is not None:
        event["timestamp"] = timestamp
    if source is not None:
        event["source"] = source
    return event
