"""The audit's per-session checks: seq spans and run lifecycles (no Flask, no click).

``eventsvc.ops.audit`` streams the lines and calls these; each keeps only what its check needs
(spans of seqs, one small record per run), never the lines themselves.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from .. import lifecycle
from ..errors import EventSvcError
from ..schemas import is_valid_id
from ..types import EventTypeSet

Emit = Callable[[str, int, str, str], None]


class AuditError(EventSvcError):
    """A PATH or index the audit cannot take (not a data folder, session folder or segment file)."""

    code = "not_auditable"


def usable_fields(obj: Any, event_types: EventTypeSet) -> tuple[int | None, str | None, str | None,
                                                                 str | None, str | None]:
    """(seq, session_id, event_id, run_id, type) of an invalid envelope, each None when unusable,
    so one bad field does not also hide the line from the seq, id and run checks."""
    if not isinstance(obj, dict):
        return None, None, None, None, None
    seq = obj.get("seq")
    ids = [value if is_valid_id(value) else None for value in map(obj.get, ("session_id", "event_id", "run_id"))]
    type_ = obj.get("type")
    return (seq if type(seq) is int and seq >= 1 else None, *ids,
            type_ if isinstance(type_, str) and type_ in event_types else None)  # type: ignore[return-value]


# -- seqs ----------------------------------------------------------------------------------------

class SeqSpans:
    """Which seqs a session's lines hold, as sorted disjoint spans, to name gaps, repeats and disorder.

    The caller keeps ``expected`` (one past the highest seq so far) and calls ``other`` only for a
    line whose seq is not that one, so a contiguous log never touches the spans. Each span keeps
    where its lowest seq was read: a gap is reported at the line just after it.
    """

    def __init__(self, first: int | None) -> None:
        self.first = first  # the lowest seq the unit should hold; None: whatever its first line says
        self.spans: list[list[Any]] = []  # [lo, hi, path, line], sorted by lo

    def _sync(self, expected: int) -> None:
        """The hot loop only moves ``expected``; bring the top span up to it."""
        if not expected or self.first is None:
            return
        if self.spans:
            self.spans[-1][1] = expected - 1
        elif expected > self.first:
            self.spans.append([self.first, expected - 1, "", 0])

    def other(self, seq: int, expected: int, unreadable: int, path: str, line: int, emit: Emit) -> int:
        """Account for ``seq`` read where ``expected`` was due (0: nothing known yet); returns the
        new ``expected``. ``unreadable`` lines just before it had no seq: up to that many missing
        seqs are taken to be theirs (those lines are already reported), not a gap.
        """
        if not expected:
            self.first = max(1, seq - unreadable)
            self.spans = [[self.first, seq, path, line]]
            return seq + 1
        self._sync(expected)
        if seq > expected:
            if seq - expected <= unreadable:
                if self.spans:
                    self.spans[-1][1] = seq
                else:
                    self.spans.append([self.first, seq, path, line])
            else:
                self.spans.append([seq, seq, path, line])
            return seq + 1
        at = bisect.bisect_right(self.spans, seq, key=lambda span: span[0]) - 1
        if at >= 0 and self.spans[at][1] >= seq:
            emit(path, line, "SEQ_REPEAT", f"seq {seq} is already held by an earlier line of the session")
            return expected
        emit(path, line, "SEQ_ORDER", f"seq {seq} comes after seq {expected - 1}: the lines are out of order")
        if self.first is not None and seq >= self.first:
            self._insert(at + 1, seq, path, line)
        return expected

    def _insert(self, at: int, seq: int, path: str, line: int) -> None:
        spans = self.spans
        if at > 0 and spans[at - 1][1] == seq - 1:
            spans[at - 1][1] = seq
            at -= 1
        else:
            spans.insert(at, [seq, seq, path, line])
        if at + 1 < len(spans) and spans[at + 1][0] == spans[at][1] + 1:
            spans[at][1] = spans[at + 1][1]
            del spans[at + 1]

    def finish(self, expected: int, emit: Emit) -> None:
        """Report each run of missing seqs between the unit's first seq and its highest."""
        self._sync(expected)
        if self.first is None:
            return
        below = self.first - 1
        for lo, hi, path, line in self.spans:
            if lo > below + 1:
                missing = f"seq {below + 1} is" if lo == below + 2 else f"seqs {below + 1}-{lo - 1} are"
                emit(path, line, "SEQ_GAP", f"{missing} missing before seq {lo}")
            below = hi


# -- run lifecycles --------------------------------------------------------------------------------

class _Run:
    __slots__ = ("state", "stage", "before", "after", "terminal_seq", "verify", "last")

    def __init__(self) -> None:
        self.state = lifecycle.UNKNOWN  # the run's status, as summaries derive it
        self.stage = ""  # the last lifecycle type seen
        self.before = self.after = False  # reported already: one warning of each kind per run
        self.terminal_seq: int | None = None
        self.verify: tuple[int | None, str, int] | None = None  # an open verify_start: (seq, path, line)
        self.last: tuple[str | None, int | None, str, int] = (None, None, "", 0)


class Lifecycle:
    """Each run of one session against the lifecycle graph; warnings only, never errors."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.runs: dict[str, _Run] = {}

    def step(self, run_id: str, type_: str | None, seq: int | None, path: str, line: int) -> None:
        run = self.runs.get(run_id)
        if run is None:
            run = self.runs[run_id] = _Run()
        state = run.state
        if state in lifecycle.TERMINAL_STATUSES:
            if not run.after:
                run.after = True
                self.emit(path, line, "LIFECYCLE_AFTER_TERMINAL", f"run {run_id!r}: {type_} at seq {seq} comes "
                          f"after its {run.stage} at seq {run.terminal_seq}")
        else:
            allowed = lifecycle.ALLOWED_BEFORE.get(type_) if type_ is not None else None
            if state == lifecycle.UNKNOWN and type_ != "run_created" and not run.before:
                run.before = True
                self.emit(path, line, "LIFECYCLE_BEFORE_CREATED",
                          f"run {run_id!r}: {type_} at seq {seq} comes before its run_created")
            elif allowed is not None and state not in allowed and state != lifecycle.UNKNOWN:
                self.emit(path, line, "LIFECYCLE_TRANSITION", f"run {run_id!r}: {type_} at seq {seq} follows "
                          f"{run.stage}; only {' or '.join(lifecycle.ALLOWED_AFTER[state])} may")
            if allowed is not None:
                run.state, run.stage = lifecycle.next_status(state, type_), type_  # type: ignore[arg-type]
                if run.state in lifecycle.TERMINAL_STATUSES:
                    run.terminal_seq = seq
        if type_ == "verify_start":
            run.verify = (seq, path, line)
        elif type_ == "verify_pass" or type_ == "verify_fail":
            run.verify = None
        run.last = (type_, seq, path, line)

    def finish(self) -> None:
        for run_id, run in self.runs.items():
            if run.verify is not None:
                seq, path, line = run.verify
                self.emit(path, line, "VERIFY_UNFINISHED",
                          f"run {run_id!r}: verify_start at seq {seq} has no later verify_pass or verify_fail")
            if run.state not in lifecycle.TERMINAL_STATUSES:
                type_, seq, path, line = run.last
                self.emit(path, line, "RUN_NOT_TERMINATED", f"run {run_id!r} never reached run_completed, "
                          f"run_failed or run_cancelled; its last event is {type_} at seq {seq}")
