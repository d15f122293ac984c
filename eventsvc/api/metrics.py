"""``GET /metrics``, and the hooks that count each request into ``eventsvc.metrics``.

The hooks sit around the views rather than in them: a view's answer (status, error code,
stream body) says all they need, except which event types an append stored
(``count_appended``). With ``EVENTSVC_METRICS=0`` nothing is hooked and /metrics is a 404.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request

from ..errors import NotFound
from ..store import AppendResult
from . import store
from .errors import STATUS_BY_CODE

bp = Blueprint("metrics", __name__)
APPEND = "sessions.append_events"
PAGE_READS = frozenset({"sessions.session_events", "runs.run_events"})
READS = PAGE_READS | {"meta.event_types", "sessions.list_sessions", "sessions.session_summary",
                      "sessions.session_runs", "runs.list_runs", "runs.run_summary"}
STORAGE_CODES = frozenset({"storage_unavailable", "store_busy", "insufficient_storage"})
_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: ``labels()`` costs more than the increment itself."""
    child = _children.get((metric, labels))
    if child is None:
        child = _children[(metric, labels)] = metric.labels(*labels)
    return child


@bp.get("/metrics")
def metrics():
    if not current_app.config["METRICS"]:
        raise NotFound("metrics are off (EVENTSVC_METRICS=0)")
    from .. import metrics as registry

    body, content_type = registry.exposition(store(), request.headers.get("Accept"))
    return Response(body, status=200, content_type=content_type)


def count_appended(result: AppendResult) -> None:
    """Count the events an append stored (not the re-sent ones), by type."""
    if result.created and current_app.config["METRICS"]:
        from ..metrics import EVENTS_APPENDED

        for event, line in zip(result.events, result.lines):
            if line is not None:
                _child(EVENTS_APPENDED, event["type"]).inc()


def init_app(app: Flask) -> None:
    if not app.config["METRICS"]:
        return
    from .. import metrics as m

    for outcome in ("created", "replayed", *STATUS_BY_CODE, "internal_error"):
        m.APPEND_REQUESTS.labels(outcome)  # present from the start, at 0, so that rate() works
    for kind in STORAGE_CODES:
        m.STORAGE_ERRORS.labels(kind)

    @app.before_request
    def started() -> None:
        g.metrics_started = time.perf_counter()
        if request.endpoint in PAGE_READS and _waits(request.args.get("wait")):
            m.OPEN_LONG_POLLS.inc()
            g.metrics_long_poll = True

    @app.after_request
    def counted(response: Response) -> Response:
        endpoint = request.endpoint
        started_at = g.get("metrics_started")
        elapsed = time.perf_counter() - started_at if started_at is not None else 0.0
        error_code = g.get("error_code")
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        _child(m.HTTP_REQUESTS, rule, str(response.status_code)).inc()
        if endpoint == APPEND:
            outcome = {201: "created", 200: "replayed"}.get(response.status_code, error_code or "error")
            _child(m.APPEND_REQUESTS, outcome).inc()
            m.APPEND_SECONDS.observe(elapsed)
        elif endpoint in READS and not response.is_streamed:
            _child(m.READ_SECONDS, rule).observe(elapsed)
        if error_code in STORAGE_CODES:
            _child(m.STORAGE_ERRORS, error_code).inc()
        if response.status_code == 200 and response.mimetype == "text/event-stream":
            response.response = _open_while_iterated(response.response, m.OPEN_STREAMS)
        return response

    @app.teardown_request
    def finished(exc: BaseException | None) -> None:
        if g.pop("metrics_long_poll", False):
            m.OPEN_LONG_POLLS.dec()


def _waits(value: str | None) -> bool:
    try:
        return value is not None and 0 < float(value) <= 60
    except ValueError:
        return False


def _open_while_iterated(body: Iterable[bytes], gauge) -> Iterator[bytes]:
    """The stream's body, counted in ``gauge`` from its first byte until the server closes it."""
    gauge.inc()
    try:
        yield from body
    finally:
        gauge.dec()
