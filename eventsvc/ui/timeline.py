"""The run timeline: where each phase band and event mark goes, in SVG user units.

Time runs left to right over the run's events (by seq when they all share one instant).
The template draws what this computes; nothing here knows about HTML.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .present import duration, exact_time, moment
from ..lifecycle import STATUS_BY_TYPE, TERMINAL_STATUSES

WIDTH, HEIGHT = 1000, 104
LEFT, RIGHT = 8, 992
BAND_Y, BAND_HEIGHT = 4, 24
MARK_WIDTH, MARK_HEIGHT = 6, 18
LANE_Y = {"lifecycle": BAND_Y, "tool": 36, "policy": 60, "verify": 84}
MARK_KIND = {
    "tool_call": ("tool", "tool-call"),
    "tool_result": ("tool", "tool-result"),
    "tool_policy_blocked": ("policy", "policy-blocked"),
    "tool_policy_warn": ("policy", "policy-warn"),
    "verify_start": ("verify", "verify-start"),
    "verify_pass": ("verify", "verify-pass"),
    "verify_fail": ("verify", "verify-fail"),
}
BANDED_PHASES = frozenset({"created", "running", "waiting_input"})


@dataclass(frozen=True)
class Band:
    phase: str
    x: float
    width: float
    title: str


@dataclass(frozen=True)
class Mark:
    seq: int
    type: str
    kind: str
    x: float
    y: float
    width: float
    height: float
    title: str
    href: str


@dataclass(frozen=True)
class Timeline:
    bands: list[Band]
    marks: list[Mark]
    start: str | None
    end: str | None
    event_count: int
    width: int = WIDTH
    height: int = HEIGHT


def draw(events: list[dict[str, Any]], *, href_for: Callable[[int], str]) -> Timeline:
    """Bands for created / running / waiting for input, marks for tools, policy, verify and lifecycle."""
    if not events:
        return Timeline([], [], None, None, 0)
    xs = _positions(events)
    bands: list[Band] = []
    marks: list[Mark] = []
    phase: tuple[str, float, str] | None = None  # (phase, x, timestamp) of the open band
    ended = False
    for event, x in zip(events, xs):
        event_type, timestamp = event["type"], event["timestamp"]
        status = STATUS_BY_TYPE.get(event_type)
        if status is not None and not ended:
            if phase is not None:
                bands.append(_band(phase, x, timestamp))
                phase = None
            if status in BANDED_PHASES:
                phase = (status, x, timestamp)
            ended = status in TERMINAL_STATUSES
            marks.append(_mark(event, x, "lifecycle", f"lifecycle lifecycle-{status}", href_for, thin=True))
        elif event_type in MARK_KIND:
            lane, kind = MARK_KIND[event_type]
            marks.append(_mark(event, x, lane, kind, href_for))
    if phase is not None:
        bands.append(_band(phase, xs[-1], events[-1]["timestamp"]))
    return Timeline(bands, marks, events[0]["timestamp"], events[-1]["timestamp"], len(events))


def _positions(events: list[dict[str, Any]]) -> list[float]:
    moments = [moment(event["timestamp"]) for event in events]
    known = [when for when in moments if when is not None]
    span = (max(known) - min(known)).total_seconds() if known else 0.0
    if span <= 0:
        step = (RIGHT - LEFT) / max(1, len(events) - 1)
        return [LEFT + i * step if len(events) > 1 else (LEFT + RIGHT) / 2 for i in range(len(events))]
    first = min(known)
    positions, previous = [], float(LEFT)
    for when in moments:
        # An unreadable time stays where the previous event was.
        previous = LEFT + (RIGHT - LEFT) * (when - first).total_seconds() / span if when else previous
        positions.append(round(previous, 2))
    return positions


def _band(phase: tuple[str, float, str], end_x: float, end_timestamp: str) -> Band:
    name, x, start_timestamp = phase
    label = name.replace("_", " ")
    title = (f"{label}: {exact_time(start_timestamp)} → {exact_time(end_timestamp)} "
             f"({duration(start_timestamp, end_timestamp)})")
    return Band(name, x, round(max(end_x - x, 2.0), 2), title)


def _mark(event: dict[str, Any], x: float, lane: str, kind: str, href_for: Callable[[int], str], *,
          thin: bool = False) -> Mark:
    width = 2.0 if thin else float(MARK_WIDTH)
    height = float(BAND_HEIGHT if thin else MARK_HEIGHT)
    left = min(max(x - width / 2, 0.0), WIDTH - width)
    title = f"seq {event['seq']} · {event['type']} · {exact_time(event['timestamp'])}"
    return Mark(event["seq"], event["type"], kind, round(left, 2), LANE_Y[lane], width, height, title,
                href_for(event["seq"]))
