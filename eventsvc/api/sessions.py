"""``/api/sessions``: session summaries, a session's runs, and its events (append and the aggregated read)."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ..errors import SessionNotFound, ValidationFailed
from ..live import long_poll, resolve
from . import store
from .metrics import count_appended, long_polling
from .slots import slots
from .wire import json_body, listing_query, page_query, page_response

bp = Blueprint("sessions", __name__, url_prefix="/api/sessions")
MAX_BATCH = 1000


@bp.post("/<session_id>/events")
def append_events(session_id: str):
    body = json_body(request)
    if isinstance(body, dict):
        result = store().append_one(session_id, body)
        count_appended(result)
        if result.created:
            return Response(result.lines[0], status=201, mimetype="application/json")
        return jsonify(result.events[0]), 200
    if isinstance(body, list):
        if not 1 <= len(body) <= MAX_BATCH:
            raise ValidationFailed(f"a batch holds 1 to {MAX_BATCH} events, not {len(body)}",
                                   {"_batch": [f"must hold 1 to {MAX_BATCH} events"]})
        result = store().append_batch(session_id, body)
        count_appended(result)
        return jsonify(events=result.events), 201 if result.created else 200
    raise ValidationFailed("the body must be one event object or an array of events",
                           {"_body": ["must be a JSON object or array"]})


@bp.get("/<session_id>/events")
def session_events(session_id: str):
    query = page_query(request)
    event_store = store()
    types = event_store.check_types(query.get("types"))  # a 422 before any wait
    if not query["wait"]:
        page = event_store.read_page(session_id, since_seq=query["since_seq"], limit=query["limit"], types=types)
        return page_response(page, query["since_seq"])
    with slots().held(), long_polling():  # holds a thread like a stream: 503 too_many_streams past the cap
        resolve(event_store, session_id=session_id, run_id=None, wait=query["wait"])
        page = long_poll(event_store, session_id, run_id=None, since_seq=query["since_seq"],
                         limit=query["limit"], wait=query["wait"], types=types)
    return page_response(page, query["since_seq"])


@bp.get("")
def list_sessions():
    query = listing_query(request)
    page = store().list_sessions(query["limit"], query["cursor"])
    return jsonify(sessions=page.items, next_cursor=page.next_cursor)


@bp.get("/<session_id>")
def session_summary(session_id: str):
    summary = store().get_session(session_id)
    if summary is None:
        raise SessionNotFound(f"session {session_id!r} not found")
    return jsonify(summary)


@bp.get("/<session_id>/runs")
def session_runs(session_id: str):
    query = listing_query(request)
    page = store().list_session_runs(session_id, limit=query["limit"], cursor=query["cursor"])
    return jsonify(session_id=session_id, runs=page.items, next_cursor=page.next_cursor)
