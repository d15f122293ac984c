"""What a data folder holds, counted from its segments alone (no index, no Flask, no click).

One streaming pass: a line at a time, and per session only the set of its run ids, so memory
grows with the number of sessions and runs, never with the number of events.
"""
from __future__ import annotations

import heapq
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .export import segments_root
from ..schemas import is_valid_id
from ..store.files import segments, untrusted

TOP_SESSIONS = 10


@dataclass
class SessionStats:
    session_id: str
    events: int = 0
    runs: int = 0
    bytes: int = 0
    segments: int = 0


@dataclass
class Stats:
    """Totals over every session with at least one segment.

    ``runs`` sums each session's distinct run ids (a run belongs to one session; the audit reports
    one that does not). ``bytes`` is the segment files' size on disk. ``unreadable_lines`` counts
    lines that are not JSON objects, an incomplete (torn) last line included; they are not events.
    ``skipped`` names what was not read at all: a link or special file where a session folder or
    segment is expected (a folder from elsewhere is never followed).
    """

    sessions: int = 0
    segments: int = 0
    events: int = 0
    runs: int = 0
    bytes: int = 0
    unreadable_lines: int = 0
    largest_by_events: list[SessionStats] = field(default_factory=list)
    largest_by_bytes: list[SessionStats] = field(default_factory=list)
    event_types: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def as_document(self) -> dict[str, Any]:
        return asdict(self)


def session_dirs(data_dir: Path, skipped: list[str] | None = None) -> list[Path]:
    """Every session folder under ``segments/`` (a real folder, never a link), sorted by id;
    links to folders go to ``skipped``. Raises NotADataFolder."""
    root = segments_root(data_dir)
    found = []
    for entry in os.scandir(root):
        if entry.is_dir(follow_symlinks=False) and is_valid_id(entry.name):
            found.append(Path(entry.path))
        elif entry.is_symlink() and skipped is not None:
            skipped.append(untrusted.printable(f"{entry.path}: a symbolic link where a session folder is expected: "
                                               "not followed"))
    return sorted(found, key=lambda path: path.name)


def log_bytes(data_dir: Path) -> int:
    """How many bytes ``collect`` will read (directory listings and lstat, no reads)."""
    return sum(segments.file_size(session_dir / segments.segment_name(base))
               for session_dir in session_dirs(data_dir) for base in segments.list_bases(session_dir))


def collect(data_dir: Path, *, top: int = TOP_SESSIONS, on_bytes: Callable[[int], None] | None = None,
            max_line: int = untrusted.DEFAULT_MAX_LINE) -> Stats:
    """Count sessions, segments, events, runs, bytes and event types; rank the ``top`` largest
    sessions by events and by bytes (ties by session id). Raises NotADataFolder; OSError on a
    file that cannot be read. ``on_bytes`` hears each chunk read (for progress); a line longer
    than ``max_line`` is an unreadable line, read past."""
    stats = Stats()
    types: Counter[str] = Counter()
    per_session: list[SessionStats] = []
    for session_dir in session_dirs(data_dir, stats.skipped):
        session = _session(session_dir, types, stats, on_bytes, max_line)
        if session.segments:
            per_session.append(session)
            stats.sessions += 1
            stats.segments += session.segments
            stats.events += session.events
            stats.runs += session.runs
            stats.bytes += session.bytes
    stats.largest_by_events = heapq.nsmallest(top, per_session, key=lambda s: (-s.events, s.session_id))
    stats.largest_by_bytes = heapq.nsmallest(top, per_session, key=lambda s: (-s.bytes, s.session_id))
    stats.event_types = dict(sorted(types.items(), key=lambda item: (-item[1], item[0])))
    return stats


def _session(session_dir: Path, types: Counter[str], stats: Stats,
             on_bytes: Callable[[int], None] | None, max_line: int) -> SessionStats:
    session = SessionStats(session_dir.name)
    run_ids: set[str] = set()
    on_chunk = (lambda chunk: on_bytes(len(chunk))) if on_bytes is not None else None
    for base in segments.list_bases(session_dir):
        path = session_dir / segments.segment_name(base)
        try:
            untrusted.check_regular(path)
        except untrusted.NotRegular as exc:
            stats.skipped.append(untrusted.printable(f"{path}: {exc.strerror}"))
            continue
        session.segments += 1
        session.bytes += segments.file_size(path)
        for _, line, complete in segments.scan(path, max_line=max_line, on_chunk=on_chunk):
            envelope = _parse(line) if complete else None
            if envelope is None:
                stats.unreadable_lines += 1
                continue
            session.events += 1
            type_ = envelope.get("type")
            types[type_ if isinstance(type_, str) else "(not a string)"] += 1
            run_id = envelope.get("run_id")
            if isinstance(run_id, str):
                run_ids.add(run_id)
    session.runs = len(run_ids)
    return session


def _parse(line: bytes | None) -> dict[str, Any] | None:
    if line is None:
        return None
    try:
        envelope = untrusted.decode(line)
    except ValueError:
        return None
    return envelope if isinstance(envelope, dict) else None
