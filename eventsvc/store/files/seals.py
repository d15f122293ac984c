"""Seals: tamper evidence for finished segments (stdlib only).

``<base>.seal.json`` records a segment's name, byte length, event count, first and last seq,
its SHA-256, and the SHA-256 of the previous segment's seal file (``null`` for the first), so
a session's seals form a hash chain: changing any sealed byte, or any seal, breaks it.
A seal of the active segment covers the prefix it had when sealed.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from . import segments, untrusted

SEAL_SUFFIX = ".seal.json"
_CHUNK = 1 << 20


def seal_path(session_dir: Path, base: int) -> Path:
    return session_dir / f"{base:020d}{SEAL_SUFFIX}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with untrusted.open_binary(path) as file:
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def previous_seal_digest(session_dir: Path, base: int) -> str | None:
    """SHA-256 of the seal file of the segment before ``base`` (None for the first segment).

    Raises FileNotFoundError when that segment exists but has no seal.
    """
    earlier = [b for b in segments.list_bases(session_dir) if b < base]
    return file_sha256(seal_path(session_dir, earlier[-1])) if earlier else None


def measure(path: Path, length: int, *, max_line: int = untrusted.DEFAULT_MAX_LINE) -> dict[str, Any]:
    """SHA-256, line count and first/last seq of the first ``length`` bytes of a segment.

    Raises ValueError when those bytes do not end at a line's end or hold a line longer than
    ``max_line``; untrusted.NotRegular for a link or special file. Memory stays within a chunk
    and one line.
    """
    digest = hashlib.sha256()
    events = 0
    first_line: bytes | None = None
    last_line = b""
    current = b""  # the bytes of the line being read so far
    remaining = length
    with untrusted.open_binary(path) as file:
        while remaining > 0:
            chunk = file.read(min(_CHUNK, remaining))
            if not chunk:
                raise ValueError(f"{path} is shorter than {length} bytes")
            remaining -= len(chunk)
            digest.update(chunk)
            newlines = chunk.count(b"\n")
            if not newlines:
                current += chunk
            else:
                events += newlines
                first_end, last_end = chunk.find(b"\n"), chunk.rfind(b"\n")
                completed = current + chunk[:first_end]
                if first_line is None:
                    first_line = completed
                last_line = completed if newlines == 1 else chunk[chunk.rfind(b"\n", 0, last_end) + 1:last_end]
                current = chunk[last_end + 1:]
            if len(current) > max_line or len(last_line) > max_line:
                raise ValueError(f"{path} holds a line longer than {max_line} bytes")
    if current:
        raise ValueError(f"{path}: the first {length} bytes do not end at a line boundary")
    return {
        "bytes": length,
        "events": events,
        "first_seq": _seq(first_line) if first_line else None,
        "last_seq": _seq(last_line) if last_line else None,
        "sha256": digest.hexdigest(),
    }


def _seq(line: bytes) -> Any:
    try:
        return untrusted.decode(line)["seq"]
    except (ValueError, KeyError, TypeError, IndexError):
        raise ValueError("a sealed line that is not a stored envelope") from None


def seal_text(seal: dict[str, Any]) -> str:
    """A seal file's exact text: the audit holds every seal to it byte for byte."""
    return json.dumps(seal, indent=2) + "\n"


def write_seal(session_dir: Path, base: int, length: int) -> dict[str, Any]:
    """Seal the first ``length`` bytes of segment ``base``; durable before it returns."""
    seal = {"segment": segments.segment_name(base),
            **measure(session_dir / segments.segment_name(base), length),
            "prev": previous_seal_digest(session_dir, base)}
    target = seal_path(session_dir, base)
    temporary = target.with_name(target.name + ".tmp")
    if os.path.lexists(temporary):
        os.unlink(temporary)  # a crash's leftover; unlink removes a link itself, never its target
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(seal_text(seal))
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, target)
    segments.fsync_dir(session_dir)
    return seal
