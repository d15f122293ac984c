"""What each endpoint takes and answers, for the OpenAPI description (``eventsvc.api.openapi``).

Bodies and query parameters are marshmallow schemas (by component name or class); the status
codes are every one the endpoint can answer, each error with the one error shape.
"""
from __future__ import annotations

from typing import Any

from ..schemas import ListingQuerySchema, PageQuerySchema, RunListingQuerySchema, StreamQuerySchema
from .request_ids import HEADER as REQUEST_ID_HEADER
from .sessions import MAX_BATCH

DOCUMENTED_PREFIXES = ("/api/", "/healthz", "/metrics")


def documented_path(rule: str) -> bool:
    """Whether a Flask route belongs in the description (the console under /ui/ does not)."""
    return rule.startswith(DOCUMENTED_PREFIXES)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_HEADERS = {REQUEST_ID_HEADER: {"description": "the request id (the client's own when it sent a valid one)",
                                "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}}}
_ERRORS = {
    400: "bad_request: an HTTP request the server cannot parse; for a body: malformed JSON, invalid UTF-8, "
         "NaN/Infinity, a repeated key, nesting too deep, or a body shorter than its Content-Length",
    401: "unauthorized: tokens are configured and the request has none or an unknown one",
    403: "forbidden: a read-only token on a write",
    404: "not_found: unknown session or run",
    408: "request_timeout: the request headers (EVENTSVC_HEADER_TIMEOUT) or body (EVENTSVC_BODY_TIMEOUT) "
         "did not arrive in time; nothing was stored",
    409: "seq_conflict, event_id_conflict or run_session_conflict; nothing was written",
    413: "payload_too_large: one event over EVENTSVC_MAX_EVENT_BYTES or a body over EVENTSVC_MAX_REQUEST_BYTES",
    414: "uri_too_long: the request line is over 4094 bytes (answered by gunicorn, in the same shape)",
    415: "unsupported_media_type: the body is not application/json in UTF-8",
    422: "validation_error: envelope or query rules broken; details maps field (or batch index) to messages",
    431: "request_header_fields_too_large: a header field over 8190 bytes, or over 100 fields",
    500: "internal_error: an unexpected fault; the server log has the details (find it by request id)",
    503: "storage_unavailable or store_busy (the disk failed, or a lock is held by an operator's tool); on any "
         "route, too_many_connections (this worker holds EVENTSVC_MAX_CONNECTIONS connections)",
    507: "insufficient_storage: the disk is full; nothing was written",
}
_STREAM_503 = (" or too_many_streams (this worker serves as many streams and long-polls as it may; "
               "retry after Retry-After seconds)")


def _answer(description: str, content: dict[str, Any] | None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "headers": dict(_HEADERS)}
    if content is not None:
        answer["content"] = content
    return answer


def _json(schema: Any) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


# Any request can be refused before it reaches a route: gunicorn parses it first.
_HTTP_LAYER = (400, 408, 414, 431, 500, 503)


def _errors(*statuses: int, streams: bool = False) -> dict[str, Any]:
    answers = {}
    for status in sorted({*statuses, *_HTTP_LAYER}):
        description = _ERRORS[status] + (_STREAM_503 if status == 503 and streams else "")
        answer = _answer(description, _json(_ref("Error")))
        if status == 401:
            answer["headers"]["WWW-Authenticate"] = {"schema": {"type": "string"}}
        if status == 503 and streams:
            answer["headers"]["Retry-After"] = {"schema": {"type": "string"}}
        answers[str(status)] = answer
    return answers


_SECURED = [{"bearerAuth": []}]
_READ_ERRORS = (401, 404, 422, 503, 507)
_APPEND_BODY = {"oneOf": [_ref("EventInput"),
                          {"type": "array", "items": _ref("EventInput"), "minItems": 1, "maxItems": MAX_BATCH}]}
_APPENDED = {"oneOf": [_ref("Event"), _ref("EventList")]}
_STREAM = {"text/event-stream": {"schema": _ref("StreamEvent")}}
_LAST_EVENT_ID = {"in": "header", "name": "Last-Event-ID", "required": False,
                  "description": "the seq of the last event received; wins over since_seq",
                  "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}}


def _page_read(summary: str) -> tuple[str, dict[str, Any]]:
    return "get", {
        "summary": summary, "tags": ["read"], "security": _SECURED,
        "parameters": [{"in": "query", "schema": PageQuerySchema}],
        "responses": {"200": _answer("a page of stored envelopes (empty after `wait` seconds if none came)",
                                     _json(_ref("Page"))),
                      **_errors(*_READ_ERRORS, streams=True)},
    }


def _stream(summary: str) -> tuple[str, dict[str, Any]]:
    return "get", {
        "summary": summary, "tags": ["live"], "security": _SECURED,
        "parameters": [{"in": "query", "schema": StreamQuerySchema}, _LAST_EVENT_ID],
        "responses": {"200": _answer("history after the cursor, then each new event as it is appended",
                                     _STREAM),
                      **_errors(*_READ_ERRORS, streams=True)},
    }


def _summary(summary: str, answer: str, schema: str, *, query: Any = None) -> tuple[str, dict[str, Any]]:
    return "get", {
        "summary": summary, "tags": ["summaries"], "security": _SECURED,
        "parameters": [{"in": "query", "schema": query}] if query is not None else [],
        "responses": {"200": _answer(answer, _json(_ref(schema))),
                      **(_errors(401, 404, 503, 507) if query is None else _errors(401, 422, 503, 507))},
    }


OPERATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "sessions.list_sessions": _summary("Session summaries, most recently appended-to first",
                                       "a page of session summaries", "SessionList", query=ListingQuerySchema),
    "sessions.session_summary": _summary("One session's summary", "the session's summary", "SessionSummary"),
    "sessions.session_runs": ("get", {
        "summary": "A session's run summaries, in order of their first event", "tags": ["summaries"],
        "security": _SECURED, "parameters": [{"in": "query", "schema": ListingQuerySchema}],
        "responses": {"200": _answer("a page of the session's run summaries", _json(_ref("SessionRuns"))),
                      **_errors(401, 404, 422, 503, 507)},
    }),
    "runs.list_runs": _summary("Run summaries, most recently appended-to first, filtered by session and status",
                               "a page of run summaries", "RunList", query=RunListingQuerySchema),
    "runs.run_summary": _summary("One run's summary", "the run's summary", "RunSummary"),
    "sessions.append_events": ("post", {
        "summary": "Append one event, or 1-1000 events atomically (all or none)", "tags": ["append"],
        "security": _SECURED,
        "requestBody": {"required": True, "content": _json(_APPEND_BODY)},
        "responses": {
            "201": _answer("stored: the envelope (object body) or {events} (array body)", _json(_APPENDED)),
            "200": _answer("an idempotent re-send: every event was already stored", _json(_APPENDED)),
            **_errors(401, 403, 409, 413, 415, 422, 503, 507),
        },
    }),
    "sessions.session_events": _page_read("Read a session's events (long-poll with `wait`)"),
    "runs.run_events": _page_read("Read one run's events, with their session-level seqs (long-poll with `wait`)"),
    "streams.session_stream": _stream("A session's events as Server-Sent Events"),
    "streams.run_stream": _stream("A run's events as Server-Sent Events; ends after its terminal event"),
    "meta.event_types": ("get", {
        "summary": "The event type registry", "tags": ["meta"], "security": _SECURED,
        "responses": {"200": _answer("every registered type", _json(_ref("EventTypes"))), **_errors(401)},
    }),
    "meta.healthz": ("get", {
        "summary": "Liveness (always open)", "tags": ["meta"], "security": [],
        "responses": {"200": _answer("the service answers", _json(_ref("Health"))), **_errors()},
    }),
    "openapi.openapi_json": ("get", {
        "summary": "This description (OpenAPI 3.1)", "tags": ["meta"], "security": _SECURED,
        "responses": {"200": _answer("the description", _json({"type": "object"})), **_errors(401)},
    }),
    "metrics.metrics": ("get", {
        "summary": "Prometheus metrics, summed over the server's worker processes", "tags": ["meta"],
        "security": _SECURED,
        "responses": {
            "200": _answer("Prometheus text exposition format", {"text/plain": {"schema": {"type": "string"}}}),
            "404": _answer("not_found: metrics are off (EVENTSVC_METRICS=0)", _json(_ref("Error"))),
            **_errors(401),
        },
    }),
}
