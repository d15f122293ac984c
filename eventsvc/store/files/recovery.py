"""Bring a session's index up to its log: the only code that repairs anything.

Runs under the session lock, at open for every session whose log is ahead of (or behind)
the index's checkpoint, and before any append that finds the segment not the length the
index expects. It reads only past the checkpoint, so its cost does not grow with the log.

- complete lines past the checkpoint are indexed (their append reached the disk whole);
- an incomplete last line (a torn write) is cut off and kept in ``<segment>.torn-<offset>``;
- index rows that point past the end of the log (only possible when fsync was off, or the
  files were edited) are dropped: the log is the truth;
- a complete line that cannot be indexed (not an envelope of this session with the next seq,
  or a repeated event_id) stops the repair: nothing is deleted, the session refuses appends
  until an operator looks (``eventsvc audit``), and reads serve what is indexed.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import StorageError
from ...schemas import ENVELOPE_KEYS, is_valid_id
from . import segments, untrusted
from .index import INDEX_FILE, Index, SessionState
from .locks import LOCKS_DIR

log = logging.getLogger(__name__)
_FLUSH_ROWS = 20_000
_KEYS = frozenset(ENVELOPE_KEYS)


class Unindexable(StorageError):
    """A complete line past the checkpoint that the index cannot take; the session needs an operator."""


class UnsafeFiles(Unindexable):
    """A session folder holding a link or special file where its log should be: never read at all."""


@dataclass
class _Pending:
    """Rows read from the log, not yet in the index; checked against the index in bulk at flush."""

    session_dir: Path
    state: SessionState | None
    rows: list[tuple] = field(default_factory=list)
    event_ids: set[str] = field(default_factory=set)


def is_consistent(state: SessionState | None, session_dir: str | Path) -> bool:
    """Whether the log ends exactly where the checkpoint says (two stats, no reads; every append asks)."""
    if state is None:
        return not segments.list_bases(Path(session_dir))
    directory = os.fspath(session_dir)
    if segments.file_size(os.path.join(directory, segments.segment_name(state.segment))) != state.end_offset:
        return False
    following = state.last_seq + 1
    return following == state.segment or not os.path.exists(os.path.join(directory, segments.segment_name(following)))


def check_session_files(session_dir: Path) -> None:
    """Raise UnsafeFiles when the session folder, or any entry in it, is a link or special file (the
    store keeps only regular files there): recovery never follows, opens, cuts or deletes one (the
    log may have come from elsewhere)."""
    try:
        untrusted.check_directory(session_dir)
        for name in os.listdir(session_dir):
            untrusted.check_regular(session_dir / name)
    except untrusted.NotRegular as exc:
        raise UnsafeFiles(f"{exc.filename}: {exc.strerror}") from None


def check_data_folder(data_dir: Path) -> None:
    """Raise UnsafeFiles naming a link or special file where the store keeps its own files or
    folders (segments/, session folders and their files, the index and its companions, lock files).

    The tools that write (reindex, seal) call it first and refuse such a folder as a whole.
    """
    try:
        untrusted.check_directory(data_dir / segments.SEGMENTS_DIR)
        for name in (INDEX_FILE, INDEX_FILE + ".new"):
            for suffix in ("", "-wal", "-shm", "-journal"):
                untrusted.check_regular(data_dir / (name + suffix))
        locks = data_dir / LOCKS_DIR
        if untrusted.lkind(locks) == "a directory":
            for name in os.listdir(locks):
                untrusted.check_regular(locks / name)
        else:
            untrusted.check_regular(locks)
        root = data_dir / segments.SEGMENTS_DIR
        for entry in os.scandir(root):
            if entry.is_symlink():
                raise untrusted.NotRegular(entry.path, "a symbolic link", "a session folder")
    except untrusted.NotRegular as exc:
        raise UnsafeFiles(f"{exc.filename}: {exc.strerror}") from None
    for entry in os.scandir(root):
        if entry.is_dir(follow_symlinks=False):
            check_session_files(Path(entry.path))


def catch_up(index: Index, session_dir: Path, session_id: str, *, max_line: int = untrusted.DEFAULT_MAX_LINE,
             on_bytes: Callable[[int], None] | None = None) -> SessionState | None:
    """Index what the log holds past the checkpoint; returns the new checkpoint. Caller holds the lock.

    ``on_bytes`` hears how many bytes of the log were read, now and then (for progress).
    """
    check_session_files(session_dir)
    state = index.session_state(session_id)
    if state is not None:
        size = segments.file_size(session_dir / segments.segment_name(state.segment))
        if size < state.end_offset:
            state = _forget_lost(index, session_id, state, size)
    _cut_unfinished_batch(index, session_dir, session_id, state)
    bases = segments.list_bases(session_dir)
    if state is None:
        if not bases:
            return None
        base, offset, next_seq = bases[0], 0, 1
    else:
        base, offset, next_seq = state.segment, state.end_offset, state.last_seq + 1
    pending = _Pending(session_dir, state)
    try:
        for segment in (b for b in bases if b >= base):
            path = session_dir / segments.segment_name(segment)
            if segment != base:
                if segments.file_size(path) == 0:
                    os.unlink(path)  # a roll that crashed before its first write: it holds nothing
                    continue
                if segment != next_seq:
                    raise Unindexable(f"{path}: segment name says seq {segment}, the log is at seq {next_seq}")
                offset = 0
            read_from = offset
            for line_offset, line, complete in segments.scan(path, offset, max_line=max_line):
                if not complete:
                    aside = segments.cut_tail(path, line_offset)
                    log.warning("cut a torn last line off %s at byte %d; kept in %s", path, line_offset, aside)
                    break
                _take(pending, session_id, path, segment, line_offset, line, next_seq)
                next_seq += 1
                if len(pending.rows) >= _FLUSH_ROWS:
                    _flush(index, pending)
                    if on_bytes is not None:
                        on_bytes(line_offset - read_from)
                        read_from = line_offset
            if on_bytes is not None:
                on_bytes(segments.file_size(path) - read_from)
    finally:
        _flush(index, pending)
    return pending.state


def _take(pending: _Pending, session_id: str, path: Path, segment: int,
          offset: int, line: bytes | None, seq: int) -> None:
    # A rebuild runs this once per line: the cheap checks first, the message only when raising.
    if line is None:
        raise Unindexable(f"{path}:{offset}: a line longer than the largest event the service accepts")
    try:
        event = untrusted.decode(line)
    except ValueError as exc:
        raise Unindexable(f"{path}:{offset}: not valid JSON ({exc})") from None
    if type(event) is not dict or event.keys() != _KEYS:
        raise Unindexable(f"{path}:{offset}: not an envelope with exactly the keys {', '.join(ENVELOPE_KEYS)}")
    if type(event["type"]) is not str or type(event["timestamp"]) is not str:
        raise Unindexable(f"{path}:{offset}: type and timestamp must be strings")
    if (event["session_id"] != session_id or type(event["seq"]) is not int or event["seq"] != seq
            or not is_valid_id(event["event_id"])):
        raise Unindexable(f"{path}:{offset}: expected session {session_id!r} seq {seq}, found "
                          f"session {event['session_id']!r} seq {event['seq']!r}")
    run_id, event_id = event["run_id"], event["event_id"]
    if run_id is not None and not is_valid_id(run_id):
        raise Unindexable(f"{path}:{offset}: invalid run_id")
    if event_id in pending.event_ids:
        raise Unindexable(f"{path}:{offset}: event_id {event_id!r} is already stored in this session")
    pending.event_ids.add(event_id)
    pending.rows.append((session_id, seq, run_id, event["type"], event_id, event["timestamp"],
                         segment, offset, len(line) + 1))


def _flush(index: Index, pending: _Pending) -> None:
    """Index the pending rows in one transaction, up to the first that clashes with the index."""
    rows = pending.rows
    if not rows:
        return
    session_id = rows[0][0]
    clash: str | None = None
    known = index.before_append(session_id, [row[4] for row in rows],
                                {row[2] for row in rows if row[2] is not None})
    stored, owners = known.stored, known.run_owners
    for position, row in enumerate(rows):
        run_id, event_id = row[2], row[4]
        if event_id in stored:
            clash = f"event_id {event_id!r} is already stored in this session"
        elif run_id is not None and owners.get(run_id, session_id) != session_id:
            clash = f"run {run_id!r} belongs to session {owners[run_id]!r}"
        if clash:
            rows = rows[:position]
            clash = f"{pending.session_dir / segments.segment_name(row[6])}:{row[7]}: {clash}"
            break
    pending.rows, pending.event_ids = [], set()
    if rows:
        last = rows[-1]
        pending.state = SessionState(session_id, last[1], last[6], last[7] + last[8])
        index.commit_append(pending.state, rows, known)
        log.info("indexed %d events of session %s found in the log past the index", len(rows), session_id)
    if clash:
        raise Unindexable(clash)


def _cut_unfinished_batch(index: Index, session_dir: Path, session_id: str, state: SessionState | None) -> None:
    """A batch append interrupted mid-write is cut aside whole: a batch is all or none.

    Only a mark that starts exactly at the checkpoint counts; any other mark is stale (its
    append failed and was cut back already) and is dropped.
    """
    mark = index.pending_batch(session_id)
    if mark is None:
        return
    segment, start, end = mark
    at_checkpoint = (start == 0 and (state is None or segment > state.segment)) or (
        state is not None and segment == state.segment and start == state.end_offset)
    path = session_dir / segments.segment_name(segment)
    if at_checkpoint and start < segments.file_size(path) < end:
        aside = segments.cut_tail(path, start)
        log.warning("cut an append_many interrupted mid-write off %s at byte %d; kept in %s", path, start, aside)
    # Durably: a mark that came back after a power cut would be honoured again, over the lines
    # appended at its start since (acknowledged ones among them).
    index.clear_batch(session_id, durable=True)


def _forget_lost(index: Index, session_id: str, state: SessionState, size: int) -> SessionState | None:
    last = index.last_within(session_id, state.segment, size)
    if last is not None:
        kept = SessionState(session_id, last.seq, state.segment, last.offset + last.length)
    elif state.segment > 1:
        kept = SessionState(session_id, state.segment - 1, state.segment, 0)
    else:
        kept = None
    dropped = index.forget_after(session_id, kept.last_seq if kept else 0, kept)
    log.error("session %s: the log is shorter than the index (%d < %d bytes in segment %d); "
              "dropped %d index rows past the log's end", session_id, size, state.end_offset,
              state.segment, dropped)
    return kept
