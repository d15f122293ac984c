"""gunicorn's loggers for ``make run``: secrets redacted, and ``EVENTSVC_LOG_FORMAT=json``.

``RedactingLogger`` (text, the default) keeps gunicorn's own formats, but cuts what gunicorn
quotes from a request it could not parse (a header line, which may be a token) and the query
string of a request URI out of its error log. ``JsonLogger`` also writes the access and error
logs as one JSON object per line. An access line holds the time, level, request id, method, path
(never the query string's values, only its parameter names), status, duration and bytes: never
a header, so never a token.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any
from urllib.parse import parse_qsl

from gunicorn.glogging import Logger


def _time(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def _current_request_id() -> str | None:
    try:
        from .api.request_ids import request_id
    except ImportError:  # logging must never fail for want of Flask
        return None
    return request_id()


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the traceback, if any, as one string field."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": _time(record.created), "level": record.levelname.lower(),
                                "logger": record.name, "message": record.getMessage(), "pid": record.process}
        request_id = _current_request_id()
        if request_id is not None:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=True)


class _MessageOnly(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


_QUOTED = re.compile(r"'.*'|\".*\"", re.DOTALL)
_QUERY = re.compile(r"\?\S*")


def redact(record: logging.LogRecord) -> bool:
    """A logging filter: gunicorn's messages about bad requests lose what the client sent."""
    message = record.getMessage()
    if message.startswith("Invalid request from ip="):
        record.msg, record.args = _QUOTED.sub("'<redacted>'", message), ()
    elif message.startswith("Error handling request"):
        record.msg, record.args = _QUERY.sub("?<redacted>", message), ()
    return True


class RedactingLogger(Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if redact not in self.error_log.filters:
            self.error_log.addFilter(redact)


class JsonLogger(RedactingLogger):
    """gunicorn's logger with JSON formatters; the service's own ``eventsvc`` loggers write through it too."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())
        for handler in self.access_log.handlers:
            handler.setFormatter(_MessageOnly())
        service = logging.getLogger("eventsvc")
        service.handlers = list(self.error_log.handlers)
        service.setLevel(self.error_log.level)
        service.propagate = False

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        headers = dict((name.lower(), value) for name, value in resp.headers)
        now = time.time()
        line = {
            "time": _time(now), "level": "info", "request_id": headers.get("x-request-id"),
            "method": environ.get("REQUEST_METHOD"), "path": environ.get("PATH_INFO"),
            "query_params": sorted({name for name, _ in parse_qsl(environ.get("QUERY_STRING", ""),
                                                                  keep_blank_values=True)}),
            "status": int(status) if str(status).isdigit() else status,
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "bytes": getattr(resp, "sent", None), "remote": environ.get("REMOTE_ADDR"), "pid": os.getpid(),
        }
        try:
            self.access_log.info("%s", json.dumps(line, ensure_ascii=True))
        except Exception:  # noqa: BLE001 - a log line must never fail a request
            self.error("access log line could not be written")
