"""The steps of one append, between validation and the index commit (the caller holds the lock).

Each step either returns what the next needs or raises the domain error that stops the
append before anything is written; only ``write_log`` and ``undo_write`` touch the disk.
"""
from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import EventIdConflict, EventTooLarge, RunSessionConflict, SeqConflict, StorageError, StorageFull
from . import segments
from .drafts import Draft

log = logging.getLogger(__name__)


def find_resent(drafts: list[Draft], stored: Iterable[dict]) -> dict[str, dict]:
    """Drafts whose event_id is already stored: same content is a re-send, other content a conflict."""
    by_id = {env["event_id"]: env for env in stored}
    resent: dict[str, dict] = {}
    for draft in drafts:
        previous = by_id.get(draft.event_id)
        if previous is None:
            continue
        if not draft.same_content(previous):
            raise EventIdConflict(
                f"event_id {draft.event_id!r} is already stored with different content (seq {previous['seq']})",
                {"event_id": draft.event_id, "seq": previous["seq"]})
        if draft.expected_seq is not None and draft.expected_seq != previous["seq"]:
            raise SeqConflict(
                f"event_id {draft.event_id!r} is stored at seq {previous['seq']}, not {draft.expected_seq}",
                {"event_id": draft.event_id, "expected_seq": draft.expected_seq, "seq": previous["seq"]})
        resent[draft.event_id] = previous
    return resent


def check_expected_seqs(fresh: list[Draft], last_seq: int) -> None:
    """Optimistic concurrency: an input seq must be the seq the event is about to get."""
    for next_seq, draft in enumerate(fresh, last_seq + 1):
        if draft.expected_seq is not None and draft.expected_seq != next_seq:
            raise SeqConflict(f"expected seq {draft.expected_seq}, but the next seq is {next_seq}",
                              {"expected_seq": draft.expected_seq, "next_seq": next_seq, "last_seq": last_seq})


def runs_to_claim(session_id: str, fresh: list[Draft], last_seq: int,
                  owners: dict[str, str]) -> list[tuple[str, int]]:
    """(run_id, first seq) of the runs this append starts; raises RunSessionConflict for another's run.

    ``owners`` holds the owning session of every run of ``fresh`` that has one (and may hold more).
    """
    first_seq: dict[str, int] = {}
    for seq, draft in enumerate(fresh, last_seq + 1):
        if draft.run_id is not None:
            first_seq.setdefault(draft.run_id, seq)
    if not first_seq:
        return []
    for run_id in first_seq:
        owner = owners.get(run_id)
        if owner is not None and owner != session_id:
            raise RunSessionConflict(f"run {run_id!r} belongs to session {owner!r}",
                                     {"run_id": run_id, "session_id": owner})
    return [(run_id, seq) for run_id, seq in first_seq.items() if run_id not in owners]


def check_sizes(fresh: list[Draft], lines: list[bytes], max_event_bytes: int) -> None:
    sizes = {draft.position: len(line) - 1 for draft, line in zip(fresh, lines) if len(line) - 1 > max_event_bytes}
    if sizes:
        raise EventTooLarge(f"an event is larger than the limit of {max_event_bytes} bytes",
                            {"limit": max_event_bytes, "sizes": sizes})


def index_rows(session_id: str, fresh: list[Draft], lines: list[bytes], last_seq: int,
               segment: int, offset: int) -> tuple[list[tuple], int]:
    """The index rows for lines written at ``offset`` of ``segment``, and the offset after them."""
    rows = []
    for seq, (draft, line) in enumerate(zip(fresh, lines), last_seq + 1):
        env = draft.envelope
        rows.append((session_id, seq, env["run_id"], env["type"], env["event_id"], env["timestamp"],
                     segment, offset, len(line)))
        offset += len(line)
    return rows, offset


def write_log(path: str, offset: int, data: bytes, *, fsync: bool, io: segments.SegmentIO) -> None:
    """Append to the segment; raises StorageFull or StorageError with nothing left behind."""
    try:
        segments.append_at(path, offset, data, fsync=fsync, io=io)
    except segments.TailMoved as exc:
        raise StorageError(f"the log changed under the index: {exc}") from None
    except OSError as exc:
        if offset == 0:
            _drop_empty(path)
        raise storage_error(path, exc) from None


def undo_write(path: str, offset: int) -> None:
    """Cut the segment back to ``offset`` after an append that will not be acknowledged."""
    try:
        segments.truncate(path, offset)
        if offset == 0:
            _drop_empty(path)
    except OSError as exc:
        log.error("could not cut %s back to %d bytes (%s); the next append repairs it", path, offset, exc)


def storage_error(path: str | Path, exc: OSError) -> StorageError:
    log.error("write to %s failed: %s", path, exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull("no space left on the device holding the log")
    return StorageError(f"the log could not be written ({os.strerror(exc.errno or errno.EIO)})")


def _drop_empty(path: str) -> None:
    try:
        if os.stat(path).st_size == 0:
            os.unlink(path)
    except OSError:
        pass
