"""What the sync and the async client share and that does no I/O: request shapes, the retry
policy, and the cursor and retry budget of a ``follow``.

Each client drives these with its own transport (``httpx.Client`` or ``httpx.AsyncClient``), so
both retry, resume and fail alike.
"""
from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import EventSource

from .errors import ClientError, ConnectionFailed, error_from_response

RETRY_STATUSES = frozenset({502, 503, 504})
MAX_PAGE = 1000
MAX_BATCH = 1000  # the server's limit on events per array POST
MAX_RETRY_AFTER = 60.0  # a Retry-After above this is read as this: a confused server cannot park us for hours
TRANSPORT_ERRORS = (httpx.TransportError,)  # refused, reset, timed out, cut mid-body

RetryNotice = Callable[[str, float], None]
"""Called before each wait of a retried request or stream: (what failed, seconds until the retry)."""


@dataclass(frozen=True)
class RetryPolicy:
    """The n-th retry waits about ``backoff * 2**n`` seconds (jittered, at most ``max_backoff``),
    or the server's ``Retry-After`` when that is longer."""

    retries: int = 5
    backoff: float = 0.1
    max_backoff: float = 5.0

    def delay(self, attempt: int, retry_after: float | None = None, advised: float | None = None) -> float:
        ceiling = self.max_backoff if advised is None else max(advised, self.backoff)
        delay = jittered(min(ceiling, self.backoff * 2 ** attempt))
        return delay if retry_after is None else max(delay, retry_after)


class ClientSettings:
    """What both clients are built from: the server, the token, the timeout and the retry policy.

    ``retries``, ``backoff`` and ``max_backoff`` govern re-sends of appends and reconnects of
    ``follow`` (see ``RetryPolicy``); a 503's ``Retry-After`` is honoured when it is longer.
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 10.0, *,
                 retries: int = 5, backoff: float = 0.1, max_backoff: float = 5.0) -> None:
        if token is not None and not (token.isascii() and token.isprintable() and token.strip() == token):
            raise ValueError("token must be printable ASCII with no space at either end (it goes in a header)")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.retry_policy = RetryPolicy(retries, backoff, max_backoff)

    def _pool_options(self) -> dict[str, Any]:
        """The options of the httpx client (sync or async) that carries every request."""
        return {"base_url": self.base_url, "timeout": self.timeout,
                "headers": {"Authorization": f"Bearer {self.token}"} if self.token else {},
                "limits": httpx.Limits(max_connections=64, max_keepalive_connections=32)}


def jittered(delay: float) -> float:
    return delay * (0.5 + random.random() / 2)


def segment(identifier: str) -> str:
    """An id as one URL path segment (a ``/`` in it can never reach another route)."""
    return quote(identifier, safe="")


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), None without one."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        return min(max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0), MAX_RETRY_AFTER)
    except (TypeError, ValueError, OverflowError):
        return None


def describe(exc: Exception) -> str:
    """A transport failure in words a person at a terminal reads: cannot connect, or connection lost."""
    what = "cannot connect" if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) else "connection lost"
    detail = str(exc)
    return f"{what} ({type(exc).__name__}{': ' + detail if detail else ''})"


def encode(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def append_body(event_or_events: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                default_source: str | None) -> tuple[bool, bytes]:
    """(single?, body) with an ``event_id`` on every event before the first attempt, so a re-send
    is an idempotent replay. The caller's dicts are not changed."""
    single = isinstance(event_or_events, Mapping)
    events = [event_or_events] if single else list(event_or_events)
    prepared = []
    for event in events:
        event = dict(event)
        event.setdefault("event_id", str(uuid.uuid4()))
        if default_source is not None:
            event.setdefault("source", default_source)
        prepared.append(event)
    return single, encode(prepared[0] if single else prepared)


def append_path(session_id: str) -> str:
    return f"/api/sessions/{segment(session_id)}/events"


def stream_path(session_id: str | None, run_id: str | None) -> str:
    if (session_id is None) == (run_id is None):
        raise ValueError("follow needs exactly one of session_id and run_id")
    if session_id is not None:
        return f"/api/sessions/{segment(session_id)}/events/stream"
    return f"/api/runs/{segment(run_id)}/events/stream"


def types_param(types: str | Iterable[str] | None) -> dict[str, str]:
    """``?types=a,b``: only events of those types (None: every type)."""
    if types is None:
        return {}
    return {"types": types if isinstance(types, str) else ",".join(types)}


def page_params(since_seq: int, limit: int, types: str | Iterable[str] | None = None) -> dict[str, Any]:
    return {"since_seq": since_seq, "limit": min(limit, MAX_PAGE), **types_param(types)}


