"""The Store protocol: what every backend promises, and all that the layers above may call.

The HTTP API, live tail (``eventsvc.live``), the emitter and the CLI's store-neutral commands
use a store only through these methods, so a deployment can move between the files backend
(``EventStore``: JSON-lines segments + SQLite index) and PostgreSQL (``PostgresStore``) without
a line of their code changing. Operations that exist for one backend only (``reindex``,
``seal_active`` on files; ``eventsvc db upgrade`` on PostgreSQL) stay on that backend's class.

Every backend passes the same contract suite (tests/test_contract.py). Errors are the ones of
``eventsvc.errors``; a backend translates its driver's exceptions into ``StorageError`` (503
``storage_unavailable``) and never lets them escape.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..types import EventTypeSet
from .listings import SummaryPage

__all__ = ["AppendResult", "Page", "Store", "SummaryPage"]


@dataclass(frozen=True)
class Page:
    """One page of a read: the stored envelopes as the log's bytes (one JSON object each)."""

    session_id: str
    lines: list[bytes]
    seqs: list[int]
    has_more: bool
    # The page looked at every event up to here: the last returned seq, or past it under a type
    # filter (pass it as the next since_seq); since_seq when the page found nothing to look at.
    next_since_seq: int


@dataclass(frozen=True)
class AppendResult:
    events: list[dict[str, Any]]
    created: int  # how many of ``events`` this call stored; the rest were idempotent re-sends
    # The stored JSON of each event this call wrote (None for a re-send): the API answers with
    # these bytes rather than serialising the envelope a second time.
    lines: list[bytes | None] = field(default_factory=list)


class EnvelopeReads:
    """The session and run forms of an envelope read, derived from a backend's ``_envelopes`` (one
    definition for every backend, as ``drafts.AppendShortcuts`` is for appends)."""

    def _envelopes(self, session_id: str, run_id: str | None, since_seq: int, limit: int,
                   types: Iterable[str] | None) -> list[dict]:
        raise NotImplementedError

    def get_events_by_session(self, session_id: str, since_seq: int = 0, limit: int = 100, *,
                              types: Iterable[str] | None = None) -> list[dict]:
        """The aggregated view: every event of the session after ``since_seq``, run events included.

        With ``types``, up to ``limit`` events of those types (looking as far into the log as it takes).
        """
        return self._envelopes(session_id, None, since_seq, limit, types)

    def get_events_by_run(self, session_id: str, run_id: str, since_seq: int = 0, limit: int = 100, *,
                          types: Iterable[str] | None = None) -> list[dict]:
        """Only ``run_id``'s events after ``since_seq``, with their session-level seqs, in seq order."""
        return self._envelopes(session_id, run_id, since_seq, limit, types)


