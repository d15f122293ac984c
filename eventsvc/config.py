"""Every setting: its name, its ``EVENTSVC_*`` variable, its default and its parser, in one table.

Tests pass a dict to ``create_app``; the environment fills what the dict leaves out.
"""
from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024


def _fsync_mode(value: str) -> str:
    mode = value.strip().lower()
    if mode not in ("always", "never"):
        raise ValueError("must be 'always' or 'never'")
    return mode


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be a positive integer")
    return number


def _flag(value: str) -> bool:
    flag = value.strip().lower()
    if flag not in ("1", "0", "true", "false", "yes", "no", ""):
        raise ValueError("must be 1 or 0")
    return flag in ("1", "true", "yes")


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be 0 or a positive integer")
    return number


def _log_level(value: str) -> str:
    level = value.strip().lower()
    if level not in ("debug", "info", "warning", "error", "critical"):
        raise ValueError("must be debug, info, warning, error or critical")
    return level


def _log_format(value: str) -> str:
    form = value.strip().lower()
    if form not in ("text", "json"):
        raise ValueError("must be 'text' or 'json'")
    return form


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be a positive number of seconds")
    return number


def _database_url(value: str) -> str:
    url = value.strip()
    if url and not is_database_url(url):
        raise ValueError("must be a postgresql:// (or postgres://) URL, or empty for the files backend")
    if url:
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
        except ImportError:  # no PostgreSQL driver: opening the store says so
            return url
        try:
            conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"cannot be parsed: {without_password(' '.join(str(exc).split()), url)}") from None
    return url


def without_password(text: str, url: str) -> str:
    """``text`` (a driver's message, which may quote the URL) without the URL's password."""
    secrets = [match.group(1) for match in re.finditer(r"[?&]password=([^&\s\"']+)", url)]
    userinfo = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)@", url)
    if userinfo and ":" in userinfo.group(1):
        secrets.append(userinfo.group(1).split(":", 1)[1])
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def is_database_url(target: object) -> bool:
    """Whether a store target names a PostgreSQL database rather than a data folder."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    secret: bool = False  # its value is never repeated in an error message (a URL may hold a password)

    @property
    def env(self) -> str:
        return f"EVENTSVC_{self.name}"


SETTINGS = (
    Setting("DATA_DIR", "./data", str, "where segments, the index and lock files live"),
    Setting("FSYNC", "always", _fsync_mode,
            "'always': an append is fsynced before it is acknowledged; 'never': the OS flushes (unsafe)"),
    Setting("SEGMENT_BYTES", 64 * MIB, _positive_int, "a session's segment rolls once it reaches this size"),
    Setting("MAX_EVENT_BYTES", MIB, _positive_int, "largest serialised event accepted (413 above)"),
    Setting("MAX_REQUEST_BYTES", 32 * MIB, _positive_int, "largest request body accepted (413 above)"),
    Setting("EXTRA_EVENT_TYPES", "", str, "comma-separated event types added to the 22 built-in ones"),
    Setting("SSE_KEEPALIVE", 15.0, _positive_float, "seconds between keepalive comments on an idle event stream"),
    Setting("API_TOKENS", "", str, "comma-separated bearer tokens that may read and write"),
    Setting("READ_TOKENS", "", str, "comma-separated bearer tokens that may only read"),
    Setting("TOKENS_FILE", "", str, "file of 'TOKEN rw|ro' lines ('sha256:<hex>' digests allowed, '#' comments)"),
    Setting("ALLOW_ANONYMOUS", False, _flag, "1: serve an open API on a non-loopback address anyway"),
    Setting("BIND", "127.0.0.1:8000", str, "gunicorn's listening address (make run)"),
    Setting("WORKERS", 2, _positive_int, "gunicorn worker processes (make run)"),
    Setting("THREADS", 256, _positive_int,
            "threads per gunicorn worker (make run): each open event stream holds one"),
    Setting("MAX_STREAMS", 0, _count,
            "open event streams and long-polls per worker (0: THREADS less a reserve of THREADS/16 for short "
            "requests); beyond it, 503 too_many_streams"),
    Setting("HEADER_TIMEOUT", 10.0, _positive_float,
            "seconds a connection may take to send its request headers before it is closed"),
    Setting("BODY_TIMEOUT", 30.0, _positive_float,
            "seconds a request body may stall (no byte arriving) before the request fails with 408"),
    Setting("MAX_CONNECTIONS", 1000, _positive_int, "open connections per worker (make run), idle ones included"),
    Setting("LOG_LEVEL", "info", _log_level, "log level of the service and gunicorn"),
    Setting("LOG_FORMAT", "text", _log_format,
            "'text': human-readable gunicorn logs; 'json': one JSON object per line (access and error logs)"),
    Setting("METRICS", True, _flag, "0: no Prometheus metrics (GET /metrics answers 404) and no per-request counting"),
    Setting("UI", True, _flag, "0: no web console; /ui/ is then 404"),
    Setting("DATABASE_URL", "", _database_url,
            "postgresql://... : store events in PostgreSQL instead of DATA_DIR (prepare it with `eventsvc db upgrade`)",
            secret=True),
    Setting("DB_POOL_SIZE", 10, _positive_int, "PostgreSQL connections per worker process, at most"),
    Setting("DB_CONNECT_TIMEOUT", 5.0, _positive_float,
            "seconds to connect to PostgreSQL or wait for a pooled connection before answering 503"),
    Setting("DB_STATEMENT_TIMEOUT", 30.0, _positive_float, "seconds one PostgreSQL statement may run"),
)


def stream_limit(config: Mapping[str, Any]) -> int:
    """Open streams and long-polls one worker serves at once: always fewer than its threads.

    The rest of the threads are a reserve only short requests (appends, reads, /healthz) can
    use, so no number of watchers can starve them. Raises ValueError for a limit that leaves none.
    """
    threads = int(config["THREADS"])
    limit = int(config["MAX_STREAMS"]) or threads - max(1, threads // 16)
    if limit >= threads:
        raise ValueError(f"EVENTSVC_MAX_STREAMS={limit} must be below EVENTSVC_THREADS={threads}: "
                         "short requests need threads of their own")
    return max(0, limit)


def load(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Defaults, then ``EVENTSVC_*`` variables, then ``overrides``; raises ValueError naming the variable."""
    config: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env)
        if raw is None:
            config[setting.name] = setting.default
            continue
        try:
            config[setting.name] = setting.parse(raw)
        except ValueError as exc:
            raise ValueError(f"{setting.env}{'' if setting.secret else '=' + repr(raw)}: {exc}") from None
    config.update(overrides or {})
    return config


