"""The audit's per-session checks: seq spans, run lifecycles and seals (no Flask, no click).

``eventsvc.audit`` streams the lines and calls these; each keeps only what its check needs
(spans of seqs, one small record per run, one seal at a time), never the lines themselves.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import lifecycle
from .errors import EventSvcError
from .schemas import is_valid_id
from .store import seals, segments
from .types import EventTypeSet

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


# -- seals -----------------------------------------------------------------------------------------

_SEAL_KEYS = {"segment": str, "bytes": int, "events": int, "first_seq": (int, type(None)),
              "last_seq": (int, type(None)), "sha256": str, "prev": (str, type(None))}
_MEASURED = ("segment", "bytes", "events", "first_seq", "last_seq", "sha256")


class SealedPrefix:
    """What ``seals.measure`` would say of a segment's first ``bytes``, measured as the audit streams it."""

    def __init__(self, seal: dict[str, Any], seal_file: Path) -> None:
        self.seal = seal
        self.seal_file = seal_file
        self.length: int = seal["bytes"]
        self.digest = hashlib.sha256()
        self.hashed = 0
        self.events = 0
        self.first_line: bytes | None = None
        self.last_line: bytes | None = None

    def feed(self, buffer: bytes, start: int) -> None:
        """``buffer`` holds the file's bytes from ``start``, a line start; parts already fed are skipped."""
        if self.first_line is None and start == 0:
            newline = buffer.find(b"\n", 0, self.length)
            if newline >= 0:
                self.first_line = buffer[:newline]
        low, high = self.hashed - start, min(len(buffer), self.length - start)
        if high <= low:
            return
        self.digest.update(memoryview(buffer)[low:high])
        self.events += buffer.count(b"\n", low, high)
        self.hashed = start + high
        if self.hashed == self.length and buffer[high - 1] == 0x0A:
            self.last_line = buffer[buffer.rfind(b"\n", 0, high - 1) + 1: high - 1]

    def measured(self, name: str) -> dict[str, Any]:
        return {"segment": name, "bytes": self.hashed, "events": self.events, "first_seq": _seq_of(self.first_line),
                "last_seq": _seq_of(self.last_line), "sha256": self.digest.hexdigest()}


def _seq_of(line: bytes | None) -> Any:
    if line is None:
        return None
    try:
        return json.loads(line)["seq"]
    except (ValueError, KeyError, TypeError, IndexError):
        return "(unreadable)"


