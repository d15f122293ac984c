"""``/api/runs``: run summaries (one, or a filtered listing) and one run's events."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..errors import RunNotFound
from ..live import long_poll, resolve
from . import store
from .metrics import long_polling
from .slots import slots
from .wire import listing_query, page_query, page_response

bp = Blueprint("runs", __name__, url_prefix="/api/runs")


@bp.get("")
def list_runs():
    query = listing_query(request, runs=True)
    page = store().list_runs(session_id=query["session_id"], statuses=query["status"], limit=query["limit"],
                             cursor=query["cursor"])
    return jsonify(runs=page.items, next_cursor=page.next_cursor)


@bp.get("/<run_id>")
def run_summary(run_id: str):
    summary = store().get_run(run_id)
    if summary is None:
        raise RunNotFound(f"run {run_id!r} not found")
    return jsonify(summary)


@bp.get("/<run_id>/events")
def run_events(run_id: str):
    query = page_query(request)
    event_store = store()
    types = event_store.check_types(query.get("types"))  # a 422 before any wait
    if not query["wait"]:
        page = event_store.read_run_page(run_id, since_seq=query["since_seq"], limit=query["limit"], types=types)
    else:
        with slots().held(), long_polling():  # holds a thread like a stream: 503 too_many_streams past the cap
            session_id = resolve(event_store, session_id=None, run_id=run_id, wait=query["wait"])
            page = long_poll(event_store, session_id, run_id=run_id, since_seq=query["since_seq"],
                             limit=query["limit"], wait=query["wait"], types=types)
    return page_response(page, query["since_seq"], run_id=run_id)
