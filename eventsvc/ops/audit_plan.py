"""What an audit reads: PATHs resolved into session units, every folder entry looked at once.

A folder may come from elsewhere, so each entry is seen with ``lstat`` and never followed: a
segment, seal or kept torn line must be a regular file, a session a real folder, the index and
lock files regular files. Anything else is listed as unexpected (``UNEXPECTED_ENTRY``, an
error): a clean audit means every entry was a regular file it fully checked, or one of the
files the store keeps for itself beside the log (the index, its lock files).
"""
from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .audit_checks import AuditError
from ..schemas import is_valid_id
from ..store.files import segments
from ..store.files.locks import LOCKS_DIR
from ..store.files.seals import SEAL_SUFFIX
from ..store.files.untrusted import kind

_REGULAR = "a regular file"
_DIRECTORY = "a directory"
_SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
# What the store itself keeps beside segments/: the index (and the rebuild's scratch copy), the
# files SQLite keeps beside each, an unusable index moved aside, and the lock files.
_STORE_FILES = re.compile(r"index\.sqlite3(\.new)?(-wal|-shm|-journal)?(\.corrupt-[0-9]{8}T[0-9]{6})?\Z", re.ASCII)
_TORN = re.compile(r"([0-9]{20}\.jsonl)" + re.escape(segments.TORN_SUFFIX) + r"[0-9]{1,20}(\.[0-9]{1,9})?\Z",
                   re.ASCII)


def seal_base(name: str) -> int | None:
    """The base seq of a seal file name (``<20 ASCII digits>.seal.json``), or None."""
    if not name.endswith(SEAL_SUFFIX):
        return None
    return segments.parse_base(name[: -len(SEAL_SUFFIX)] + segments.SEGMENT_SUFFIX)


@dataclass
class SessionUnit:
    """One session folder and which of its segment files to read."""

    session_dir: Path
    files: list[Path]  # segments in base order, then misnamed .jsonl files by name
    whole: bool  # every segment of the folder: seqs are checked from 1 and run lifecycles too
    data_dir: Path | None  # the data folder holding it, for the index check
    bases: list[int] = field(default_factory=list)  # every segment of the folder that is a regular file
    seal_bases: set[int] = field(default_factory=set)  # every seal of the folder that is a regular file
    torn: list[str] = field(default_factory=list)  # torn lines recovery kept aside


@dataclass
class AuditPlan:
    units: list[SessionUnit]
    data_dirs: list[Path]  # data folders audited whole: the index may not know other sessions
    unexpected: list[tuple[Path, str]] = field(default_factory=list)  # entries not checked, and why

    @property
    def segment_count(self) -> int:
        return sum(len(unit.files) for unit in self.units)

    @property
    def byte_count(self) -> int:
        """What the audit will read, for progress (sizes as listed; a growing file may add more)."""
        return sum(segments.file_size(path) for unit in self.units for path in unit.files)


@dataclass
class _Listing:
    files: list[Path] = field(default_factory=list)
    bases: list[int] = field(default_factory=list)
    seal_bases: set[int] = field(default_factory=set)
    torn: list[str] = field(default_factory=list)


def _what(path: Path) -> str:
    return kind(os.lstat(path).st_mode)


def _list_session(session_dir: Path, unexpected: list[tuple[Path, str]]) -> _Listing:
    listing = _Listing()
    for name in sorted(os.listdir(session_dir)):
        path = session_dir / name
        what = _what(path)
        if what != _REGULAR:
            unexpected.append((path, f"{what} in a session folder, where the store keeps only regular files: "
                                     "not followed, not read"))
            continue
        base = segments.parse_base(name)
        if base is not None:
            listing.bases.append(base)
        elif name.endswith(segments.SEGMENT_SUFFIX):
            pass  # a misnamed segment: read, and reported as SEGMENT_NAME_MISMATCH
        elif seal_base(name) is not None:
            listing.seal_bases.add(seal_base(name))  # type: ignore[arg-type]
            continue
        elif _TORN.match(name):
            listing.torn.append(name)
            continue
        else:
            unexpected.append((path, "a file the store never writes in a session folder: not checked"))
            continue
        listing.files.append(path)
    listing.bases.sort()
    listing.files.sort(key=_file_order)
    return listing


def _file_order(path: Path) -> tuple[int, int, str]:
    base = segments.parse_base(path.name)
    return (0, base, "") if base is not None else (1, 0, path.name)


def _unit(session_dir: Path, unexpected: list[tuple[Path, str]]) -> SessionUnit:
    listing = _list_session(session_dir, unexpected)
    return SessionUnit(session_dir, listing.files, True, _data_dir_of(session_dir), listing.bases,
                       listing.seal_bases, listing.torn)