class SealCheck:
    """A session folder's seals: each against its segment's bytes, each against the one before."""

    def __init__(self, session_dir: Path, emit: Emit) -> None:
        self.session_dir = session_dir
        self.emit = emit
        names = os.listdir(session_dir)
        self.bases = sorted(b for b in map(segments.parse_base, names) if b is not None)
        self.sealed = {int(name[:20]) for name in names
                       if name.endswith(seals.SEAL_SUFFIX) and len(name) == 20 + len(seals.SEAL_SUFFIX)
                       and name[:20].isdigit()}
        self.torn = sorted(name for name in names if segments.TORN_SUFFIX in name)
        self.last = self.bases[-1] if self.bases else None

    def orphans_and_torn(self) -> None:
        """Seals without a segment (errors) and torn lines that recovery kept aside (information)."""
        for base in sorted(self.sealed.difference(self.bases)):
            self.emit(str(seals.seal_path(self.session_dir, base)), 0, "SEAL_ORPHAN",
                 f"this seal's segment {segments.segment_name(base)} is missing")
        for name in self.torn:
            segment, _, offset = name.partition(segments.TORN_SUFFIX)
            size = segments.file_size(self.session_dir / name)
            self.emit(str(self.session_dir / name), 0, "TORN_KEPT",
                 f"recovery cut a torn last line ({size} bytes) off {segment} at byte {offset} and kept it here")

    def begin(self, path: Path, base: int | None) -> SealedPrefix | None:
        """The seal of segment ``base`` read and chain-checked, ready to measure; None when there is none."""
        if base is None:
            return None
        seal_file = seals.seal_path(self.session_dir, base)
        if base not in self.sealed:
            if base != self.last:
                self.emit(str(path), 0, "SEAL_MISSING", f"a rolled segment without its seal {seal_file.name}")
            return None
        try:
            seal = json.loads(seal_file.read_bytes())
        except ValueError as exc:
            self.emit(str(seal_file), 0, "SEAL_MISMATCH", f"not a readable seal: {exc}")
            return None
        problem = _seal_problem(seal)
        if problem:
            self.emit(str(seal_file), 0, "SEAL_MISMATCH", f"not a valid seal: {problem}")
            return None
        self._check_chain(base, seal["prev"], seal_file)
        return SealedPrefix(seal, seal_file)

    def _check_chain(self, base: int, prev: str | None, seal_file: Path) -> None:
        earlier = self.bases[:bisect.bisect_left(self.bases, base)]
        if not earlier:
            if prev is not None:
                self.emit(str(seal_file), 0, "SEAL_CHAIN_BROKEN",
                          "the session's first segment has a seal whose prev is not null")
            return
        before = seals.seal_path(self.session_dir, earlier[-1])
        skipped = [b for b in sorted(self.sealed) if earlier[-1] < b < base]  # seals of segments now missing
        if skipped and prev == seals.file_sha256(seals.seal_path(self.session_dir, skipped[-1])):
            self.emit(str(seal_file), 0, "SEAL_CHAIN_BROKEN", f"prev is the SHA-256 of "
                      f"{seals.seal_path(self.session_dir, skipped[-1]).name}, whose segment is missing")
        elif not before.exists():
            self.emit(str(seal_file), 0, "SEAL_CHAIN_BROKEN", f"prev names a seal, but {before.name} is missing")
        elif prev != seals.file_sha256(before):
            self.emit(str(seal_file), 0, "SEAL_CHAIN_BROKEN", f"prev is not the SHA-256 of {before.name}: "
                      "that seal, or this one, was changed")

    def end(self, path: Path, base: int | None, prefix: SealedPrefix | None, *, size: int, lines: int) -> None:
        """Compare the measured prefix with its seal; report the active segment's unsealed lines."""
        sealed_bytes = sealed_lines = 0
        if prefix is not None:
            measured, seal = prefix.measured(path.name), prefix.seal
            differences = [f"{key} {measured[key]!r} (the seal says {seal[key]!r})"
                           for key in _MEASURED if measured[key] != seal[key]]
            if prefix.hashed == prefix.length and prefix.length and prefix.last_line is None:
                differences.append(f"byte {prefix.length} of the seal is not a line's end")
            if base != self.last and size != prefix.length:
                differences.append(f"the rolled segment is {size} bytes, its seal covers {prefix.length}")
            if differences:
                self.emit(str(path), 0, "SEAL_MISMATCH",
                          f"no longer matches {prefix.seal_file.name}: " + "; ".join(differences))
            sealed_bytes, sealed_lines = prefix.hashed, prefix.events
        if base is not None and base == self.last and lines > sealed_lines and size > sealed_bytes:
            what = f"lines {sealed_lines + 1}-{lines} are" if lines > sealed_lines + 1 else f"line {lines} is"
            self.emit(str(path), sealed_lines + 1, "UNSEALED_TAIL",
                      f"{what} not sealed yet (bytes {sealed_bytes}-{size} of the active segment)")


def _seal_problem(seal: Any) -> str | None:
    if not isinstance(seal, dict) or set(seal) != set(_SEAL_KEYS):
        return f"a seal is an object with exactly the keys {', '.join(_SEAL_KEYS)}"
    for key, kind in _SEAL_KEYS.items():
        if not isinstance(seal[key], kind) or isinstance(seal[key], bool):
            return f"{key} is {seal[key]!r}"
    if seal["bytes"] < 0:
        return f"bytes is {seal['bytes']}"
    return None
