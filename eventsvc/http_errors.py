"""gunicorn's own error answers (a request it cannot parse) in the service's one JSON error shape.

gunicorn answers a request line over 4094 bytes (414), oversized header fields (431) or a
malformed request (400) itself, before Flask sees it, with an HTML page. ``install()``, called
by ``eventsvc.gunicorn_conf`` in each worker, swaps the function that writes that page
(``gunicorn.util.write_error``, the one place its workers write one) for one that writes
``{"error": {"code", "message", "request_id"}}`` with a generated ``X-Request-ID``, so that
clients and the OpenAPI description see one shape whichever layer refused the request.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
from http import HTTPStatus
from typing import Any

from gunicorn import util

log = logging.getLogger(__name__)

CODES = {400: "bad_request", 403: "forbidden", 408: "request_timeout", 414: "uri_too_long", 417: "expectation_failed",
         431: "request_header_fields_too_large", 500: "internal_error", 501: "not_implemented"}
MESSAGES = {414: "the request line is longer than this server accepts",
            431: "the request's header fields are larger than this server accepts"}


def json_error(status: int, reason: str, *, code: str | None = None, message: str | None = None) -> bytes:
    """The whole HTTP answer; gunicorn's own message is not echoed (it may quote hostile input)."""
    request_id = secrets.token_hex(16)
    try:  # gunicorn passes "Bad Request" with some other statuses (501 among them): the status's own phrase
        reason = HTTPStatus(status).phrase
    except ValueError:
        pass
    message = message or MESSAGES.get(status, f"the server could not read this request ({reason.lower()})")
    body = json.dumps({"error": {"code": code or CODES.get(status, "bad_request"), "message": message,
                                 "request_id": request_id}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-ID: {request_id}\r\n"
            "X-Content-Type-Options: nosniff\r\n\r\n")
    return head.encode("latin-1") + body


def _write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    util.write_nonblock(sock, json_error(int(status_int), reason))
    count_refused(int(status_int), CODES.get(int(status_int), "bad_request"))


def count_refused(status: int, code: str, head: bytes = b"") -> None:
    """Into the Prometheus metrics when they are on (under gunicorn: see eventsvc.metrics). Never
    raises: counting an answer must not stop it (the worker's event loop calls this)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        try:
            from .metrics import count_refused as count

            count(status, code, head)
        except Exception:  # noqa: BLE001 - a metrics directory gone, say: logged, the answer goes out
            log.exception("could not count a %d answer in the metrics", status)


def install() -> None:
    util.write_error = _write_json_error
