"""Reading a data folder that may come from elsewhere: no link followed, no special file opened,
no line held whole past the largest event, no nesting deep enough to exhaust the stack.

A received folder is input, not a trusted part of this machine. Every file the tools read goes
through ``open_regular`` (``lstat`` first, then ``O_NOFOLLOW | O_NONBLOCK``, then ``fstat`` of the
same inode), so a symbolic link, FIFO, socket, device or directory is refused by name instead of
followed, blocked on or read for ever. ``bounded_lines`` reads any file in fixed chunks and never
holds more than ``max_line`` bytes of one line; ``decode`` bounds nesting before ``json`` recurses.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from ...jsoncodec import MAX_DEPTH, nesting_depth_exceeds
from ...printable import printable  # noqa: F401 (the offline tools print file names through untrusted.printable)


CHUNK = 1 << 20
DEFAULT_MAX_LINE = 1024 * 1024  # the service's default EVENTSVC_MAX_EVENT_BYTES

_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISREG, "a regular file"))


class NotRegular(OSError):
    """A link or special file where the store keeps a regular file (or a directory): never followed."""

    def __init__(self, path: str | os.PathLike[str], what: str, expected: str = "a regular file") -> None:
        super().__init__(errno.EINVAL, f"{what}, not {expected}: refused", os.fspath(path))
        self.what = what


def kind(mode: int) -> str:
    """What an ``lstat`` mode is, in words."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "an unknown kind of file"


def lkind(path: str | os.PathLike[str]) -> str | None:
    """What is at ``path`` without following a link (None: nothing)."""
    try:
        return kind(os.lstat(path).st_mode)
    except FileNotFoundError:
        return None


def check_regular(path: str | os.PathLike[str]) -> None:
    """Raise NotRegular unless ``path`` is a regular file (itself, not a link to one); missing is fine."""
    what = lkind(path)
    if what is not None and what != "a regular file":
        raise NotRegular(path, what)


def check_directory(path: str | os.PathLike[str]) -> None:
    """Raise NotRegular unless ``path`` is a directory itself (not a link to one); missing is fine."""
    what = lkind(path)
    if what is not None and what != "a directory":
        raise NotRegular(path, what, "a directory")


def open_regular(path: str | os.PathLike[str], flags: int = os.O_RDONLY) -> int:
    """A descriptor of the regular file at ``path``; raises NotRegular for anything else.

    ``lstat`` first, so a device is never opened (opening some has effects); ``O_NOFOLLOW`` and
    ``O_NONBLOCK`` so a link swapped in meanwhile is not followed and a FIFO does not block; then
    ``fstat`` must show the same regular inode.
    """
    before = os.lstat(path)
    if not stat.S_ISREG(before.st_mode):
        raise NotRegular(path, kind(before.st_mode))
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise NotRegular(path, lkind(path) or "something that changed while opened") from None
        raise
    after = os.fstat(fd)
    if not stat.S_ISREG(after.st_mode) or (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        raise NotRegular(path, "something that changed while opened")
    return fd


def open_binary(path: str | os.PathLike[str]) -> BinaryIO:
    """``open(path, "rb", buffering=0)`` through ``open_regular``."""
    return os.fdopen(open_regular(path), "rb", buffering=0)


def read_small(path: str | os.PathLike[str], limit: int) -> bytes:
    """A whole small file (a seal); raises ValueError when it is larger than ``limit`` bytes."""
    with open_binary(path) as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


Line = tuple[int, "bytes | None", int, bool]


def bounded_lines(file: BinaryIO, *, max_line: int = DEFAULT_MAX_LINE, start: int = 0,
                  on_chunk: Callable[[bytes], None] | None = None) -> Iterator[Line]:
    """``(offset, line, length, complete)`` for each line of ``file`` from byte ``start`` (a line start).

    ``line`` is the bytes without the newline, or None when the line is longer than ``max_line``
    (its ``length`` is still exact); only the last line can be incomplete. Memory is bounded by
    ``max_line`` plus one chunk, whatever the file holds. ``on_chunk`` sees every byte read, in order.
    """
    file.seek(start)
    offset = start
    carry = b""
    skipped = -1  # >= 0: inside a line too long to keep, this many bytes of it read so far
    while chunk := file.read(CHUNK):
        if on_chunk is not None:
            on_chunk(chunk)
        cursor = 0
        if skipped >= 0:
            newline = chunk.find(b"\n")
            if newline < 0:
                skipped += len(chunk)
                continue
            yield offset, None, skipped + newline, True
            offset += skipped + newline + 1
            skipped, cursor = -1, newline + 1
        buffer = carry + chunk[cursor:] if carry or cursor else chunk
        lines = buffer.split(b"\n")
        carry = lines.pop()
        for line in lines:
            length = len(line)
            yield offset, (line if length <= max_line else None), length, True
            offset += length + 1
        if len(carry) > max_line:
            skipped, carry = len(carry), b""
    if skipped >= 0:
        yield offset, None, skipped, False
    elif carry:
        yield offset, carry, len(carry), False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_decode = json.JSONDecoder(parse_constant=_reject_constant).decode


class TooDeep(ValueError):
    """A JSON line that nests deeper than the service accepts."""


def decode(line: bytes, *, limit: int = MAX_DEPTH) -> Any:
    """The JSON value of a log line; raises ValueError (UnicodeDecodeError, JSONDecodeError or
    TooDeep) for anything the service would not have written. Never RecursionError: nesting is
    bounded before parsing, and brackets that never close (which that check leaves to the
    parser) are caught where the parser gives up."""
    text = line.decode("utf-8")
    if line.count(b"[") + line.count(b"{") > limit and nesting_depth_exceeds(line, limit):
        raise TooDeep(f"nests deeper than {limit} levels")
    try:
        return _decode(text)
    except RecursionError:
        raise TooDeep(f"nests deeper than {limit} levels") from None
