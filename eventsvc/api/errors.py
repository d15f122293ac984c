"""One error shape for everything: ``{"error": {"code", "message", "details"?, "request_id"}}``.

Domain errors carry their code; this module alone knows which HTTP status each code gets.
Unexpected exceptions are logged with their traceback and answered without one.
"""
from __future__ import annotations

import logging
from typing import Any

import json

from flask import Flask, Response, has_request_context, request
from werkzeug.exceptions import HTTPException

from ..errors import EventSvcError, TooManyStreams
from ..schemas import ID_CHARACTERS
from .request_ids import request_id

log = logging.getLogger(__name__)

STATUS_BY_CODE = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "seq_conflict": 409,
    "event_id_conflict": 409,
    "run_session_conflict": 409,
    "payload_too_large": 413,
    "request_timeout": 408,
    "unsupported_media_type": 415,
    "validation_error": 422,
    "internal_error": 500,
    "storage_unavailable": 503,
    "store_busy": 503,
    "too_many_streams": 503,
    "insufficient_storage": 507,
}
ERROR_CODE_KEY = "eventsvc.error_code"  # the answer's error code, in the WSGI environ (see api.metrics)
CODE_BY_STATUS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    rid = request_id()
    if rid is not None:
        error["request_id"] = rid
    if has_request_context():
        request.environ[ERROR_CODE_KEY] = code  # for the metrics (append outcomes, storage errors)
    # ASCII escapes: details can quote hostile input (a lone surrogate in a key, say) back.
    body = json.dumps({"error": error}, ensure_ascii=True)
    response = Response(body, status=status, mimetype="application/json")
    response.headers.update(headers or {})
    return response


def _domain_error(exc: EventSvcError) -> Response:
    headers = None
    if exc.code == "unauthorized":
        headers = {"WWW-Authenticate": 'Bearer realm="eventsvc"'}
    elif isinstance(exc, TooManyStreams):
        headers = {"Retry-After": str(exc.retry_after)}
    return error_response(STATUS_BY_CODE.get(exc.code, 400), exc.code, exc.message, exc.details, headers)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = CODE_BY_STATUS.get(status) or (exc.name or "error").lower().replace(" ", "_").replace("'", "")
    headers = {name: value for name, value in exc.get_headers() if name.lower() == "allow"}
    message = exc.description or exc.name
    if status == 413:
        message = "request body is larger than this service accepts"
    elif status == 404 and request.path.startswith(("/api/sessions/", "/api/runs/")):
        message = (f"no route matches {request.path!r}: session and run ids are {ID_CHARACTERS}, "
                   "so a '/' (or '%2F') is never part of one")
    return error_response(status, code, message, headers=headers)


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error (request %s)", request_id())
    return error_response(500, "internal_error", "internal error; the server log has the details")


def _harden(response: Response) -> Response:
    if request.method == "OPTIONS" and response.mimetype != "application/json":
        # Flask's automatic answer is an empty text/html body: every response here is JSON.
        allow = sorted(method.strip() for method in response.headers.get("Allow", "").split(",") if method.strip())
        response.set_data(json.dumps({"allow": allow}))
        response.mimetype = "application/json"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def init_app(app: Flask) -> None:
    app.after_request(_harden)
    app.register_error_handler(EventSvcError, _domain_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
