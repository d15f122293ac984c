"""Values as the pages show them: event rows, times, durations. Pure functions, no Flask."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..schemas import parse_timestamp
from ..types import EventTypeSet

PREVIEW_CHARS = 140
PRETTY_CHARS = 64 * 1024


@dataclass(frozen=True)
class EventRow:
    seq: int
    timestamp: str
    time: str  # the exact time, shorter
    type: str
    category: str
    run_id: str | None
    source: str
    event_id: str
    preview: str
    pretty: str


def event_rows(events: list[dict[str, Any]], event_types: EventTypeSet) -> list[EventRow]:
    rows = []
    for event in events:
        payload = event.get("payload") or {}
        compact = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        preview = compact if len(compact) <= PREVIEW_CHARS else compact[:PREVIEW_CHARS - 1] + "…"
        pretty = json.dumps(payload, ensure_ascii=False, indent=2) if payload else "{}"
        if len(pretty) > PRETTY_CHARS:
            pretty = pretty[:PRETTY_CHARS] + "\n… (cut here: the whole event is at the JSON API)"
        event_type = event["type"]
        known = event_types.get(event_type)
        rows.append(EventRow(event["seq"], event["timestamp"], exact_time(event["timestamp"]), event_type,
                             known.category if known else "extra", event.get("run_id"), event["source"],
                             event["event_id"], preview, pretty))
    return rows


def moment(timestamp: str | None) -> datetime | None:
    if not timestamp:
        return None
    try:
        return parse_timestamp(timestamp)
    except ValueError:
        return None


def exact_time(timestamp: str | None) -> str:
    """``2026-12-03 08:40:01.123 UTC``: milliseconds, no more."""
    if timestamp and len(timestamp) >= 20 and timestamp[10] == "T" and timestamp[-1] == "Z" and timestamp.isascii():
        # The store keeps one form (UTC, 'Z', fraction without trailing zeros): cut, don't parse.
        fraction = timestamp[20:-1]
        return (f"{timestamp[:10]} {timestamp[11:19]}" + (f".{fraction[:3]:0<3}" if fraction else "")) + " UTC"
    when = moment(timestamp)
    if when is None:
        return "—"
    text = f"{when:%Y-%m-%d %H:%M:%S}"
    if when.microsecond:
        text += f".{when.microsecond // 1000:03d}"
    return text + " UTC"


def relative_time(timestamp: str | None, now: datetime | None = None) -> str:
    """``3 min ago``, ``in 2 h`` (a client's clock may run ahead), ``just now``."""
    when = moment(timestamp)
    if when is None:
        return "—"
    seconds = ((now or datetime.now(timezone.utc)) - when).total_seconds()
    span = abs(seconds)
    if span < 5:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if span >= size:
            amount = f"{int(span // size)} {unit}"
            return f"{amount} ago" if seconds > 0 else f"in {amount}"
    return "just now"


def duration(start: str | None, end: str | None) -> str:
    """``1 h 02 min``, ``4.2 s``, ``350 ms``; ``—`` when either end is unknown."""
    first, last = moment(start), moment(end)
    if first is None or last is None:
        return "—"
    seconds = (last - first).total_seconds()
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{sign}{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{sign}{seconds:.1f} s"
    if seconds < 3600:
        return f"{sign}{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{sign}{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
