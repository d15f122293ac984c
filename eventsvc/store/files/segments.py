"""JSON-lines segment files: the log itself, and the only durable truth (stdlib only).

A session's events live in ``segments/<session_id>/<base seq, 20 digits>.jsonl``; each line
is one compact envelope ending in ``\\n``. Segments are only ever appended to, except that
recovery cuts an incomplete last line (a torn write) and keeps it beside the segment.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from . import untrusted

SEGMENTS_DIR = "segments"
SEGMENT_SUFFIX = ".jsonl"
TORN_SUFFIX = ".torn-"
MAX_SEQ = 2**63 - 1  # SQLite's largest integer: a name past it can never be indexed


def segment_name(base: int) -> str:
    return f"{base:020d}{SEGMENT_SUFFIX}"


def parse_base(name: str) -> int | None:
    """The base seq of a segment file name, or None for any other file.

    Strict: 20 ASCII digits (``str.isdigit`` alone also takes other scripts' digits) naming a seq
    from 1 to MAX_SEQ.
    """
    stem = name[: -len(SEGMENT_SUFFIX)] if name.endswith(SEGMENT_SUFFIX) else ""
    if len(stem) != 20 or not stem.isascii() or not stem.isdigit():
        return None
    base = int(stem)
    return base if 1 <= base <= MAX_SEQ else None


def list_bases(session_dir: Path) -> list[int]:
    try:
        names = os.listdir(session_dir)
    except FileNotFoundError:
        return []
    return sorted(base for base in map(parse_base, names) if base is not None)


def file_size(path: str | Path) -> int:
    """Size in bytes of the entry itself (a link is not followed); a missing file counts as empty."""
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:
        return 0


def fsync_dir(path: str | Path) -> None:
    """Make a created or renamed entry durable: fsync of the file alone does not cover its name."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentIO:
    """The system calls that write the log. Tests subclass it to inject ENOSPC, EIO or fsync failures."""

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        os.fdatasync(fd)


class TailMoved(Exception):
    """The segment is not the length the index expects: another process wrote to or cut it."""


def append_at(path: str | Path, offset: int, data: bytes, *, fsync: bool, io: SegmentIO) -> None:
    """Write ``data`` at ``offset``, the segment's current end, and make it durable if asked.

    Raises TailMoved (nothing written) if the file's length is not ``offset``. On any OSError
    the segment is cut back to ``offset`` before the error propagates, so a failed append never
    leaves a partial line behind. A failed fsync is not retried: after one, the kernel may have
    dropped the dirty pages, so the write is treated as lost and cut back.
    """
    try:
        fd, created = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW), False
    except FileNotFoundError:
        fd, created = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644), True
    try:
        if os.fstat(fd).st_size != offset:
            raise TailMoved(f"{path} is not {offset} bytes long")
        try:
            view = memoryview(data)
            written = 0
            while written < len(data):
                count = io.pwrite(fd, view[written:], offset + written)
                if count <= 0:
                    raise OSError(errno.EIO, "short write")
                written += count
            if fsync:
                io.fsync(fd)
        except OSError:
            _cut_back(fd, offset)
            raise
    finally:
        os.close(fd)
    if created and fsync:
        fsync_dir(os.path.dirname(path))


def _cut_back(fd: int, offset: int) -> None:
    try:
        os.ftruncate(fd, offset)
        os.fsync(fd)
    except OSError:
        pass  # The next append re-checks the length from disk and recovers the tail then.


def truncate(path: str | Path, offset: int) -> None:
    fd = untrusted.open_regular(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_exact(fd: int, offset: int, length: int) -> bytes:
    data = os.pread(fd, length, offset)
    while len(data) < length:
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


def read_lines(path: str | Path, offsets: list[int], lengths: list[int]) -> list[bytes]:
    """The lines at ``offsets`` (each ``lengths`` long, newline included) of one segment, in order,
    without their newlines.

    Lines that follow each other (a session's page) come from one pread and one split; lines
    spread over a small stretch (a run's page) from one pread and slices. A line that does not
    end in a newline means the file changed under the index, and raises OSError(EIO).
    """
    first, end = offsets[0], offsets[-1] + lengths[-1]
    wanted = sum(lengths)
    # Never follow a link, never block on a FIFO: a special file fails the pread instead (EIO, ESPIPE).
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        # One pread of the whole stretch beats a pread per line up to about eight times the bytes.
        if end - first == wanted or end - first <= max(wanted * 8, 512 * 1024):
            block = read_exact(fd, first, end - first)
            if len(block) != end - first or not block.endswith(b"\n"):
                raise OSError(errno.EIO, f"{path} at byte {first}: the indexed lines are not in the log")
            if end - first == wanted:
                lines = block[:-1].split(b"\n")
                if len(lines) == len(offsets):
                    return lines
                raise OSError(errno.EIO, f"{path} at byte {first}: the indexed lines are not in the log")
            pieces = [block[offset - first: offset - first + length] for offset, length in zip(offsets, lengths)]
        else:
            pieces = [read_exact(fd, offset, length) for offset, length in zip(offsets, lengths)]
    finally:
        os.close(fd)
    for offset, length, piece in zip(offsets, lengths, pieces):
        if len(piece) != length or piece[-1:] != b"\n":
            raise OSError(errno.EIO, f"{path} at byte {offset}: the indexed line is not in the log")
    return [piece[:-1] for piece in pieces]


def scan(path: Path, start: int = 0, *, max_line: int = untrusted.DEFAULT_MAX_LINE,
         on_chunk: Callable[[bytes], None] | None = None) -> Iterator[tuple[int, bytes | None, bool]]:
    """Stream ``(offset, line, complete)`` from ``start``; only a last line can be incomplete.

    ``line`` is None for a line longer than ``max_line`` (read past in chunks, never held);
    ``on_chunk`` sees each chunk read (for progress). Raises untrusted.NotRegular when ``path``
    is a link or special file.
    """
    with untrusted.open_binary(path) as file:
        for offset, line, _, complete in untrusted.bounded_lines(file, max_line=max_line, start=start,
                                                                 on_chunk=on_chunk):
            yield offset, line, complete


def cut_tail(path: Path, offset: int) -> Path:
    """Move the bytes from ``offset`` to the end into ``<segment>.torn-<offset>``; returns that file.

    A later tear at the same offset gets ``.torn-<offset>.2`` and so on: nothing cut is ever
    overwritten (nor followed: a link in the way counts as taken). The copy is durable before
    the segment is cut, so the bytes are never lost; it is copied a chunk at a time.
    """
    aside = path.with_name(f"{path.name}{TORN_SUFFIX}{offset}")
    attempt = 1
    while os.path.lexists(aside):
        attempt += 1
        aside = path.with_name(f"{path.name}{TORN_SUFFIX}{offset}.{attempt}")
    with untrusted.open_binary(path) as source:
        source.seek(offset)
        target_fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(target_fd, "wb") as target:
            while chunk := source.read(untrusted.CHUNK):
                target.write(chunk)
            target.flush()
            os.fsync(target.fileno())
    truncate(path, offset)
    fsync_dir(path.parent)
    return aside
