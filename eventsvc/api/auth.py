"""Bearer-token access control for ``/api/...`` and ``/metrics``; ``/healthz`` stays open.

Missing or unknown token: 401 with ``WWW-Authenticate: Bearer``; a read-only token on a
write: 403. With no token configured the API is open (``create_app`` warns once).

The console's sign-in cookie authorises reads only (``EventSource`` cannot send a header):
a write that carries only the cookie is refused whatever token it holds, so a page on
another site can never append through a signed-in browser.
"""
from __future__ import annotations

from flask import Flask, request

from ..errors import Forbidden, Unauthorized
from ..tokens import COOKIE_NAME, WRITE, TokenTable

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def init_app(app: Flask, tokens: TokenTable) -> None:
    if not tokens:
        return

    @app.before_request
    def require_token() -> None:
        if not (request.path.startswith("/api/") or request.path == "/metrics"):
            return
        header = request.headers.get("Authorization")
        if header is None and request.method in SAFE_METHODS and cookie_scope(tokens) is not None:
            return
        scheme, _, token = (header or "").partition(" ")
        token = token.strip()
        scope = tokens.scope_of(token) if scheme.lower() == "bearer" and token else None
        if scope is None:
            raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required"
                               + ("" if request.method in SAFE_METHODS else
                                  " (the console's sign-in cookie authorises reads only)"))
        if request.method not in SAFE_METHODS and scope != WRITE:
            raise Forbidden("this token may only read")


def cookie_scope(tokens: TokenTable) -> str | None:
    """The scope of the token in the console's cookie, or None; the caller grants reads only."""
    token = request.cookies.get(COOKIE_NAME, "")
    return tokens.scope_of(token) if token else None
