"""eventsvc: a durable event log for AI-agent backends, served over HTTP by Flask.

The server stack (Flask, Peewee) is imported only when ``create_app`` or ``EventStore`` is
used, so ``eventsvc.client`` works in an install without the ``server`` extra.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .emitter import EventEmitter, run_scope

if TYPE_CHECKING:
    from flask import Flask

    from .store import EventStore
    from .store.base import Store

__all__ = ["EventEmitter", "EventStore", "create_app", "run_scope"]

log = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    if name == "EventStore":
        from .store import EventStore

        return EventStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Wire settings, the store, the blueprints and the error handlers; decides nothing itself."""
    from flask import Flask

    from . import config as settings
    from .tokens import tokens_from_config

    app = Flask(__name__)
    app.config.update(settings.load(config))
    _configure_logging(app.config["LOG_LEVEL"])
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_REQUEST_BYTES"]
    app.json.sort_keys = False
    app.json.ensure_ascii = False
    # "/api/sessions/x%2F/events" must be a 404, not a redirect that appends to session "x".
    app.url_map.merge_slashes = False
    app.extensions["eventsvc.store"] = _open_store(app.config)
    if app.config["FSYNC"] == "never":
        log.warning("EVENTSVC_FSYNC=never: acknowledged events can be lost if the machine crashes")
    tokens = tokens_from_config(app.config)  # ValueError: a token setting that yields no token

    from .api import register
    from .ui import init_app as init_console

    register(app, tokens)
    init_console(app, tokens)
    return app


def _open_store(config: Mapping[str, Any]) -> Store:
    """EVENTSVC_DATABASE_URL set: PostgreSQL; unset: the files backend in DATA_DIR."""
    from .store import EventStore
    from .types import build_registry

    event_types = build_registry(config["EXTRA_EVENT_TYPES"])
    if config["DATABASE_URL"]:
        from .store.postgres import PostgresStore

        return PostgresStore(config["DATABASE_URL"], pool_size=config["DB_POOL_SIZE"],
                             connect_timeout=config["DB_CONNECT_TIMEOUT"],
                             statement_timeout=config["DB_STATEMENT_TIMEOUT"],
                             max_event_bytes=config["MAX_EVENT_BYTES"], event_types=event_types)
    return EventStore(config["DATA_DIR"], fsync=config["FSYNC"] == "always", segment_bytes=config["SEGMENT_BYTES"],
                      max_event_bytes=config["MAX_EVENT_BYTES"], event_types=event_types,
                      io=_timed_io() if config["METRICS"] else None)


def _configure_logging(level: str) -> None:
    """The service's own loggers at EVENTSVC_LOG_LEVEL, on stderr beside gunicorn's lines.

    A host program that configured logging itself (a handler on the root logger) keeps its own.
    """
    package = logging.getLogger(__name__)
    package.setLevel(level.upper())
    if not package.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
                                               "%Y-%m-%d %H:%M:%S %z"))
        package.addHandler(handler)


def _timed_io():
    # Imported here, not at the top: under gunicorn prometheus_client must first be imported
    # in a worker, after the config has set PROMETHEUS_MULTIPROC_DIR (see eventsvc.metrics).
    from .metrics import TimedSegmentIO

    return TimedSegmentIO()
