"""Offline audit of an eventsvc log: is it whole and untampered, and did its runs behave?

Reads only the files (segments, seals, kept torn lines; with the index check, index.sqlite3
opened read-only) and streams each segment a chunk at a time. Per session it keeps the event
ids and the state of each run; across sessions only which session each run belongs to, so
memory does not grow with the size of a segment. No Flask and no click: the CLI drives it.

Every finding carries a stable code from ``CODES`` (its severity and meaning; the README lists
them). Line numbers are 1-based; line 0 means the finding is about a whole file.
"""
from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marshmallow import ValidationError

from .audit_checks import AuditError, Lifecycle, SeqSpans, usable_fields
from .audit_index import IndexCheck
from .audit_plan import AuditPlan, SessionUnit, plan_audit
from .audit_seals import SealCheck
from ..schemas import StoredEnvelopeSchema, stored_envelope_is_valid
from ..store.files import segments, untrusted
from ..summaries import RunSummary, SessionSummary, fold
from ..types import EVENT_TYPES, EventTypeSet

ERROR, WARNING, INFO = "error", "warning", "info"

CODES: dict[str, tuple[str, str]] = {
    "INVALID_JSON": (ERROR, "a line that is not UTF-8 JSON (NaN and Infinity are not JSON)"),
    "INVALID_ENVELOPE": (ERROR, "a JSON line the service's StoredEnvelopeSchema rejects"),
    "SESSION_MISMATCH": (ERROR, "a session_id that differs from its folder's name"),
    "SEGMENT_NAME_MISMATCH": (ERROR, "a segment file not named <20-digit seq of its first line>.jsonl"),
    "SEQ_GAP": (ERROR, "seqs missing from a session (the first and last missing are named)"),
    "SEQ_REPEAT": (ERROR, "a seq that an earlier line of the session already holds"),
    "SEQ_ORDER": (ERROR, "a seq lower than an earlier line's that is not a repeat"),
    "DUPLICATE_EVENT_ID": (ERROR, "an event_id used twice in one session"),
    "RUN_IN_TWO_SESSIONS": (ERROR, "a run_id used in more than one session"),
    "TORN_WRITE": (ERROR, "an incomplete last line (no newline), with its byte offset"),
    "LINE_TOO_LONG": (ERROR, "a line longer than the largest event the service accepts, read past unparsed"),
    "UNEXPECTED_ENTRY": (ERROR, "an entry the audit did not check: a link, FIFO, socket, device or folder where a "
                                "file is expected, or a name the store never writes"),
    "SEAL_MISMATCH": (ERROR, "a sealed segment whose bytes no longer match its seal, or an unreadable seal"),
    "SEAL_CHAIN_BROKEN": (ERROR, "a seal whose prev is not the SHA-256 of the previous segment's seal file"),
    "SEAL_MISSING": (ERROR, "a rolled segment (not the session's last) without a seal"),
    "SEAL_ORPHAN": (ERROR, "a seal whose segment file is missing"),
    "INDEX_MISSING_ROW": (ERROR, "an event, run or session in the log that the index lacks"),
    "INDEX_EXTRA_ROW": (ERROR, "an index row with nothing in the log behind it"),
    "INDEX_WRONG_BYTES": (ERROR, "an index row that points at other bytes than the log holds"),
    "INDEX_UNUSABLE": (ERROR, "an index that is not a regular SQLite file with exactly the store's schema: "
                              "not queried"),
    "INDEX_WRONG_SUMMARY": (ERROR, "a run or session summary in the index that differs from one folded from the log"),
    "LIFECYCLE_BEFORE_CREATED": (WARNING, "a run's event before its run_created"),
    "LIFECYCLE_TRANSITION": (WARNING, "a run lifecycle step the lifecycle graph does not allow"),
    "LIFECYCLE_AFTER_TERMINAL": (WARNING, "a run's event after its run_completed, run_failed or run_cancelled"),
    "VERIFY_UNFINISHED": (WARNING, "a verify_start with no later verify_pass or verify_fail in its run"),
    "RUN_NOT_TERMINATED": (WARNING, "a run that never reached a terminal state"),
    "UNSEALED_TAIL": (INFO, "the active segment's lines that no seal covers yet"),
    "TORN_KEPT": (INFO, "a torn last line that recovery cut off and kept beside its segment"),
}

__all__ = ["CODES", "AuditPlan", "Finding", "SessionUnit", "Summary", "plan_audit", "run_audit"]


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    code: str
    message: str

    @property
    def severity(self) -> str:
        return CODES[self.code][0]

    def as_dict(self) -> dict[str, Any]:
        return {"path": _json_text(self.path), "line": self.line, "code": self.code, "severity": self.severity,
                "message": _json_text(self.message)}

    def __str__(self) -> str:
        # Names and values come from the folder: escaped, so none can forge a line of output.
        return untrusted.printable(f"{self.path}:{self.line}: {self.code}: {self.message}")


