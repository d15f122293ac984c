"""Request bodies in and page bodies out, without re-serialising what the log already holds."""
from __future__ import annotations

from typing import Any

from flask import Request, Response, json
from marshmallow import ValidationError

from ..errors import EventSvcError, ValidationFailed
from ..jsoncodec import loads_strict
from ..schemas import PageQuerySchema
from ..store import Page

_page_query = PageQuerySchema()


class UnsupportedMediaType(EventSvcError):
    code = "unsupported_media_type"


def json_body(request: Request) -> Any:
    """The parsed body; raises UnsupportedMediaType or BadRequest (400) before anything is stored."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {request.mimetype or 'missing'!r}")
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"charset must be utf-8, not {charset!r}")
    return loads_strict(request.get_data(cache=False))


def page_query(request: Request) -> dict[str, int]:
    """``since_seq`` and ``limit`` from the query string; raises ValidationFailed (422)."""
    args = request.args
    repeated = {name: ["given more than once"] for name in args if len(args.getlist(name)) > 1}
    try:
        loaded = _page_query.load(args.to_dict())
    except ValidationError as exc:
        raise ValidationFailed("invalid query parameters", {**exc.messages, **repeated}) from None
    if repeated:
        raise ValidationFailed("invalid query parameters", repeated)
    return loaded


def page_response(page: Page, since_seq: int, *, run_id: str | None = None) -> Response:
    """The page as JSON, splicing the log's lines in as they are (they are already compact JSON)."""
    parts = [b'{"session_id":', json.dumps(page.session_id).encode()]
    if run_id is not None:
        parts += [b',"run_id":', json.dumps(run_id).encode()]
    next_since_seq = page.seqs[-1] if page.seqs else since_seq
    parts += [b',"events":[', b",".join(page.lines),
              b'],"next_since_seq":%d,"has_more":%s}' % (next_since_seq, b"true" if page.has_more else b"false")]
    return Response(b"".join(parts), status=200, mimetype="application/json")
