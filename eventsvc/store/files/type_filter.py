"""Pages of events of some types only, answered from the index (non-matching lines are never read).

A page looks at no more than ``rules.TYPE_FILTER_WINDOW`` of the session's (or run's) rows past ``since_seq``, so a
filter that matches little cannot turn one request into a scan of the whole log: the page then
says how far it looked (``scanned_to``), and the caller passes that on as its next ``since_seq``.
Run pages read the run index, which carries the type; session pages read the primary key.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from .. import rules

@dataclass(frozen=True)
class FilteredPage:
    locations: list[tuple]  # the matches as (seq, segment, offset, length), in seq order, at most ``limit``
    scanned_to: int  # the page looked at every row with since_seq < seq <= scanned_to
    has_more: bool  # rows past scanned_to exist (or may: the window was full)


def page(conn: sqlite3.Connection, session_id: str, run_id: str | None, types: Sequence[str], *,
         since_seq: int, limit: int, window: int | None = None) -> FilteredPage:
    window = window or rules.TYPE_FILTER_WINDOW  # read at each call, so a test can narrow it
    source = ("event INDEXED BY idx_session_event_run_seq WHERE session_id = ? AND run_id = ?"
              if run_id is not None else "event WHERE session_id = ?")
    keys = (session_id, run_id) if run_id is not None else (session_id,)
    placeholders = ", ".join("?" * len(types))
    sql = (f'WITH w AS MATERIALIZED (SELECT seq, type, segment, "offset", length FROM {source} AND seq > ?'
           " ORDER BY seq LIMIT ?)"
           f' SELECT * FROM (SELECT seq, segment, "offset", length FROM w WHERE type IN ({placeholders})'
           " ORDER BY seq LIMIT ?)"
           " UNION ALL SELECT -1, max(seq), count(*), 0 FROM w")
    rows = conn.execute(sql, (*keys, since_seq, window, *types, limit + 1)).fetchall()
    summary = next(row for row in rows if row[0] == -1)  # seqs start at 1
    rows = [row for row in rows if row[0] != -1]
    _, last_seen, seen, _ = summary
    if len(rows) > limit:
        matches = rows[:limit]
        return FilteredPage(matches, matches[-1][0], True)
    return FilteredPage(rows, last_seen if seen else since_seq, seen >= window)