def _json_text(text: str) -> str:
    """A name that is not UTF-8 (held as lone surrogates) as backslash escapes, so JSON output can encode it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class Summary:
    """What was read and what was found; ``findings`` counts by code, ``events`` counts complete lines."""

    sessions: int = 0
    segments: int = 0
    events: int = 0
    runs: int = 0
    bytes: int = 0
    findings: Counter[str] = field(default_factory=Counter)

    def count(self, severity: str) -> int:
        return sum(n for code, n in self.findings.items() if CODES[code][0] == severity)

    @property
    def unexpected(self) -> int:
        """Entries not checked (links, special files, names the store never writes)."""
        return self.findings["UNEXPECTED_ENTRY"]

    def as_dict(self) -> dict[str, Any]:
        return {"sessions": self.sessions, "segments": self.segments, "events": self.events, "runs": self.runs,
                "bytes": self.bytes, "unexpected_entries": self.unexpected, "errors": self.count(ERROR),
                "warnings": self.count(WARNING), "info": self.count(INFO),
                "findings": dict(sorted(self.findings.items()))}


def run_audit(plan: AuditPlan, *, event_types: EventTypeSet = EVENT_TYPES, check_index: bool = False,
              on_finding: Callable[[Finding], None] | None = None,
              on_segment: Callable[[Path], None] | None = None,
              on_bytes: Callable[[int], None] | None = None,
              max_line: int = untrusted.DEFAULT_MAX_LINE) -> Summary:
    """Audit every unit of ``plan``; findings go to ``on_finding`` as they are found.

    A line longer than ``max_line`` bytes is a finding, read past in chunks; ``on_bytes`` hears
    each chunk's size (for progress). Raises AuditError when ``check_index`` is set and a unit
    has no index.sqlite3 to compare with, and OSError when a file cannot be read.
    """
    auditor = _Auditor(event_types, on_finding or (lambda finding: None), on_segment)
    auditor.on_bytes = on_bytes
    auditor.max_line = max_line
    for path, why in plan.unexpected:
        auditor.emit(path, 0, "UNEXPECTED_ENTRY", why)
    indexes: dict[Path, IndexCheck] = {}
    try:
        if check_index:
            for unit in plan.units:
                if unit.data_dir is None:
                    raise AuditError(f"{unit.session_dir}: --index needs a session folder inside a data folder")
                if unit.data_dir not in indexes:
                    indexes[unit.data_dir] = IndexCheck(unit.data_dir, auditor.emit)
            for data_dir in plan.data_dirs:
                if data_dir not in indexes:
                    indexes[data_dir] = IndexCheck(data_dir, auditor.emit)
        for unit in plan.units:
            index = indexes.get(unit.data_dir) if unit.data_dir is not None else None
            _SessionAudit(auditor, unit, index).run()
        for data_dir in plan.data_dirs:
            if data_dir in indexes:
                audited = {unit.session_dir.name for unit in plan.units if unit.data_dir == data_dir}
                indexes[data_dir].unknown_sessions(audited)
                indexes[data_dir].listing_numbers()
    except sqlite3.Error as exc:
        raise AuditError(f"the index could not be read: {exc}") from None
    finally:
        for index in indexes.values():
            index.close()
    auditor.summary.runs = len(auditor.run_owners)
    return auditor.summary


class _Auditor:
    """What the whole audit shares: the summary, the finding sink, and each run's session."""

    def __init__(self, event_types: EventTypeSet, on_finding: Callable[[Finding], None],
                 on_segment: Callable[[Path], None] | None) -> None:
        self.event_types = event_types
        self.schema = StoredEnvelopeSchema(event_types=event_types)
        self.on_finding = on_finding
        self.on_segment = on_segment
        self.summary = Summary()
        self.run_owners: dict[str, str] = {}
        self.on_bytes: Callable[[int], None] | None = None
        self.max_line = untrusted.DEFAULT_MAX_LINE

    def emit(self, path: str | Path, line: int, code: str, message: str) -> None:
        self.summary.findings[code] += 1
        self.on_finding(Finding(str(path), line, code, message))


