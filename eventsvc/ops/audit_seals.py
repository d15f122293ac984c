"""The audit's seal checks: each seal against its segment's bytes, and against the seal before it.

A seal file is held to the exact text the store writes (``seals.seal_text``), so a seal is
clean only when it is byte for byte what the store wrote; it is read whole only up to a small
bound. The segment is measured as the audit streams it: one hash, one count, no second read.
"""
from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from ..store.files import seals, segments, untrusted

Emit = Callable[[str, int, str, str], None]
MAX_SEAL_BYTES = 64 * 1024  # a seal is about 400 bytes
_SEAL_KEYS = {"segment": str, "bytes": int, "events": int, "first_seq": (int, type(None)),
              "last_seq": (int, type(None)), "sha256": str, "prev": (str, type(None))}
_MEASURED = ("segment", "bytes", "events", "first_seq", "last_seq", "sha256")


class SealedPrefix:
    """What ``seals.measure`` would say of a segment's first ``bytes``, measured as the audit streams it."""

    def __init__(self, seal: dict[str, Any], seal_file: Path) -> None:
        self.seal = seal
        self.seal_file = seal_file
        self.length: int = seal["bytes"]
        self.digest = hashlib.sha256()
        self.hashed = 0
        self.events = 0
        self.first_line: bytes | None = None
        self.last_line: bytes | None = None  # the line ending exactly at ``length``, if one does

    def feed(self, chunk: bytes) -> None:
        """The file's next bytes, in order from the start."""
        take = self.length - self.hashed
        if take <= 0:
            return
        part = memoryview(chunk)[:take]
        self.digest.update(part)
        self.events += chunk.count(b"\n", 0, len(part))
        self.hashed += len(part)

    def line(self, offset: int, line: bytes | None, length: int) -> None:
        """A complete line at ``offset`` (None: too long to keep); only the first and the last sealed one count."""
        end = offset + length + 1
        if end > self.length:
            return
        if offset == 0:
            self.first_line = b"" if line is None else line
        if end == self.length:
            self.last_line = b"" if line is None else line

    def measured(self, name: str) -> dict[str, Any]:
        return {"segment": name, "bytes": self.hashed, "events": self.events, "first_seq": _seq_of(self.first_line),
                "last_seq": _seq_of(self.last_line), "sha256": self.digest.hexdigest()}


def _seq_of(line: bytes | None) -> Any:
    if line is None:
        return None
    try:
        return untrusted.decode(line)["seq"]
    except (ValueError, KeyError, TypeError, IndexError):
        return "(unreadable)"


