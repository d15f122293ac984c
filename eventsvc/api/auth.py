"""Bearer-token access control for ``/api/...``; ``/healthz`` stays open.

Missing or unknown token: 401 with ``WWW-Authenticate: Bearer``; a read-only token on a
write: 403. With no token configured the API is open (``create_app`` warns once).
"""
from __future__ import annotations

from flask import Flask, request

from ..errors import Forbidden, Unauthorized
from ..tokens import WRITE, TokenTable

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def init_app(app: Flask, tokens: TokenTable) -> None:
    if not tokens:
        return

    @app.before_request
    def require_token() -> None:
        if not request.path.startswith("/api/"):
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        scope = tokens.scope_of(token) if scheme.lower() == "bearer" and token else None
        if scope is None:
            raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required")
        if request.method not in SAFE_METHODS and scope != WRITE:
            raise Forbidden("this token may only read")
