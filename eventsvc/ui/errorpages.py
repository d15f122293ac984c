"""Readable HTML error pages for the console (the API keeps its JSON errors)."""
from __future__ import annotations

from flask import Response, render_template
from werkzeug.exceptions import HTTPException

from ..errors import NotFound

TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 405: "Not allowed"}


def html_error(exc: HTTPException | NotFound) -> tuple[str, int] | Response:
    if isinstance(exc, NotFound):
        status, message = 404, exc.message
    else:
        status, message = exc.code or 500, exc.description or exc.name
        if status >= 500:
            return exc.get_response()
    title = TITLES.get(status, "Error")
    return render_template("ui/error.html", status=status, title=title, message=message), status
