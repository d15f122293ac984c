"""HTTP API: blueprints that turn requests into one store call each, and back."""
from __future__ import annotations

from flask import Flask, current_app

from ..store import EventStore
from ..tokens import TokenTable


def store() -> EventStore:
    return current_app.extensions["eventsvc.store"]


def register(app: Flask, tokens: TokenTable) -> None:
    from . import auth, errors, meta, metrics, openapi, request_ids, runs, sessions, streams

    app.extensions["eventsvc.tokens"] = tokens
    request_ids.init_app(app)
    metrics.init_app(app)  # before auth: a refused request is timed and counted too
    auth.init_app(app, tokens)
    app.register_blueprint(sessions.bp)
    app.register_blueprint(runs.bp)
    app.register_blueprint(meta.bp)
    app.register_blueprint(streams.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(metrics.bp)
    errors.init_app(app)
