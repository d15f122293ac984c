"""HTTP API: blueprints that turn requests into one store call each, and back."""
from __future__ import annotations

from typing import Any

from flask import Flask, current_app, request

from ..config import stream_limit
from ..errors import NotFound
from ..schemas import ID_CHARACTERS, is_valid_id
from ..store.base import Store
from ..tokens import TokenTable


def store() -> Store:
    return current_app.extensions["eventsvc.store"]


def _check_ids(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """An id that breaks the id rule can never exist: a 404 naming the rule, before any wait or lookup.

    Appends keep their 422 (the envelope's session_id is invalid), raised by the store.
    """
    if not values or request.method == "POST":
        return
    for name, kind in (("session_id", "session"), ("run_id", "run")):
        value = values.get(name)
        if value is not None and not is_valid_id(value):
            raise NotFound(f"no {kind} can have the id {value!r}: {kind} ids are {ID_CHARACTERS}")


def register(app: Flask, tokens: TokenTable) -> None:
    from . import auth, errors, meta, metrics, openapi, request_ids, runs, sessions, slots, streams

    app.extensions["eventsvc.tokens"] = tokens
    request_ids.init_app(app)
    metrics.init_app(app)
    slots.init_app(app, stream_limit(app.config))
    app.url_value_preprocessor(_check_ids)
    auth.init_app(app, tokens)
    app.register_blueprint(sessions.bp)
    app.register_blueprint(runs.bp)
    app.register_blueprint(meta.bp)
    app.register_blueprint(streams.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(metrics.bp)
    errors.init_app(app)