def _data_dir_of(session_dir: Path) -> Path | None:
    return session_dir.parent.parent if session_dir.parent.name == segments.SEGMENTS_DIR else None


def _store_entries(data_dir: Path, unexpected: list[tuple[Path, str]]) -> Path | None:
    """Check the data folder's own entries; returns its segments/ folder if that is a real folder."""
    root = None
    for name in sorted(os.listdir(data_dir)):
        path = data_dir / name
        what = _what(path)
        if name == segments.SEGMENTS_DIR:
            if what == _DIRECTORY:
                root = path
            else:
                unexpected.append((path, f"{what} where the segments folder is expected: not followed"))
        elif name == LOCKS_DIR and what == _DIRECTORY:
            for lock in sorted(os.listdir(path)):
                if _what(path / lock) != _REGULAR:
                    unexpected.append((path / lock, f"{_what(path / lock)} where a lock file is expected"))
        elif name == LOCKS_DIR:
            unexpected.append((path, f"{what} where the store keeps its lock folder: not followed"))
        elif _STORE_FILES.match(name):
            if what != _REGULAR:
                unexpected.append((path, f"{what} where the store keeps a regular file: not followed, not read"))
        else:
            unexpected.append((path, f"{what} the store never writes in a data folder: not checked"))
    return root


def _sessions_of(root: Path, unexpected: list[tuple[Path, str]]) -> list[Path]:
    sessions = []
    for name in sorted(os.listdir(root)):
        path = root / name
        what = _what(path)
        if what == _DIRECTORY and is_valid_id(name):
            sessions.append(path)
        elif what == _DIRECTORY:
            unexpected.append((path, "a folder whose name is not a session id: not read"))
        else:
            unexpected.append((path, f"{what} where session folders are expected: not followed, not read"))
    return sessions


def _looks_like_session(names: list[str]) -> bool:
    return any(segments.SEGMENT_SUFFIX in name or name.endswith(SEAL_SUFFIX) for name in names)


def plan_audit(paths: Sequence[Path]) -> AuditPlan:
    """Resolve PATHs (data folders, session folders, ``.jsonl`` files) into session units.

    Raises FileNotFoundError for a missing PATH and AuditError for one of another kind. The
    PATHs themselves are the caller's choice and may be links; nothing below them is followed.
    A session folder named twice, or inside a data folder also named, is read once.
    """
    units: dict[Path, SessionUnit] = {}
    data_dirs: list[Path] = []
    unexpected: list[tuple[Path, str]] = []
    for path in paths:
        if not os.path.lexists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        mode = os.stat(path).st_mode if os.path.exists(path) else os.lstat(path).st_mode
        if stat.S_ISDIR(mode):
            for session_dir in _session_dirs(path, data_dirs, unexpected):
                if session_dir.resolve() not in units:
                    units[session_dir.resolve()] = _unit(session_dir, unexpected)
        elif path.name.endswith(segments.SEGMENT_SUFFIX):
            if not stat.S_ISREG(mode):
                unexpected.append((path, f"{kind(mode)}, not a segment file: not read"))
                continue
            unit = units.setdefault(path.parent.resolve(),
                                    SessionUnit(path.parent, [], False, _data_dir_of(path.parent)))
            if not unit.whole and path not in unit.files:
                unit.files.append(path)
        else:
            raise AuditError(f"{path}: not a data folder, a session folder or a .jsonl segment file")
    for unit in units.values():
        if not unit.whole:
            listing = _list_session(unit.session_dir, [])  # only the named files are audited: no findings
            unit.files.sort(key=_file_order)
            unit.bases, unit.seal_bases, unit.torn = listing.bases, listing.seal_bases, listing.torn
            unit.whole = {p.name for p in unit.files} == {p.name for p in listing.files}
    return AuditPlan(list(units.values()), data_dirs, unexpected)


def _session_dirs(path: Path, data_dirs: list[Path], unexpected: list[tuple[Path, str]]) -> list[Path]:
    names = os.listdir(path)
    if segments.SEGMENTS_DIR in names:
        root = _store_entries(path, unexpected)
        data_dir = path
    elif _looks_like_session(names):
        return [path]  # a session folder, whatever its name (a session may be called "segments")
    elif path.name == segments.SEGMENTS_DIR:
        root, data_dir = path, path.parent
    else:
        raise AuditError(f"{path}: not a data folder (no segments/ inside) nor a session folder (no segments)")
    if data_dir not in data_dirs:
        data_dirs.append(data_dir)
    return _sessions_of(root, unexpected) if root is not None else []
