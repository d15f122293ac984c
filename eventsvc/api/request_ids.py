"""``X-Request-ID``: the client's own id when it sent a usable one, else a fresh one, on every answer.

The id is echoed in the response header, in every error body (``error.request_id``) and in the
access log line, so one request can be followed from the client's log to the server's.
"""
from __future__ import annotations

import re
import secrets

from flask import Flask, Response, current_app, g, has_request_context, request

HEADER = "X-Request-ID"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")


def request_id() -> str | None:
    """This request's id, chosen on first use; None outside a request."""
    if not has_request_context():
        return None
    chosen = g.get("request_id")
    if chosen is None:
        given = request.headers.get(HEADER)
        chosen = given if given is not None and _usable(given) else secrets.token_hex(16)
        g.request_id = chosen
    return chosen


def _usable(given: str) -> bool:
    if _VALID.match(given) is None:
        return False
    # A client that sends its bearer token as a request id would see it logged: refuse it.
    tokens = current_app.extensions.get("eventsvc.tokens")
    return not (tokens and tokens.scope_of(given) is not None)


def _echo(response: Response) -> Response:
    response.headers[HEADER] = request_id()
    return response


def init_app(app: Flask) -> None:
    app.after_request(_echo)
