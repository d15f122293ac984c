"""Sign-in for the console when tokens are configured: the token goes into a cookie, never a URL.

The cookie is ``HttpOnly`` and ``SameSite=Strict`` (``Secure`` over https) and authorises reads
only (see ``api/auth.py``). Without tokens there is nothing to sign in to: these routes are 404.
"""
from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request
from werkzeug.exceptions import HTTPException

from ..api.auth import cookie_scope
from ..tokens import COOKIE_NAME, TokenTable
from .errorpages import html_error

bp = Blueprint("ui_access", __name__, template_folder="templates")
bp.register_error_handler(HTTPException, html_error)
MAX_TOKEN_CHARS = 2048  # a cookie holds about 4 KB


def tokens() -> TokenTable:
    return current_app.extensions["eventsvc.ui.tokens"]


def signed_in() -> bool:
    """Whether this request may read through the console (always, when no token is configured)."""
    table = tokens()
    return not table or cookie_scope(table) is not None


def local_next(value: str | None) -> str:
    """Where to go after signing in: a path of the console only, never another site."""
    if (value and value.startswith("/ui/") and "//" not in value and "\\" not in value
            and value.isprintable() and len(value) <= 2000):
        return value
    return "/ui/"


def sign_in_redirect() -> Response:
    """To the sign-in form, remembering the page (its path and query, which never hold a token)."""
    response = redirect("/ui/signin", code=303)
    wanted = request.full_path.rstrip("?")
    if local_next(wanted) != "/ui/":
        response = redirect("/ui/signin?" + urlencode({"next": wanted}), code=303)
    return response


@bp.get("/ui/signin")
def signin_form():
    if not tokens():
        abort(404)
    return render_template("ui/signin.html", next=local_next(request.args.get("next")), error=None)


@bp.post("/ui/signin")
def signin():
    if not tokens():
        abort(404)
    _same_origin_only()
    token = request.form.get("token", "").strip()
    next_path = local_next(request.form.get("next"))
    if not token or len(token) > MAX_TOKEN_CHARS or tokens().scope_of(token) is None:
        # Never echo what was typed: the form comes back empty (a 200, so the browser logs no error).
        return render_template("ui/signin.html", next=next_path, error="That token is not valid here.")
    response = redirect(next_path, code=303)
    response.set_cookie(COOKIE_NAME, token, httponly=True, samesite="Strict", secure=request.is_secure, path="/")
    return response


@bp.post("/ui/signout")
def signout():
    if not tokens():
        abort(404)
    _same_origin_only()
    response = redirect("/ui/signin", code=303)
    response.delete_cookie(COOKIE_NAME, httponly=True, samesite="Strict", secure=request.is_secure, path="/")
    return response


def _same_origin_only() -> None:
    """A form posted from another site must not sign this browser in or out."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        abort(403)
