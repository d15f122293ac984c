"""The console's pages: sessions, one session, one run (with its timeline), and the run's live header.

Each view reads through ``data`` and renders a template; Jinja escapes every value.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, abort, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from ..api import store
from ..errors import NotFound
from ..lifecycle import TERMINAL_STATUSES
from . import data
from .access import sign_in_redirect, signed_in, tokens
from .errorpages import html_error
from .present import EventRow, duration, event_rows, exact_time, relative_time
from .timeline import Timeline, draw

bp = Blueprint("ui", __name__, template_folder="templates", static_folder="static", static_url_path="/ui/static")
bp.register_error_handler(HTTPException, html_error)
bp.register_error_handler(NotFound, html_error)
SESSIONS_PER_PAGE = 25
EVENTS_PER_PAGE = 200
RUNS_SHOWN = 500  # a session page lists its first runs; each run's own page has the rest
TIMELINE_EVENTS = 10_000  # a run longer than this draws its first events only


@bp.before_request
def require_sign_in() -> Response | None:
    if request.endpoint == "ui.static" or signed_in():
        return None
    return sign_in_redirect()


@bp.context_processor
def page_context() -> dict[str, Any]:
    return {"show_sign_out": bool(tokens()), "exact_time": exact_time, "relative_time": relative_time,
            "duration": duration, "now": datetime.now(timezone.utc)}


@bp.get("/ui/")
def sessions():
    cursor = request.args.get("cursor")
    summaries, next_cursor = data.list_sessions(store(), limit=SESSIONS_PER_PAGE, cursor=cursor)
    return render_template("ui/sessions.html", sessions=summaries, next_cursor=next_cursor, first_page=not cursor)


@bp.get("/ui/sessions/<session_id>")
def session(session_id: str):
    event_store = store()
    summary = data.get_session(event_store, session_id)
    if summary is None:
        abort(404, f"No session {session_id!r} is stored here.")
    page_count = max(1, math.ceil(summary["last_seq"] / EVENTS_PER_PAGE))
    page_number = _number_arg("page", default=1, highest=page_count)
    page = data.session_page(event_store, session_id, since_seq=(page_number - 1) * EVENTS_PER_PAGE,
                             limit=EVENTS_PER_PAGE)
    rows = event_rows(page.events, event_store.event_types)
    live = page_number == page_count
    runs = data.list_session_runs(event_store, session_id, limit=RUNS_SHOWN)
    return render_template("ui/session.html", session=summary, runs=runs,
                           rows=rows, page_number=page_number, page_count=page_count, live=live,
                           last_seq=rows[-1].seq if rows else 0, **_live_context(rows))


@bp.get("/ui/runs/<run_id>")
def run(run_id: str):
    event_store = store()
    summary = data.get_run(event_store, run_id)
    if summary is None:
        abort(404, f"No run {run_id!r} is stored here.")
    since_seq = _number_arg("since_seq", default=0, highest=summary["last_seq"] or 0, lowest=0)
    page = data.run_page(event_store, run_id, since_seq=since_seq, limit=EVENTS_PER_PAGE)
    rows = event_rows(page.events, event_store.event_types)
    live = not page.has_more and summary["status"] not in TERMINAL_STATUSES
    shown = {row.seq for row in rows}
    return render_template("ui/run.html", run=summary, rows=rows, since_seq=since_seq, has_more=page.has_more,
                           live=live, last_seq=rows[-1].seq if rows else since_seq,
                           timeline=_timeline(run_id, lambda seq: seq in shown or (live and seq > since_seq)),
                           **_live_context(rows))


@bp.get("/ui/runs/<run_id>/live")
def run_live(run_id: str):
    """The run's header and timeline, redrawn for a live page (its events start after ``since_seq``)."""
    summary = data.get_run(store(), run_id)
    if summary is None:
        abort(404, f"No run {run_id!r} is stored here.")
    since_seq = _number_arg("since_seq", default=0, highest=summary["last_seq"] or 0, lowest=0)
    return render_template("ui/_run_live.html", run=summary,
                           timeline=_timeline(run_id, lambda seq: seq > since_seq))


@bp.route("/ui/<path:unknown>")
def unknown_page(unknown: str):
    abort(404, "There is no such page in the console.")


def _timeline(run_id: str, on_page: Callable[[int], bool]) -> Timeline:
    def href_for(seq: int) -> str:
        if on_page(seq):
            return f"#ev-{seq}"
        return url_for("ui.run", run_id=run_id, since_seq=seq - 1) + f"#ev-{seq}"

    return draw(list(data.run_events(store(), run_id, cap=TIMELINE_EVENTS)), href_for=href_for)


def _live_context(rows: list[EventRow]) -> dict[str, Any]:
    """What the page's script needs to follow the stream, and the types its filter starts with."""
    registry = store().event_types
    return {"event_types": list(registry), "categories": {name: t.category for name, t in registry.items()},
            "filter_types": sorted({(row.type, row.category) for row in rows})}


def _number_arg(name: str, *, default: int, highest: int, lowest: int = 1) -> int:
    """A whole-number query argument within bounds; anything else is a 404 page, not a guess."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18) or not lowest <= int(raw) <= max(highest, lowest):
        abort(404, f"There is no page with {name}={raw!r} here.")
    return int(raw)