@runtime_checkable
class Store(Protocol):
    """A durable, append-only event log per session, safe to share between threads.

    Guarantees, for every backend:

    - seqs of a session are 1, 2, 3, ... with no gap and no repeat, whichever process or host
      appends; an acknowledged append is durable;
    - an append (one event or a batch) is atomic: it stores all of its events or none, and
      every failure leaves the store exactly as it was;
    - a re-send of a stored ``event_id`` (same type, run_id, source and payload) returns the
      stored envelope and stores nothing; other content is ``EventIdConflict``;
    - an input ``seq`` is an expectation: ``SeqConflict`` unless it is the seq the event gets;
    - a run belongs to the session of its first event: ``RunSessionConflict`` elsewhere;
    - reads return the stored envelope bytes, identical in both backends for the same events.
    """

    event_types: EventTypeSet
    max_event_bytes: int

    # -- appends ---------------------------------------------------------------------------------

    def append(self, session_id: str, event: dict[str, Any], *, default_source: str = "api") -> dict[str, Any]:
        """Append one event; returns the stored envelope (the stored one for an idempotent re-send).

        Raises ValidationFailed, EventTooLarge, SeqConflict, EventIdConflict, RunSessionConflict
        or StorageError; in every case nothing is written.
        """
        ...

    def append_one(self, session_id: str, event: dict[str, Any], *, default_source: str = "api") -> AppendResult:
        """``append`` that also says whether the event was new; field errors are not keyed by index."""
        ...

    def append_many(self, session_id: str, events: Sequence[dict[str, Any]], *,
                    default_source: str = "api") -> list[dict[str, Any]]:
        """Append a batch atomically (all or none); returns the stored envelopes in input order."""
        ...

    def append_batch(self, session_id: str, events: Sequence[dict[str, Any]], *,
                     default_source: str = "api") -> AppendResult:
        """``append_many`` that also says how many events were new; errors are keyed by batch index."""
        ...

    # -- reads -----------------------------------------------------------------------------------

    def read_page(self, session_id: str, *, run_id: str | None = None, since_seq: int = 0,
                  limit: int = 100, types: Iterable[str] | None = None) -> Page:
        """Envelopes with ``seq > since_seq`` in seq order, as stored bytes; ``run_id`` narrows to one run.

        With ``types``, only events of those types: the page looks at a bounded window of rows and
        its ``next_since_seq`` may lie past the last event returned (pass it on to page further).
        Raises SessionNotFound when the session has no events at all, ValidationFailed for bad
        bounds or an unregistered type.
        """
        ...

    def read_run_page(self, run_id: str, *, since_seq: int = 0, limit: int = 100,
                      types: Iterable[str] | None = None) -> Page:
        """A page of one run's events, found without knowing its session. Raises RunNotFound."""
        ...

    def check_types(self, types: Iterable[str] | None) -> list[str] | None:
        """A type filter as a list (None: no filter); raises ValidationFailed for an unregistered name."""
        ...

    def get_events_by_session(self, session_id: str, since_seq: int = 0, limit: int = 100, *,
                              types: Iterable[str] | None = None) -> list[dict]:
        """Every event of the session after ``since_seq`` (run events included); [] for an unknown one."""
        ...

    def get_events_by_run(self, session_id: str, run_id: str, since_seq: int = 0, limit: int = 100, *,
                          types: Iterable[str] | None = None) -> list[dict]:
        """Only ``run_id``'s events after ``since_seq``, with their session-level seqs, in seq order."""
        ...

    def last_seq(self, session_id: str) -> int:
        """The session's last seq; 0 for a session with no events."""
        ...

    def run_terminal_seq(self, session_id: str, run_id: str) -> int | None:
        """Seq of the run's terminal event (run_completed, run_failed, run_cancelled), if it has one."""
        ...

    def run_session(self, run_id: str) -> str | None:
        """The session a run belongs to, or None for an unknown run."""
        ...

    def session_ids(self) -> list[str]:
        """Every session that holds an event, sorted."""
        ...

    # -- summaries and listings (kept current at append time, in the append's transaction) ----------

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """The session's summary (``eventsvc.summaries.SESSION_KEYS``), or None when it is unknown."""
        ...

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run's summary (``eventsvc.summaries.RUN_KEYS``), or None when it is unknown."""
        ...

    def list_sessions(self, limit: int = 100, cursor: str | None = None) -> SummaryPage:
        """Session summaries, most recently appended-to first; ``next_cursor`` pages on (opaque)."""
        ...

    def list_runs(self, *, session_id: str | None = None, statuses: Iterable[str] | None = None,
                  limit: int = 100, cursor: str | None = None) -> SummaryPage:
        """Run summaries, most recently appended-to first, optionally of one session and/or some statuses."""
        ...

    def list_session_runs(self, session_id: str, *, limit: int = 100, cursor: str | None = None) -> SummaryPage:
        """The session's run summaries in order of their first event. Raises SessionNotFound."""
        ...

    # -- waiting and lifetime --------------------------------------------------------------------

    def wait_for_events(self, session_id: str, after_seq: int, timeout: float) -> int:
        """Block until the session has an event after ``after_seq`` (or ``timeout`` passes); returns its last seq.

        Appends made by any process (or host) sharing the store wake the waiter. Holds no lock
        while waiting. A caller re-reads from its own cursor afterwards, so a missed wake-up
        costs at most ``timeout``, never an event.
        """
        ...

    def close(self) -> None:
        """Release files, connections and threads; the store is unusable afterwards."""
        ...
