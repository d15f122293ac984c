"""``GET /metrics``, and the WSGI middleware that counts each request into ``eventsvc.metrics``.

Counting sits around the whole app as WSGI middleware rather than in Flask's request hooks: it
needs only the answer's status line and headers, the matched URL rule (of the request Flask still
holds when it starts the answer) and the error code (left in the WSGI environ by
``errors.error_response``), and it costs a fraction of the three hooks it replaced
(``bench/bench_metrics_cost.py``). Which event types an append stored is counted by the view
(``count_appended``), how many long-polls wait by the read views (``long_polling``); answers the
server gives before the app sees a request, by ``eventsvc.http_errors``. With
``EVENTSVC_METRICS=0`` nothing is wrapped and /metrics is a 404.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, Flask, Request, Response, current_app, request

from ..errors import NotFound
from ..store import AppendResult
from . import store
from .errors import ERROR_CODE_KEY, STATUS_BY_CODE

bp = Blueprint("metrics", __name__)
APPEND = "sessions.append_events"
READS = frozenset({"sessions.session_events", "runs.run_events", "meta.event_types", "sessions.list_sessions",
                   "sessions.session_summary", "sessions.session_runs", "runs.list_runs", "runs.run_summary"})
STORAGE_CODES = frozenset({"storage_unavailable", "store_busy", "insufficient_storage"})
_APPEND_OUTCOMES = {"201": "created", "200": "replayed"}
_EXTENSION = "eventsvc.metrics"


@bp.get("/metrics")
def metrics():
    if not current_app.config["METRICS"]:
        raise NotFound("metrics are off (EVENTSVC_METRICS=0)")
    from .. import metrics as registry

    body, content_type = registry.exposition(store(), request.headers.get("Accept"))
    return Response(body, status=200, content_type=content_type)


def count_appended(result: AppendResult) -> None:
    """Count the events an append stored (not the re-sent ones), by type."""
    if result.created:
        meter = current_app.extensions.get(_EXTENSION)
        if meter is not None:
            meter.count_appended(result)


@contextmanager
def long_polling() -> Iterator[None]:
    """A long-poll read's wait, counted in ``eventsvc_open_long_polls`` while it lasts."""
    meter = current_app.extensions.get(_EXTENSION)
    if meter is None:
        yield
        return
    meter.m.OPEN_LONG_POLLS.inc()
    try:
        yield
    finally:
        meter.m.OPEN_LONG_POLLS.dec()


def init_app(app: Flask) -> None:
    if not app.config["METRICS"]:
        return
    from .. import metrics as m

    for outcome in ("created", "replayed", *STATUS_BY_CODE, "internal_error"):
        m.APPEND_REQUESTS.labels(outcome)  # present from the start, at 0, so that rate() works
    for kind in STORAGE_CODES:
        m.STORAGE_ERRORS.labels(kind)
    meter = Meter(m)
    app.extensions[_EXTENSION] = meter
    app.wsgi_app = meter.wrap(app.wsgi_app)


class Meter:
    """Each request counted and timed around the WSGI app; labelled children looked up once."""

    def __init__(self, m: Any) -> None:
        self.m = m
        self._cells: dict[tuple, Any] = {}
        self._append_seconds = m.HistogramCells(m.APPEND_SECONDS)

    def count_appended(self, result: AppendResult) -> None:
        for event, line in zip(result.events, result.lines):
            if line is not None:
                self._cell(self.m.EVENTS_APPENDED, event["type"]).inc(1)

    def _cell(self, metric: Any, *labels: str) -> Any:
        """The value cell of ``metric.labels(*labels)``, looked up once (``labels()`` costs more than an
        increment) and added to directly (see ``eventsvc.metrics.counter_cell``)."""
        cell = self._cells.get((metric, labels))
        if cell is None:
            child = metric.labels(*labels)
            cell = self._cells[(metric, labels)] = (
                self.m.HistogramCells(child) if isinstance(child, self.m.Histogram) else self.m.counter_cell(child))
        return cell

    def wrap(self, wsgi_app: Callable) -> Callable:
        def metered(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
            started = time.perf_counter()
            answer: list[Any] = []

            def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
                # Flask calls this before it pops the request context: its request is still here.
                answer[:] = status, headers, environ.get("werkzeug.request")
                return start_response(status, headers, exc_info)

            body = wsgi_app(environ, start)
            if not answer:
                return body
            try:
                return self._counted(environ, *answer, body, time.perf_counter() - started)
            except BaseException:
                _close(body)  # a stream's slot goes back with it
                raise

        return metered

    def _counted(self, environ: dict[str, Any], status_line: str, headers: list[tuple[str, str]],
                 answered: Request | None, body: Iterable[bytes], elapsed: float) -> Iterable[bytes]:
        m = self.m
        status = status_line[:3]
        url_rule = answered.url_rule if answered is not None else None
        rule, endpoint = (url_rule.rule, url_rule.endpoint) if url_rule is not None else ("unmatched", None)
        error_code = environ.get(ERROR_CODE_KEY)
        self._cell(m.HTTP_REQUESTS, rule, status).inc(1)
        if error_code in STORAGE_CODES:
            self._cell(m.STORAGE_ERRORS, error_code).inc(1)
        if endpoint == APPEND and environ["REQUEST_METHOD"] == "POST":  # not its automatic OPTIONS
            self._cell(m.APPEND_REQUESTS, _APPEND_OUTCOMES.get(status) or error_code or "error").inc(1)
            self._append_seconds.observe(elapsed)
            return body
        if status == "200" and _is_stream(headers):
            return _OpenWhileIterated(body, m.OPEN_STREAMS)
        if endpoint in READS:
            self._cell(m.READ_SECONDS, rule).observe(elapsed)
        return body


def _is_stream(headers: list[tuple[str, str]]) -> bool:
    return any(name == "Content-Type" and value.startswith("text/event-stream") for name, value in headers)


class _OpenWhileIterated:
    """A stream's body, counted in ``gauge`` from its first byte until the server closes it."""

    def __init__(self, body: Iterable[bytes], gauge: Any) -> None:
        self._body, self._gauge, self._open = body, gauge, False

    def __iter__(self) -> Iterator[bytes]:
        if not self._open:
            self._open = True
            self._gauge.inc()
        return iter(self._body)

    def close(self) -> None:
        try:
            _close(self._body)
        finally:
            if self._open:
                self._open = False
                self._gauge.dec()


def _close(body: Iterable[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()
