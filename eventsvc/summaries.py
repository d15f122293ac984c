"""Run and session summaries, folded from events in seq order (no I/O here).

One fold serves every path that needs a summary: the index applies it to the rows of each
append (and of each repair or rebuild, which index through the same commit), the audit applies
it to the lines it streams and compares, and the tests apply it to a whole log to recompute.
A fold step needs only (seq, type, timestamp, run_id), which the index rows carry, so keeping
summaries current never reads the log.
"""
from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from . import lifecycle

RUN_KEYS = ("run_id", "session_id", "status", "verify", "first_seq", "last_seq", "event_count", "created_at",
            "started_at", "ended_at", "updated_at", "policy", "counts")
SESSION_KEYS = ("session_id", "first_seq", "last_seq", "event_count", "created_at", "updated_at", "run_count",
                "active_runs", "closed")
# The types whose events change a summary beyond counting them (last_seq, event_count, updated_at,
# counts): lifecycle, verify and policy events and a session's close. The index adds one event of
# any other type to summaries it already holds in SQL alone (summary_index), so ``fold`` must
# look at nothing else.
STATEFUL_TYPES = frozenset({*lifecycle.STATUS_BY_TYPE, *lifecycle.VERIFY_BY_TYPE, *lifecycle.POLICY_KEY_BY_TYPE,
                            "session_closed"})


@dataclass
class RunSummary:
    run_id: str
    session_id: str
    status: str = lifecycle.UNKNOWN
    verify: str | None = None
    first_seq: int = 0
    last_seq: int = 0
    event_count: int = 0
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    updated_at: str | None = None
    blocked: int = 0
    warned: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, seq: int, event_type: str, timestamp: str) -> None:
        """Fold in the run's next event (seqs ascending)."""
        if not self.event_count:
            self.first_seq = seq
        self.last_seq = seq
        self.event_count += 1
        self.updated_at = timestamp
        self.counts[event_type] = self.counts.get(event_type, 0) + 1
        if event_type not in STATEFUL_TYPES:
            return
        if event_type in lifecycle.STATUS_BY_TYPE:
            before = self.status
            self.status = lifecycle.next_status(before, event_type)
            if event_type == "run_created" and self.created_at is None:
                self.created_at = timestamp
            elif event_type == "run_started" and self.started_at is None:
                self.started_at = timestamp
            if self.status != before and self.status in lifecycle.TERMINAL_STATUSES:
                self.ended_at = timestamp
        elif event_type in lifecycle.VERIFY_BY_TYPE:
            self.verify = lifecycle.next_verify(self.verify, event_type)
        elif event_type == "tool_policy_blocked":
            self.blocked += 1
        elif event_type == "tool_policy_warn":
            self.warned += 1

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "session_id": self.session_id, "status": self.status, "verify": self.verify,
                "first_seq": self.first_seq, "last_seq": self.last_seq, "event_count": self.event_count,
                "created_at": self.created_at, "started_at": self.started_at, "ended_at": self.ended_at,
                "updated_at": self.updated_at, "policy": {"blocked": self.blocked, "warned": self.warned},
                "counts": dict(self.counts)}


@dataclass
class SessionSummary:
    session_id: str
    first_seq: int = 0
    last_seq: int = 0
    event_count: int = 0
    created_at: str | None = None
    updated_at: str | None = None
    run_count: int = 0
    active_runs: int = 0
    closed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "first_seq": self.first_seq, "last_seq": self.last_seq,
                "event_count": self.event_count, "created_at": self.created_at, "updated_at": self.updated_at,
                "run_count": self.run_count, "active_runs": self.active_runs, "closed": self.closed}


def fold(session: SessionSummary, runs: MutableMapping[str, RunSummary],
         events: Iterable[tuple[int, str | None, str, str]]) -> set[str]:
    """Apply events ``(seq, run_id, type, timestamp)`` of ``session`` in seq order; returns the runs touched.

    ``runs`` must hold the current summary of every run the events name that already has one;
    runs it lacks are new (they count towards ``run_count`` and, until terminal, ``active_runs``).
    """
    touched: set[str] = set()
    for seq, run_id, event_type, timestamp in events:
        if not session.event_count:
            session.first_seq, session.created_at = seq, timestamp
        session.last_seq, session.updated_at = seq, timestamp
        session.event_count += 1
        if event_type == "session_closed":
            session.closed = True
        if run_id is None:
            continue
        run = runs.get(run_id)
        if run is None:
            run = runs[run_id] = RunSummary(run_id, session.session_id)
            session.run_count += 1
            session.active_runs += 1
        was_active = lifecycle.is_active(run.status)
        run.add(seq, event_type, timestamp)
        if was_active and not lifecycle.is_active(run.status):
            session.active_runs -= 1
        touched.add(run_id)
    return touched
