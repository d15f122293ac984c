"""A session's batch mark: where a multi-event append is about to be written, durable before it is.

Recovery uses it to tell a batch cut short by a crash (cut aside whole, so a batch is all or
none) from complete lines that only missed their index commit (indexed). It lives in the
session's folder, ``segments/<session_id>/pending-batch.mark``, one fixed-size record that each
batch overwrites in place, so that:

- marking takes no lock but the session's own, which the append holds already: batches to
  different sessions never wait for each other's marks (an index row would wait for SQLite's
  one writer, and its fsync with it);
- the overwrite changes neither the file's size nor its blocks, so ``fdatasync`` flushes one
  block and commits no filesystem metadata.

The record carries a CRC-32, so a mark torn by a crash while it was being written reads as no
mark: the batch's lines are written only after the mark is durable, so a torn mark has none.
A mark that is settled (its batch failed, or recovery has looked at it) is removed; one whose
batch was committed stays until the next batch overwrites it (recovery honours a mark only at
the index's checkpoint, which a committed batch has moved past). The file may come from
elsewhere with the folder: it is read through ``untrusted.open_regular``, bounded, and anything
but a well-formed record counts as no mark.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import stat
import zlib
from pathlib import Path

from . import segments, untrusted

log = logging.getLogger(__name__)

MARK_FILE = "pending-batch.mark"
_FIELDS = b"batch %020d %020d %020d"
RECORD_BYTES = len(_FIELDS % (0, 0, 0)) + 10  # the fields, " " + 8 hex digits of CRC-32, "\n"
_RECORD = re.compile(rb"batch ([0-9]{20}) ([0-9]{20}) ([0-9]{20}) ([0-9a-f]{8})\n\Z")
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

Mark = tuple[int, int, int]  # (segment base, start offset, end offset) of the batch's bytes


def record(segment: int, start: int, end: int) -> bytes:
    fields = _FIELDS % (segment, start, end)
    return fields + b" %08x\n" % zlib.crc32(fields)


def parse(data: bytes) -> Mark | None:
    """The mark a record holds; None for anything that is not a whole, well-formed record."""
    match = _RECORD.match(data)
    if match is None or int(match[4], 16) != zlib.crc32(data[: -10]):
        return None
    return int(match[1]), int(match[2]), int(match[3])  # honoured only at the checkpoint (see recovery)


def write(session_dir: str, segment: int, start: int, end: int, *, fsync: bool, io: segments.SegmentIO) -> None:
    """Record the batch about to be written at ``start``-``end`` of ``segment``; durable when ``fsync``.

    Raises OSError (nothing of the batch is written yet, so the append simply fails).
    """
    _overwrite(session_dir, record(segment, start, end), fsync=fsync, io=io)


def clear(session_dir: str, *, fsync: bool) -> None:
    """Durably forget the mark (the file goes): a batch cut back after a failed write, or one
    recovery has settled, so that a failed append leaves the folder as it found it.

    A mark left behind would be honoured if the checkpoint came back to its start: a single
    append written there later, its index commit lost in a power cut, would be cut aside with it.
    """
    try:
        os.unlink(os.path.join(session_dir, MARK_FILE))  # a link or special file in its place goes too
    except FileNotFoundError:
        return
    if fsync:
        segments.fsync_dir(session_dir)


def read(session_dir: str | Path) -> Mark | None:
    """The session's mark, or None (no file, a torn or foreign record).

    Raises untrusted.NotRegular when the mark is a link or special file (never followed).
    """
    path = os.path.join(session_dir, MARK_FILE)
    try:
        data = untrusted.read_small(path, RECORD_BYTES)
    except FileNotFoundError:
        return None
    except ValueError:
        data = b""  # longer than a record: not one of ours
    mark = parse(data)
    if mark is None:
        log.warning("%s holds no well-formed batch mark (%d bytes); ignored", path, len(data))
    return mark


def _overwrite(session_dir: str, data: bytes, *, fsync: bool, io: segments.SegmentIO) -> None:
    path = os.path.join(session_dir, MARK_FILE)
    fd = os.open(path, _OPEN_FLAGS, 0o644)  # O_NONBLOCK: a FIFO put in its place fails, never blocks
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        created = info.st_size == 0
        if info.st_size > len(data):  # not ours: a record is all the file ever holds
            os.ftruncate(fd, len(data))
        io.write_mark(fd, data, fsync=fsync)
    finally:
        os.close(fd)
    if created and fsync:
        segments.fsync_dir(session_dir)  # its name too, once: later marks overwrite it in place