class _SessionAudit:
    """One session unit, read segment by segment in base order."""

    def __init__(self, auditor: _Auditor, unit: SessionUnit, index: IndexCheck | None) -> None:
        self.auditor = auditor
        self.emit = auditor.emit
        self.unit = unit
        self.session_id = unit.session_dir.name
        self.index = index
        self.event_ids: dict[str, int | None] = {}
        self.lifecycle = Lifecycle(self.emit) if unit.whole else None
        self.run_first_seq: dict[str, int | None] = {}
        first = 1 if unit.whole else (segments.parse_base(unit.files[0].name) if unit.files else None)
        self.seqs = SeqSpans(first)
        self.expected = first or 0  # the seq the next line should have; 0: not known yet (no seq is 0)
        self.unreadable = 0  # lines since the last usable seq that had none
        self.seals = SealCheck(unit.session_dir, unit.bases, unit.seal_bases, unit.torn, self.emit)
        self.end: tuple[int, int] = (0, 0)  # (last base, bytes of complete lines in it)
        # segment name -> {offset: torn file}: recovery cuts only where a line starts (or at the end)
        self.torn_claims: dict[str, dict[int, str]] = {}
        for name in unit.torn if unit.whole else ():
            segment, _, rest = name.partition(segments.TORN_SUFFIX)
            self.torn_claims.setdefault(segment, {})[int(rest.partition(".")[0])] = name
        # With the index check of a whole session: its summaries, folded from the valid lines as read.
        self.summary = SessionSummary(self.session_id) if index is not None and unit.whole else None
        self.run_summaries: dict[str, RunSummary] = {}

    def run(self) -> None:
        auditor, unit = self.auditor, self.unit
        auditor.summary.sessions += 1
        if unit.whole:
            self.seals.orphans_and_torn()
        if self.index is not None:
            bases = None if unit.whole else [b for b in map(segments.parse_base, (p.name for p in unit.files))
                                             if b is not None]
            self.index.begin(self.session_id, bases)
        for path in unit.files:
            self._segment(path)
            auditor.summary.segments += 1
            if auditor.on_segment is not None:
                auditor.on_segment(path)
        for claims in self.torn_claims.values():
            for offset, name in sorted(claims.items()):
                self.emit(str(unit.session_dir / name), 0, "UNEXPECTED_ENTRY", f"a torn line kept aside at byte "
                          f"{offset} of a segment where no line starts there: not a file recovery wrote")
        self.seqs.finish(self.expected, self.emit)
        if self.lifecycle is not None:
            self.lifecycle.finish()
        if self.index is not None:
            top = max(self.expected - 1, 0)
            self.index.end(self.run_first_seq if unit.whole else None, (top, *self.end) if unit.whole else None)
            if self.summary is not None:
                self.index.summaries(self.summary, self.run_summaries)

    def _segment(self, path: Path) -> None:
        base = segments.parse_base(path.name)
        name = str(path)
        if base is None:
            self.emit(name, 0, "SEGMENT_NAME_MISMATCH", f"{path.name} is not a segment name "
                      "(<20-digit base seq>.jsonl): the service never reads it")
            if self.unit.whole:
                return
        prefix = self.seals.begin(path, base)
        emit, auditor = self.emit, self.auditor
        session_id = self.session_id
        decode = untrusted.decode
        is_valid = stored_envelope_is_valid
        event_types = auditor.event_types
        event_ids, run_owners, run_first_seq = self.event_ids, auditor.run_owners, self.run_first_seq
        lifecycle, index = self.lifecycle, self.index
        summary, run_summaries = self.summary, self.run_summaries
        expected, unreadable = self.expected, self.unreadable
        name_checked = base is None
        mismatched: list[Any] = []  # [first line, its session_id, count] for SESSION_MISMATCH
        try:
            file = untrusted.open_binary(path)
        except untrusted.NotRegular as exc:
            emit(name, 0, "UNEXPECTED_ENTRY", f"{exc.what}, not a segment file: not read")
            return
        on_bytes, max_line = auditor.on_bytes, auditor.max_line
        on_chunk: Callable[[bytes], None] | None = None
        if on_bytes is not None:
            on_chunk = lambda chunk: on_bytes(len(chunk))  # noqa: E731
        if prefix is not None:
            on_chunk = prefix.feed if on_bytes is None else (lambda chunk: (prefix.feed(chunk), on_bytes(len(chunk))))
        sealed_end = prefix.length if prefix is not None else -1
        line_no = offset = 0
        torn = -1  # the length of an incomplete last line
        claims = self.torn_claims.get(path.name)
        with file:
            for line_offset, raw, length, complete in untrusted.bounded_lines(file, max_line=max_line,
                                                                               on_chunk=on_chunk):
                if not complete:
                    torn = length
                    break
                line_no += 1
                offset = line_offset + length + 1
                if claims and line_offset in claims:
                    del claims[line_offset]
                if prefix is not None and (line_offset == 0 or offset == sealed_end):
                    prefix.line(line_offset, raw, length)
                if raw is None:
                    emit(name, line_no, "LINE_TOO_LONG", f"a line of {length} bytes, longer than the largest "
                         f"event the service accepts ({max_line} bytes): read past, not parsed")
                    unreadable += 1
                    continue
                try:
                    obj = decode(raw)
                except ValueError as exc:
                    emit(name, line_no, "INVALID_JSON", json_problem(exc, raw))
                    unreadable += 1
                    continue
                if is_valid(obj, event_types):
                    seq, sid, event_id, run_id, type_ = (obj["seq"], obj["session_id"], obj["event_id"],
                                                         obj["run_id"], obj["type"])
                    if summary is not None:
                        fold(summary, run_summaries, ((seq, run_id, type_, obj["timestamp"]),))
                else:
                    emit(name, line_no, "INVALID_ENVELOPE", self._envelope_problem(obj))
                    seq, sid, event_id, run_id, type_ = usable_fields(obj, event_types)
                if sid != session_id and sid is not None:
                    if mismatched:
                        mismatched[2] += 1
                    else:
                        mismatched = [line_no, sid, 1]
                if seq == expected:
                    expected += 1
                    unreadable = 0
                elif seq is None:
                    unreadable += 1
                else:
                    expected = self.seqs.other(seq, expected, unreadable, name, line_no, emit)
                    unreadable = 0
                if not name_checked and seq is not None:
                    name_checked = True
                    if seq - (line_no - 1) != base:
                        emit(name, line_no, "SEGMENT_NAME_MISMATCH",
                             f"the segment is named for seq {base}, but its line {line_no} has seq {seq}")
                if event_id is not None:
                    if event_id in event_ids:
                        earlier = event_ids[event_id]
                        emit(name, line_no, "DUPLICATE_EVENT_ID", f"event_id {event_id!r} is already used "
                             f"in this session{f' by seq {earlier}' if earlier is not None else ''}")
                    else:
                        event_ids[event_id] = seq
                if run_id is not None:
                    if run_id not in run_first_seq:
                        run_first_seq[run_id] = seq
                        owner = run_owners.setdefault(run_id, session_id)
                        if owner != session_id:
                            emit(name, line_no, "RUN_IN_TWO_SESSIONS",
                                 f"run {run_id!r} is also used in session {owner!r}")
                    if lifecycle is not None:
                        lifecycle.step(run_id, type_, seq, name, line_no)
                if index is not None and seq is not None:
                    index.line(name, line_no, seq, base, line_offset, len(raw) + 1, obj)
        if claims:
            claims.pop(offset, None)  # cut at the end, and nothing appended since
        self.expected, self.unreadable = expected, unreadable
        auditor.summary.events += line_no
        auditor.summary.bytes += offset + max(torn, 0)
        if mismatched:
            more = f" (and {mismatched[2] - 1} more lines of this segment)" if mismatched[2] > 1 else ""
            emit(name, mismatched[0], "SESSION_MISMATCH",
                 f"session_id {mismatched[1]!r} is not the folder's {session_id!r}{more}")
        if torn >= 0:
            emit(name, line_no + 1, "TORN_WRITE", f"incomplete last line (a torn write) at byte {offset}: "
                 f"{torn} bytes with no newline")
        self.seals.end(path, base, prefix, size=offset + max(torn, 0), lines=line_no)
        if base is not None:
            self.end = (base, offset)

    def _envelope_problem(self, obj: Any) -> str:
        try:
            self.auditor.schema.load(obj)
        except ValidationError as exc:
            return schema_messages(exc.messages)
        return "the fast envelope check and StoredEnvelopeSchema disagree"  # never expected: see tests


def json_problem(exc: BaseException, raw: bytes) -> str:
    if not raw:
        return "empty line"
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid UTF-8 at byte {exc.start} of the line"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} at column {exc.colno}"
    if isinstance(exc, untrusted.TooDeep):
        return f"not valid JSON: {exc}"
    return f"not valid JSON: {exc}"


def schema_messages(messages: Any, prefix: str = "") -> str:
    """marshmallow's nested messages as one line: ``field: message; field: message``."""
    if isinstance(messages, dict):
        if set(messages) == {"_schema"}:
            return schema_messages(messages["_schema"], prefix)
        return "; ".join(schema_messages(value, f"{prefix}{key}: " if key != "_schema" else prefix)
                         for key, value in messages.items())
    if isinstance(messages, list):
        return "; ".join(schema_messages(item, prefix) for item in messages)
    text = str(messages)
    return prefix + ("not a JSON object" if text == "Invalid input type." else text)
