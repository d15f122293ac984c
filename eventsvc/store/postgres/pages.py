"""The read statements of the PostgreSQL backend: pages, type-filtered pages, lookups.

A type-filtered page looks at no more than ``rules.TYPE_FILTER_WINDOW`` of the session's (or run's)
rows past ``since_seq``, as the files backend does, and says how far it looked; envelopes are
fetched for the matches only.
"""
from __future__ import annotations

from collections.abc import Sequence

import psycopg

from .. import Page
from .. import rules

PAGE = "SELECT seq, envelope FROM event WHERE session_id = %s AND seq > %s ORDER BY seq LIMIT %s"
RUN_PAGE = ("SELECT seq, envelope FROM event WHERE session_id = %s AND run_id = %s AND seq > %s "
            "ORDER BY seq LIMIT %s")
# One round trip: the run's owner, and the page of its events (no row at all for an unknown run).
RUN_PAGE_BY_ID = """
SELECT r.session_id, e.seq, e.envelope FROM run r
LEFT JOIN LATERAL (SELECT seq, envelope FROM event
                   WHERE session_id = r.session_id AND run_id = r.run_id AND seq > %s
                   ORDER BY seq LIMIT %s) e ON true
WHERE r.run_id = %s ORDER BY e.seq
"""
_FILTERED = """
WITH w AS MATERIALIZED (
    SELECT seq, type FROM event WHERE session_id = %(session)s {run} AND seq > %(since)s ORDER BY seq LIMIT %(window)s
)
SELECT s.last_seen, s.seen, m.seq, m.envelope
FROM (SELECT max(seq) AS last_seen, count(*) AS seen FROM w) s
LEFT JOIN LATERAL (
    SELECT e.seq, e.envelope FROM w JOIN event e ON e.session_id = %(session)s AND e.seq = w.seq
    WHERE w.type = ANY(%(types)s) ORDER BY w.seq LIMIT %(limit)s
) m ON true
ORDER BY m.seq
"""


def page_of(session_id: str, rows: list[tuple[int, str]], limit: int, since_seq: int) -> Page:
    """A page from up to ``limit + 1`` rows (seq, envelope text)."""
    kept = rows[:limit]
    seqs = [seq for seq, _ in kept]
    return Page(session_id, [text.encode("utf-8") for _, text in kept], seqs, len(rows) > limit,
                seqs[-1] if seqs else since_seq)


def filtered_page(conn: psycopg.Connection, session_id: str, run_id: str | None, types: Sequence[str], *,
                  since_seq: int, limit: int, window: int | None = None) -> Page:
    """Up to ``limit`` events of ``types`` among the next ``window`` rows; ``next_since_seq`` says how far it looked."""
    window = window or rules.TYPE_FILTER_WINDOW  # read at each call, as the files backend does
    sql = _FILTERED.format(run="AND run_id = %(run)s" if run_id is not None else "")
    rows = conn.execute(sql, {"session": session_id, "run": run_id, "since": since_seq, "window": window,
                              "types": list(types), "limit": limit + 1}).fetchall()
    last_seen, seen = rows[0][0], rows[0][1]
    matches = [(seq, text) for _, _, seq, text in rows if seq is not None]
    if len(matches) > limit:
        matches = matches[:limit]
        return Page(session_id, [text.encode("utf-8") for _, text in matches], [seq for seq, _ in matches],
                    True, matches[-1][0])
    return Page(session_id, [text.encode("utf-8") for _, text in matches], [seq for seq, _ in matches],
                seen >= window, last_seen if seen else since_seq)
