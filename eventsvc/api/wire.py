"""Request bodies in and page bodies out, without re-serialising what the log already holds."""
from __future__ import annotations

from typing import Any

import json as stdlib_json

from flask import Request, Response, current_app
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from marshmallow import ValidationError

from ..errors import BadRequest, RequestTimeout, UnsupportedMediaType, ValidationFailed
from ..jsoncodec import loads_strict
from ..schemas import (ListingQuerySchema, PageQuerySchema, RunListingQuerySchema, StreamQuerySchema,
                       load_page_query)
from ..store import Page

_page_query = PageQuerySchema()
_stream_query = StreamQuerySchema()
_listing_query = ListingQuerySchema()
_run_listing_query = RunListingQuerySchema()


def json_body(request: Request) -> Any:
    """The parsed body; raises UnsupportedMediaType or BadRequest (400) before anything is stored."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {request.mimetype or 'missing'!r}")
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"charset must be utf-8, not {charset!r}")
    return loads_strict(_read_body(request))


def _read_body(request: Request) -> bytes:
    """The raw body, at most MAX_CONTENT_LENGTH bytes, chunked or not; 413 past it, 400 if unreadable."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    try:
        if request.content_length is not None or "wsgi.input_terminated" not in request.environ:
            body = request.get_data(cache=False)
            # A server that marks its input terminated (gunicorn) hands over what arrived before
            # the client went away: a body shorter than announced is a broken upload, not an event.
            if request.content_length is not None and len(body) != request.content_length:
                raise BadRequest(f"the request body ended after {len(body)} of the {request.content_length} "
                                 "bytes its Content-Length announced; nothing was stored")
            return body
        # Chunked: werkzeug's limited stream stops quietly at the limit, so count ourselves.
        stream = request.environ["wsgi.input"]
        chunks, size = [], 0
        while size <= limit:
            chunk = stream.read(min(65536, limit + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        raise RequestEntityTooLarge()
    except (HTTPException, BadRequest, BlockingIOError, TimeoutError) as exc:
        # The worker's receive timeout (EAGAIN), as raised or as werkzeug's ClientDisconnected.
        if isinstance(exc, (BlockingIOError, TimeoutError)) or isinstance(
                exc.__cause__ or exc.__context__, (BlockingIOError, TimeoutError)):
            raise RequestTimeout("the request body stalled for longer than EVENTSVC_BODY_TIMEOUT, or arrived "
                                 "more slowly than the server accepts; nothing was stored") from None
        raise
    except Exception as exc:  # noqa: BLE001 - the server's own parser failed on a hostile framing
        raise BadRequest(f"the request body could not be read ({type(exc).__name__})") from None


def page_query(request: Request) -> dict[str, Any]:
    """``since_seq``, ``limit`` and ``wait`` from the query string; raises ValidationFailed (422)."""
    given = request.args.to_dict(flat=False)
    if all(len(values) == 1 for values in given.values()):
        fast = load_page_query({name: values[0] for name, values in given.items()})
        if fast is not None:
            return fast
    return _load_query(_page_query, request)


def listing_query(request: Request, *, runs: bool = False) -> dict[str, Any]:
    """``limit`` and ``cursor`` of a summary listing (with ``status`` and ``session_id`` for runs)."""
    return _load_query(_run_listing_query if runs else _listing_query, request)


def stream_query(request: Request) -> dict[str, Any]:
    """``since_seq`` (or the Last-Event-ID header, which wins), ``until_seq`` and ``wait``."""
    query = _load_query(_stream_query, request)
    last_event_id = request.headers.get("Last-Event-ID")
    if last_event_id is not None:
        seq = last_event_id.strip()
        if not (seq.isascii() and seq.isdigit() and len(seq) <= 18):
            raise ValidationFailed("invalid Last-Event-ID header",
                                   {"Last-Event-ID": ["must be the seq of the last event received"]})
        query["since_seq"] = int(seq)
    return query


def _load_query(schema: Any, request: Request) -> dict[str, Any]:
    args = request.args
    repeated = {name: ["given more than once"] for name in args if len(args.getlist(name)) > 1}
    try:
        loaded = schema.load(args.to_dict())
    except ValidationError as exc:
        raise ValidationFailed("invalid query parameters", {**exc.messages, **repeated}) from None
    if repeated:
        raise ValidationFailed("invalid query parameters", repeated)
    return loaded


def page_response(page: Page, since_seq: int, *, run_id: str | None = None) -> Response:
    """The page as JSON, splicing the log's lines in as they are (they are already compact JSON)."""
    parts = [b'{"session_id":', stdlib_json.dumps(page.session_id).encode()]
    if run_id is not None:
        parts += [b',"run_id":', stdlib_json.dumps(run_id).encode()]
    parts += [b',"events":[', b",".join(page.lines),
              b'],"next_since_seq":%d,"has_more":%s}' % (page.next_since_seq, b"true" if page.has_more else b"false")]
    return Response(b"".join(parts), status=200, mimetype="application/json")
