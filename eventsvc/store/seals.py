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

from . import segments

SEAL_SUFFIX = ".seal.json"
_CHUNK = 1 << 20


def seal_path(session_dir: Path, base: int) -> Path:
    return session_dir / f"{base:020d}{SEAL_SUFFIX}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def previous_seal_digest(session_dir: Path, base: int) -> str | None:
    """SHA-256 of the seal file of the segment before ``base`` (None for the first segment).

    Raises FileNotFoundError when that segment exists but has no seal.
    """
    earlier = [b for b in segments.list_bases(session_dir) if b < base]
    return file_sha256(seal_path(session_dir, earlier[-1])) if earlier else None


def measure(path: Path, length: int) -> dict[str, Any]:
    """SHA-256, line count and first/last seq of the first ``length`` bytes of a segment."""
    digest = hashlib.sha256()
    events = 0
    first_line = last_line = b""
    remaining = length
    carry = b""
    with open(path, "rb") as file:
        while remaining > 0:
            chunk = file.read(min(_CHUNK, remaining))
            if not chunk:
                raise ValueError(f"{path} is shorter than {length} bytes")
            remaining -= len(chunk)
            digest.update(chunk)
            events += chunk.count(b"\n")
            carry += chunk
            lines = carry.split(b"\n")
            if not first_line and len(lines) > 1:
                first_line = lines[0]
            if len(lines) > 1:
                last_line = lines[-2]
            carry = lines[-1]
    if carry:
        raise ValueError(f"{path}: the first {length} bytes do not end at a line boundary")
    return {
        "bytes": length,
        "events": events,
        "first_seq": json.loads(first_line)["seq"] if first_line else None,
        "last_seq": json.loads(last_line)["seq"] if last_line else None,
        "sha256": digest.hexdigest(),
    }


def write_seal(session_dir: Path, base: int, length: int) -> dict[str, Any]:
    """Seal the first ``length`` bytes of segment ``base``; durable before it returns."""
    seal = {"segment": segments.segment_name(base),
            **measure(session_dir / segments.segment_name(base), length),
            "prev": previous_seal_digest(session_dir, base)}
    target = seal_path(session_dir, base)
    temporary = target.with_name(target.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(seal, file, indent=2)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, target)
    segments.fsync_dir(session_dir)
    return seal
