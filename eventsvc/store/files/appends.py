"""The files backend's steps of one append that touch the disk: index rows, writing the log, undoing a write.

The decisions made before anything is written (re-sends, expected seqs, run ownership, sizes)
are the shared rules of ``eventsvc.store.rules``; the caller holds the session lock.
"""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from ...errors import StorageError, StorageFull
from . import segments
from ..drafts import Draft

log = logging.getLogger(__name__)


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
