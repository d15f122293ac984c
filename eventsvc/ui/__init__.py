"""The web console under ``/ui/``: server-rendered pages over the store, live through the SSE API.

Off with ``EVENTSVC_UI=0`` (``/ui/`` is then a 404). Pages carry a Content-Security-Policy that
allows only our own script and stylesheet, so a payload that slipped past escaping still could
not run.
"""
from __future__ import annotations

from flask import Flask, Response, request

from ..tokens import TokenTable

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def init_app(app: Flask, tokens: TokenTable) -> None:
    if not app.config["UI"]:
        return
    from . import access, views

    app.extensions["eventsvc.ui.tokens"] = tokens
    app.jinja_env.trim_blocks = app.jinja_env.lstrip_blocks = True
    app.register_blueprint(views.bp)
    app.register_blueprint(access.bp)
    app.after_request(_harden)


def _harden(response: Response) -> Response:
    if request.path == "/ui" or request.path.startswith("/ui/"):
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Content-Type-Options"] = "nosniff"
        if response.mimetype == "text/html":
            response.headers["Cache-Control"] = "no-store"  # pages hold event data
    return response
