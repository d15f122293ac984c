"""The console's pages: sessions, one session, one run (with its timeline), and the run's live header.

Each view reads through ``data`` and renders a template; Jinja escapes every value.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, make_response, redirect, render_template, request, url_for
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
    types = _type_filter(clear_href=url_for("ui.session", session_id=session_id))
    runs = data.list_session_runs(event_store, session_id, limit=RUNS_SHOWN)
    if types is None:
        # Seqs have no gaps, so a page number says where a page starts and how many there are.
        page_count = max(1, math.ceil(summary["last_seq"] / EVENTS_PER_PAGE))
        page_number = _number_arg("page", default=1, highest=page_count)
        since_seq = (page_number - 1) * EVENTS_PER_PAGE
        page = data.session_page(event_store, session_id, since_seq=since_seq, limit=EVENTS_PER_PAGE)
        live = page_number == page_count
    else:
        # Filtered pages start where the previous one stopped looking: a cursor, not a number.
        page_count = page_number = 0
        since_seq = _number_arg("since_seq", default=0, highest=summary["last_seq"], lowest=0)
        page = data.session_page(event_store, session_id, since_seq=since_seq, limit=EVENTS_PER_PAGE, types=types)
        live = not page.has_more
    rows = event_rows(page.events, event_store.event_types)
    return render_template("ui/session.html", session=summary, runs=runs, rows=rows, page_number=page_number,
                           page_count=page_count, live=live, since_seq=since_seq, page=page,
                           last_seq=_resume_after(rows, page, types), **_filter_context(types))


@bp.get("/ui/runs/<run_id>")
def run(run_id: str):
    event_store = store()
    summary = data.get_run(event_store, run_id)
    if summary is None:
        abort(404, f"No run {run_id!r} is stored here.")
    types = _type_filter(clear_href=url_for("ui.run", run_id=run_id))
    since_seq = _number_arg("since_seq", default=0, highest=summary["last_seq"] or 0, lowest=0)
    page = data.run_page(event_store, run_id, since_seq=since_seq, limit=EVENTS_PER_PAGE, types=types)
    rows = event_rows(page.events, event_store.event_types)
    live = not page.has_more and summary["status"] not in TERMINAL_STATUSES
    shown = {row.seq for row in rows}

    def on_page(seq: int, event_type: str) -> bool:
        return seq in shown or (live and seq > since_seq and (types is None or event_type in types))

    return render_template("ui/run.html", run=summary, rows=rows, since_seq=since_seq, page=page, live=live,
                           last_seq=_resume_after(rows, page, types),
                           timeline=_timeline(run_id, on_page, types), **_filter_context(types))


@bp.get("/ui/runs/<run_id>/live")
def run_live(run_id: str):
    """The run's header and timeline, redrawn for a live page (its events start after ``since_seq``)."""
    summary = data.get_run(store(), run_id)
    if summary is None:
        abort(404, f"No run {run_id!r} is stored here.")
    types = _type_filter(clear_href=url_for("ui.run_live", run_id=run_id))
    since_seq = _number_arg("since_seq", default=0, highest=summary["last_seq"] or 0, lowest=0)
    return render_template("ui/_run_live.html", run=summary, timeline=_timeline(
        run_id, lambda seq, event_type: seq > since_seq and (types is None or event_type in types), types))


@bp.route("/ui/<path:unknown>")
def unknown_page(unknown: str):
    abort(404, "There is no such page in the console.")


def _timeline(run_id: str, on_page: Callable[[int, str], bool], types: list[str] | None) -> Timeline:
    """The run's picture; a mark links to its row here, or to the page that starts with it.

    That page keeps the filter when the mark's event passes it, and shows every type otherwise.
    """
    events = list(data.run_events(store(), run_id, cap=TIMELINE_EVENTS))
    type_of = {event["seq"]: event["type"] for event in events}
    kept = ",".join(types) if types else None

    def href_for(seq: int) -> str:
        if on_page(seq, type_of[seq]):
            return f"#ev-{seq}"
        passes = types is not None and type_of[seq] in types
        return url_for("ui.run", run_id=run_id, since_seq=seq - 1, types=kept if passes else None) + f"#ev-{seq}"

    return draw(events, href_for=href_for)


def _type_filter(*, clear_href: str) -> list[str] | None:
    """The page's ``types=`` filter, in registry order; None shows every type.

    The form sends ``types=a&types=b``; that, and any other spelling of a filter (every type
    ticked, names repeated or out of order), is redirected to the one spelling ``types=a,b``, so
    a page's links and its live stream say it the same way; ``types=`` naming nothing shows every
    type. An unregistered name is a 400 page.
    """
    given = request.args.getlist("types")
    if not given:
        return None
    registry = store().event_types
    named = dict.fromkeys(name.strip() for value in given for name in value.split(",") if name.strip())
    unknown = [name for name in named if name not in registry]
    if unknown:
        listed = ", ".join(repr(name[:64]) for name in unknown[:5]) + (" …" if len(unknown) > 5 else "")
        abort(make_response(render_template(
            "ui/error.html", status=400, title="Unknown event type",
            message=f"No event type {listed} is registered here, so nothing can be filtered by it.",
            link=(clear_href, "Show every type")), 400))
    types = [name for name in registry if name in named]
    spelled = ",".join(types) if 0 < len(types) < len(registry) else None
    if given != [spelled]:
        # A path relative to this host, with the other query values as given: never url_for with the
        # query's keys, which would take _external, _anchor or a view argument from the client.
        kept = [(key, value) for key, value in request.args.items(multi=True) if key != "types"]
        query = urlencode(([("types", spelled)] if spelled else []) + kept, safe=",")
        abort(redirect(request.script_root + request.path + ("?" + query if query else "")))
    return types


def _resume_after(rows: list[EventRow], page: data.EventsPage, types: list[str] | None) -> int:
    """The seq a live page follows the stream from: past every event this page looked at."""
    if types is not None and not page.has_more:
        return page.next_since_seq
    return rows[-1].seq if rows else page.next_since_seq


def _filter_context(types: list[str] | None) -> dict[str, Any]:
    """The type filter's boxes (every registered type, by category) and what the page's script needs."""
    registry = store().event_types
    groups: dict[str, list[str]] = {}
    for name, event_type in registry.items():
        groups.setdefault(event_type.category, []).append(name)
    return {"event_types": list(registry), "categories": {name: t.category for name, t in registry.items()},
            "type_groups": list(groups.items()), "types": types, "types_query": ",".join(types) if types else None,
            "per_page": EVENTS_PER_PAGE}


def _number_arg(name: str, *, default: int, highest: int, lowest: int = 1) -> int:
    """A whole-number query argument within bounds; anything else is a 404 page, not a guess."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18) or not lowest <= int(raw) <= max(highest, lowest):
        abort(404, f"There is no page with {name}={raw!r} here.")
    return int(raw)
