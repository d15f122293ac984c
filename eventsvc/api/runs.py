"""``/api/runs/<run_id>/events``: one run's events, with their session-level seqs."""
from __future__ import annotations

from flask import Blueprint, request

from ..live import long_poll, resolve
from . import store
from .slots import slots
from .wire import page_query, page_response

bp = Blueprint("runs", __name__, url_prefix="/api/runs")


@bp.get("/<run_id>/events")
def run_events(run_id: str):
    query = page_query(request)
    event_store = store()
    if not query["wait"]:
        page = event_store.read_run_page(run_id, since_seq=query["since_seq"], limit=query["limit"])
    else:
        slot = slots()
        slot.take()  # a long-poll holds a thread like a stream: 503 too_many_streams past the cap
        try:
            session_id = resolve(event_store, session_id=None, run_id=run_id, wait=query["wait"])
            page = long_poll(event_store, session_id, run_id=run_id, since_seq=query["since_seq"],
                             limit=query["limit"], wait=query["wait"])
        finally:
            slot.give_back()
    return page_response(page, query["since_seq"], run_id=run_id)