def runs_params(session_id: str | None, status: str | Iterable[str] | None, limit: int) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": min(limit, MAX_PAGE)}
    if session_id is not None:
        params["session_id"] = session_id
    if status is not None:
        params["status"] = status if isinstance(status, str) else ",".join(status)
    return params


def retryable(error: ClientError) -> bool:
    """An answer that says "try again": 502/503/504, whatever its code (busy, draining, too many streams)."""
    return error.status in RETRY_STATUSES


def event_source(response: httpx.Response) -> EventSource:
    """The SSE reader of a 200 answer; ClientError if it is not an event stream (a proxy's page).

    Measured (2 cores, 10,000 history events in one follow): httpx-sse ~7,500 events/s, the old
    requests client with its own decoder ~17,000/s. Reading the raw body through httpx alone
    takes ~80% of httpx-sse's time (h11 parses each SSE message as its own HTTP chunk), so a
    hand-written decoder over httpx would not win it back; httpx-sse stays.
    """
    content_type = response.headers.get("content-type", "").partition(";")[0].strip()
    if content_type != "text/event-stream":
        raise ClientError(f"expected an event stream, got {content_type or 'no content type'!r}", status=200,
                          code="not_an_event_stream")
    return EventSource(response)


class Follow:
    """The cursor and the retry budget of one ``follow``, for either client's I/O loop.

    Each event is yielded once: the cursor moves past every seq handed out, reconnects send it as
    ``Last-Event-ID``, and anything at or below it is skipped. A stream that ends without the
    server's ``end`` message was cut, so the loop reconnects. Retries stop, with
    ConnectionFailed, once they have failed for ``give_up_after`` seconds in a row.
    """

    def __init__(self, path: str, since_seq: int, *, until_seq: int | None, wait: bool,
                 policy: RetryPolicy, give_up_after: float | None, on_retry: RetryNotice | None,
                 types: str | Iterable[str] | None = None) -> None:
        self.path = path
        self.types = types_param(types)
        self.cursor = since_seq
        self.until_seq = until_seq
        self.wait = wait
        self.policy = policy
        self.give_up_after = give_up_after
        self.on_retry = on_retry
        self.finished = False
        self._failures = 0
        self._failing_since: float | None = None
        self._advised: float | None = None

    def request(self) -> tuple[dict[str, Any], dict[str, str]]:
        """(query, headers) of the next connection."""
        params: dict[str, Any] = {"since_seq": self.cursor}
        if self.until_seq is not None:
            params["until_seq"] = self.until_seq
        if self.wait:
            params["wait"] = 1
        params.update(self.types)
        headers = {"Accept": "text/event-stream"}
        if self.cursor:
            headers["Last-Event-ID"] = str(self.cursor)
        return params, headers

    def opened(self, response: httpx.Response, body: bytes | None) -> float | None:
        """Check a connection's answer: None to read it as a stream; else the seconds to wait
        before the next attempt. Raises the mapped error for an answer not worth retrying."""
        if response.status_code == 200:
            return None
        error = error_from_response(response.status_code, body or b"")
        if not retryable(error):
            raise error
        return self.failed(str(error), retry_after(response.headers))

    def message(self, event: str, data: str, last_id: str, retry_ms: int | None) -> dict[str, Any] | None:
        """The envelope of one SSE message, or None for one to skip; sets ``finished`` at ``end``.
        A message means the server is there: the retry budget starts afresh."""
        self._failures, self._failing_since = 0, None
        if retry_ms is not None:
            self._advised = retry_ms / 1000
        if event == "end":
            self.finished = True
            return None
        if not data:
            return None  # a retry-only or empty message (WHATWG: no data, nothing to dispatch)
        seq = int(last_id) if last_id else self.cursor + 1
        if seq <= self.cursor:
            return None
        self.cursor = seq
        return json.loads(data)

    def failed(self, what: str, retry_after_seconds: float | None = None) -> float:
        """The seconds to wait after a failed or cut connection; raises ConnectionFailed once the
        budget is spent (a Retry-After that would end past it counts as spent)."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        delay = self.policy.delay(self._failures, retry_after_seconds, self._advised)
        self._failures += 1
        if self.give_up_after is not None and now + delay - self._failing_since > self.give_up_after:
            raise ConnectionFailed(f"gave up after {self.give_up_after:g} s of retries: "
                                   f"cannot follow {self.path}: {what}")
        if self.on_retry is not None:
            self.on_retry(what, delay)
        return delay

    def cut(self) -> float:
        """The seconds to wait after a stream that closed without ``end`` (a restart, a proxy)."""
        return self.failed("the stream was cut")
