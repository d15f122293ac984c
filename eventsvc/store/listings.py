"""Listings of run and session summaries: their pages, opaque cursors, and the checks of listing and filter arguments.

A cursor names the position of the last item of a page in the listing's order; it is
base64url text so that callers treat it as opaque, tagged with its listing so that a cursor
of one listing given to another is refused rather than misread.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import ValidationFailed
from ..lifecycle import STATUSES
from ..schemas import ID_RULE, is_valid_id

MAX_LIMIT = 1000
SESSIONS, RUNS, SESSION_RUNS = "s", "r", "sr"
_PARTS = {SESSIONS: 1, RUNS: 2, SESSION_RUNS: 1}


@dataclass(frozen=True)
class SummaryPage:
    """One page of a listing: summaries in the listing's order, and the cursor of the next page (or None)."""

    items: list[dict[str, Any]]
    next_cursor: str | None


def encode(kind: str, *position: int) -> str:
    text = ":".join([kind, *map(str, position)])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(kind: str, cursor: str | None) -> tuple[int, ...] | None:
    """The position a cursor of listing ``kind`` names; None for no cursor; ValidationFailed if malformed."""
    if cursor is None:
        return None
    problem = {"cursor": ["must be a next_cursor returned by this listing"]}
    if not isinstance(cursor, str) or not 0 < len(cursor) <= 200 or not cursor.isascii():
        raise ValidationFailed("malformed cursor", problem)
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise ValidationFailed("malformed cursor", problem) from None
    tag, *parts = text.split(":")
    if tag != kind or len(parts) != _PARTS[kind] or not all(p.isdigit() and len(p) <= 18 for p in parts):
        raise ValidationFailed("malformed cursor", problem)
    if encode(kind, *map(int, parts)) != cursor:  # one spelling per position: no leading zeros, no padding
        raise ValidationFailed("malformed cursor", problem)
    return tuple(int(p) for p in parts)


def page_of(found: list[tuple[Any, dict[str, Any]]], limit: int, kind: str) -> SummaryPage:
    """The page of ``found`` ((position, summary), up to ``limit + 1`` of them): a cursor when there were more."""
    if len(found) <= limit:
        return SummaryPage([summary for _, summary in found], None)
    position = found[limit - 1][0]
    return SummaryPage([summary for _, summary in found[:limit]],
                       encode(kind, *(position if isinstance(position, tuple) else (position,))))


def check_limit(limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed("invalid limit", {"limit": [f"must be an integer from 1 to {MAX_LIMIT}"]})


def check_statuses(statuses: Iterable[str] | str | None) -> list[str] | None:
    """The statuses to filter on (None: all); raises ValidationFailed for an unknown or empty set."""
    if statuses is None:
        return None
    wanted = [statuses] if isinstance(statuses, str) else list(statuses)
    unknown = [s for s in wanted if s not in STATUSES]
    if unknown or not wanted:
        named = f"unknown run status {', '.join(repr(str(s)[:64]) for s in unknown)}" if unknown else "no run status"
        rule = f"must be a comma-separated subset of {', '.join(STATUSES)}"
        raise ValidationFailed(f"{named}: {rule}", {"status": [rule + (f"; {named}" if unknown else "")]})
    return wanted


def check_types(types: Iterable[str] | str | None, registry: Container[str]) -> list[str] | None:
    """A type filter as a list (None: no filter); raises ValidationFailed for an unregistered or empty one."""
    if types is None:
        return None
    wanted = list(dict.fromkeys([types] if isinstance(types, str) else types))
    unknown = [name for name in wanted if not isinstance(name, str) or name not in registry]
    if unknown or not wanted:
        raise ValidationFailed("unknown event type", {"types": [
            "must name registered event types (GET /api/event-types)"
            + (f"; unknown: {', '.join(repr(str(name)[:64]) for name in unknown)}" if unknown else "")]})
    return wanted


def check_id(name: str, value: str) -> None:
    if not is_valid_id(value):
        raise ValidationFailed(f"invalid {name}", {name: [ID_RULE]})
