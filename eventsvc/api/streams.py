"""Server-Sent Events: ``/api/sessions/<id>/events/stream`` and ``/api/runs/<id>/events/stream``.

Each event is one SSE message (``id: <seq>``, ``event: <type>``, ``data: <envelope>``), so a
client that reconnects with ``Last-Event-ID`` resumes exactly after the last event it saw.
"""
from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, current_app, request

from ..errors import NotFound
from ..live import Delivery, End, KeepAlive, resolve, subscribe
from ..store.base import Store
from . import store
from .slots import Held, slots
from .wire import stream_query

bp = Blueprint("streams", __name__, url_prefix="/api")
RETRY_MS = 2000


@bp.get("/sessions/<session_id>/events/stream")
def session_stream(session_id: str):
    return _stream(session_id=session_id, run_id=None)


@bp.get("/runs/<run_id>/events/stream")
def run_stream(run_id: str):
    return _stream(session_id=None, run_id=run_id)


def _stream(*, session_id: str | None, run_id: str | None) -> Response:
    query = stream_query(request)
    keepalive = float(current_app.config["SSE_KEEPALIVE"])
    event_store = store()
    query["types"] = event_store.check_types(query["types"])  # a 422 before the stream starts
    # Unknown session or run: a JSON 404 before any stream starts, unless asked to wait for it.
    resolved = None if query["wait"] else resolve(event_store, session_id=session_id, run_id=run_id, wait=0)
    slot = slots()
    slot.take()  # 503 too_many_streams when this worker is at its cap
    body = Held(slot, _frames(event_store, resolved, session_id, run_id, query, keepalive))
    response = Response(iter(body), status=200, mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    response.call_on_close(body.release)  # also when the body is never iterated (HEAD)
    return response


def _frames(event_store: Store, session_id: str | None, requested_session: str | None,
            run_id: str | None, query: dict, keepalive: float) -> Iterator[bytes]:
    yield b"retry: %d\n\n" % RETRY_MS
    while session_id is None:
        try:
            session_id = resolve(event_store, session_id=requested_session, run_id=run_id, wait=keepalive)
        except NotFound:
            yield b": keepalive\n\n"
    for item in subscribe(event_store, session_id, run_id=run_id, since_seq=query["since_seq"],
                          until_seq=query["until_seq"], keepalive=keepalive, types=query["types"]):
        if isinstance(item, Delivery):
            yield b"id: %d\nevent: %s\ndata: %s\n\n" % (item.seq, item.type.encode(), item.line)
        elif isinstance(item, KeepAlive):
            yield b": keepalive\n\n"
        elif isinstance(item, End):
            data = b'{"reason":"%s","last_seq":%d}' % (item.reason.encode(), item.last_seq)
            yield b"event: end\ndata: %s\n\n" % data
