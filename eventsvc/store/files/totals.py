"""How much the store holds (sessions, events, bytes), without scanning the log on each ask.

Seqs are contiguous from 1, so a session's event count is its ``last_seq``, and the bytes of
its active segment are its ``end_offset``: both are in the index's session table, read in one
statement. Sealed segments never change, so their sizes are measured once (a directory
listing for the rare session that has rolled past its first segment) and remembered.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from . import segments
from .index import Index

_TOTALS_SQL = ("SELECT count(*), coalesce(sum(last_seq), 0), coalesce(sum(end_offset), 0) FROM session")
_ROLLED_SQL = "SELECT session_id, segment FROM session WHERE segment > 1"


@dataclass(frozen=True)
class StoreTotals:
    sessions: int
    events: int
    log_bytes: int  # every segment's bytes as the index knows them (sealed ones as on disk)
    index_bytes: int  # the SQLite index with its write-ahead log


class TotalsReader:
    """Remembers the sealed bytes of each rolled session, keyed by its active segment."""

    def __init__(self, segments_dir: str) -> None:
        self._segments_dir = segments_dir
        self._sealed: dict[str, tuple[int, int]] = {}  # session -> (active segment, bytes before it)
        self._lock = threading.Lock()

    def read(self, index: Index) -> StoreTotals:
        sessions, events, active_bytes = index.db.execute_sql(_TOTALS_SQL).fetchone()
        sealed = sum(self._sealed_bytes(session_id, segment)
                     for session_id, segment in index.db.execute_sql(_ROLLED_SQL))
        index_bytes = sum(segments.file_size(f"{index.path}{suffix}") for suffix in ("", "-wal"))
        return StoreTotals(sessions, events, active_bytes + sealed, index_bytes)

    def _sealed_bytes(self, session_id: str, active: int) -> int:
        with self._lock:
            known = self._sealed.get(session_id)
        if known is not None and known[0] == active:
            return known[1]
        folder = os.path.join(self._segments_dir, session_id)
        size = sum(segments.file_size(os.path.join(folder, segments.segment_name(base)))
                   for base in segments.list_bases(folder) if base < active)
        with self._lock:
            self._sealed[session_id] = (active, size)
        return size