def is_loopback(address: str) -> bool:
    """Whether a gunicorn bind address (``host:port``, ``[v6]:port``, ``unix:path``, ``fd://N``) stays on this machine.

    An inherited socket (``fd://N``) may listen anywhere: it counts as loopback only when the
    socket itself, asked in this process, is a Unix socket or bound to a loopback address.
    """
    if address.startswith("unix:"):
        return True
    if address.startswith("fd://"):
        return _inherited_socket_is_loopback(address[len("fd://"):])
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other host name may resolve anywhere


def _inherited_socket_is_loopback(number: str) -> bool:
    if not (number.isascii() and number.isdigit() and len(number) < 10):
        return False
    try:
        copy = os.dup(int(number))
    except OSError:
        return False
    try:
        inherited = socket.socket(fileno=copy)
    except OSError:  # not a socket
        os.close(copy)
        return False
    try:
        with inherited:  # closes the copy, never the inherited socket
            if inherited.family == socket.AF_UNIX:
                return True
            host = inherited.getsockname()[0]
    except OSError:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_refusal(config: Mapping[str, Any], addresses: list[str] | None = None, *, open_api: bool) -> str | None:
    """Why the service must not start: an open API bound beyond loopback (None when it may).

    ``open_api`` must come from the parsed token table (a setting can be present and hold no
    token); ``addresses`` are the final bind addresses (gunicorn's, after its command line); by
    default EVENTSVC_BIND's.
    """
    if not open_api or config["ALLOW_ANONYMOUS"]:
        return None
    if addresses is None:
        addresses = [part.strip() for part in str(config["BIND"]).split(",") if part.strip()]
    for address in addresses:
        if not is_loopback(address):
            return (f"refusing to serve an open API on {address}: set EVENTSVC_API_TOKENS (or "
                    "EVENTSVC_READ_TOKENS / EVENTSVC_TOKENS_FILE), bind to 127.0.0.1, or set "
                    "EVENTSVC_ALLOW_ANONYMOUS=1 if anyone who can reach it may read and write")
    return None