class SealCheck:
    """A session folder's seals: each against its segment's bytes, each against the one before.

    ``bases`` and ``seal_bases`` are the folder's segments and seals that are regular files (the
    plan reported every other entry); ``torn`` the torn lines recovery kept aside.
    """

    def __init__(self, session_dir: Path, bases: list[int], seal_bases: Collection[int], torn: list[str],
                 emit: Emit) -> None:
        self.session_dir = session_dir
        self.emit = emit
        self.bases = sorted(bases)
        self.sealed = set(seal_bases)
        self.torn = sorted(torn)
        self.last = self.bases[-1] if self.bases else None

    def orphans_and_torn(self) -> None:
        """Seals without a segment (errors) and torn lines that recovery kept aside (information)."""
        for base in sorted(self.sealed.difference(self.bases)):
            self.emit(str(seals.seal_path(self.session_dir, base)), 0, "SEAL_ORPHAN",
                      f"this seal's segment {segments.segment_name(base)} is missing")
        for name in self.torn:
            segment, _, offset = name.partition(segments.TORN_SUFFIX)
            size = segments.file_size(self.session_dir / name)
            self.emit(str(self.session_dir / name), 0, "TORN_KEPT",
                      f"recovery cut a torn last line ({size} bytes) off {segment} at byte {offset} and kept it here")

    def begin(self, path: Path, base: int | None) -> SealedPrefix | None:
        """The seal of segment ``base`` read and chain-checked, ready to measure; None when there is none."""
        if base is None:
            return None
        seal_file = seals.seal_path(self.session_dir, base)
        if base not in self.sealed:
            if base != self.last:
                self.emit(str(path), 0, "SEAL_MISSING", f"a rolled segment without its seal {seal_file.name}")
            return None
        try:
            data = untrusted.read_small(seal_file, MAX_SEAL_BYTES)
            seal = untrusted.decode(data)
        except untrusted.NotRegular as exc:
            self.emit(str(seal_file), 0, "SEAL_MISMATCH", f"not a readable seal: {exc.what}")
            return None
        except ValueError as exc:
            self.emit(str(seal_file), 0, "SEAL_MISMATCH", f"not a readable seal: {exc}")
            return None
        problem = _seal_problem(seal)
        if problem:
            self.emit(str(seal_file), 0, "SEAL_MISMATCH", f"not a valid seal: {problem}")
            return None
        if seals.seal_text(seal).encode() != data:
            self.emit(str(seal_file), 0, "SEAL_MISMATCH", "not byte for byte the seal the store writes "
                      "for these values (the file was edited)")
        self._check_chain(base, seal["prev"], seal_file)
        return SealedPrefix(seal, seal_file)

    def _check_chain(self, base: int, prev: str | None, seal_file: Path) -> None:
        earlier = self.bases[:bisect.bisect_left(self.bases, base)]
        if not earlier:
            if prev is not None:
                self.emit(str(seal_file), 0, "SEAL_CHAIN_BROKEN",
                          "the session's first segment has a seal whose prev is not null")
            return
        before = seals.seal_path(self.session_dir, earlier[-1])
        skipped = [b for b in sorted(self.sealed) if earlier[-1] < b < base]  # seals of segments now missing
        if skipped and prev == seals.file_sha256(seals.seal_path(self.session_dir, skipped[-1])):
            self.emit(str(seal_file), 0, "SEAL_CHAIN_BROKEN", f"prev is the SHA-256 of "
                      f"{seals.seal_path(self.session_dir, skipped[-1]).name}, whose segment is missing")
        elif earlier[-1] not in self.sealed:
            self.emit(str(seal_file), 0, "SEAL_CHAIN_BROKEN", f"prev names a seal, but {before.name} is missing")
        elif prev != seals.file_sha256(before):
            self.emit(str(seal_file), 0, "SEAL_CHAIN_BROKEN", f"prev is not the SHA-256 of {before.name}: "
                      "that seal, or this one, was changed")

    def end(self, path: Path, base: int | None, prefix: SealedPrefix | None, *, size: int, lines: int) -> None:
        """Compare the measured prefix with its seal; report the active segment's unsealed lines."""
        sealed_bytes = sealed_lines = 0
        if prefix is not None:
            measured, seal = prefix.measured(path.name), prefix.seal
            differences = [f"{key} {measured[key]!r} (the seal says {seal[key]!r})"
                           for key in _MEASURED if measured[key] != seal[key]]
            if prefix.hashed == prefix.length and prefix.length and prefix.last_line is None:
                differences.append(f"byte {prefix.length} of the seal is not a line's end")
            if base != self.last and size != prefix.length:
                differences.append(f"the rolled segment is {size} bytes, its seal covers {prefix.length}")
            if differences:
                self.emit(str(path), 0, "SEAL_MISMATCH",
                          f"no longer matches {prefix.seal_file.name}: " + "; ".join(differences))
            sealed_bytes, sealed_lines = prefix.hashed, prefix.events
        if base is not None and base == self.last and lines > sealed_lines and size > sealed_bytes:
            what = f"lines {sealed_lines + 1}-{lines} are" if lines > sealed_lines + 1 else f"line {lines} is"
            self.emit(str(path), sealed_lines + 1, "UNSEALED_TAIL",
                      f"{what} not sealed yet (bytes {sealed_bytes}-{size} of the active segment)")


def _seal_problem(seal: Any) -> str | None:
    if not isinstance(seal, dict) or set(seal) != set(_SEAL_KEYS):
        return f"a seal is an object with exactly the keys {', '.join(_SEAL_KEYS)}"
    for key, kind in _SEAL_KEYS.items():
        if not isinstance(seal[key], kind) or isinstance(seal[key], bool):
            return f"{key} is {seal[key]!r}"
    if seal["bytes"] < 0:
        return f"bytes is {seal['bytes']}"
    return None
