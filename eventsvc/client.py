"""EventClient: the eventsvc HTTP API from Python (the optional extra ``eventsvc[client]``).

Appends are safe to retry: every event gets its ``event_id`` before the first attempt, so a
re-send after a lost answer is an idempotent re-send that the server stores once. ``follow``
reads the Server-Sent Events stream and reconnects by itself with ``Last-Event-ID``, so the
caller sees every event exactly once across disconnects and server restarts.
``RemoteEmitter`` is the in-process ``EventEmitter`` pointed at a server: same ``emit``, same
``run_scope``.

Errors are raised as exceptions named after the server's error codes; each is also the
in-process exception of the same meaning (``Conflict`` is an ``eventsvc.errors.Conflict``,
``ValidationFailed`` a ``ValueError``), so code that caught store errors keeps working.
"""
from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from . import errors
from .emitter import EventEmitter

RETRY_STATUSES = frozenset({502, 503, 504})
MAX_PAGE = 1000


# -- exceptions ------------------------------------------------------------------------------------


class ClientError(errors.EventSvcError):
    """An error answer of the server (``status``, ``code``, ``message``, ``details``), or no answer."""

    def __init__(self, message: str, details: Any = None, *, status: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, details)
        self.status = status
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        prefix = f"{self.status} {self.code}" if self.status is not None else self.code
        return f"{prefix}: {self.message}"


class ValidationFailed(ClientError, errors.ValidationFailed):
    code = "validation_error"


class BadRequest(ClientError, errors.BadRequest):
    code = "bad_request"


class NotFound(ClientError, errors.NotFound):
    code = "not_found"


class Conflict(ClientError, errors.Conflict):
    code = "conflict"


class SeqConflict(Conflict, errors.SeqConflict):
    code = "seq_conflict"


class EventIdConflict(Conflict, errors.EventIdConflict):
    code = "event_id_conflict"


class RunSessionConflict(Conflict, errors.RunSessionConflict):
    code = "run_session_conflict"


class Unauthorized(ClientError, errors.Unauthorized):
    code = "unauthorized"


class Forbidden(ClientError, errors.Forbidden):
    code = "forbidden"


class PayloadTooLarge(ClientError, errors.EventTooLarge):
    code = "payload_too_large"


class UnsupportedMediaType(ClientError, errors.UnsupportedMediaType):
    code = "unsupported_media_type"


class RequestTimeout(ClientError, errors.RequestTimeout):
    code = "request_timeout"


class StorageUnavailable(ClientError, errors.StorageError):
    code = "storage_unavailable"


class StoreBusy(StorageUnavailable, errors.StoreBusy):
    code = "store_busy"


class InsufficientStorage(StorageUnavailable, errors.StorageFull):
    code = "insufficient_storage"


class TooManyStreams(ClientError, errors.TooManyStreams):
    """The server's worker is at its cap of open streams; ``follow`` waits ``Retry-After`` and tries again."""

    code = "too_many_streams"


class ConnectionFailed(ClientError):
    """No answer at all (refused, reset, timed out) after the retries; ``status`` is None."""

    code = "connection_failed"


_ERROR_BY_CODE: dict[str, type[ClientError]] = {cls.code: cls for cls in (
    ValidationFailed, BadRequest, NotFound, Conflict, SeqConflict, EventIdConflict, RunSessionConflict,
    Unauthorized, Forbidden, PayloadTooLarge, UnsupportedMediaType, RequestTimeout, StorageUnavailable, StoreBusy,
    InsufficientStorage, TooManyStreams)}
_ERROR_BY_STATUS: dict[int, type[ClientError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 408: RequestTimeout, 409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType, 422: ValidationFailed, 503: StorageUnavailable, 507: InsufficientStorage}


def error_from_response(status: int, body: bytes) -> ClientError:
    """The exception for an error answer: by its JSON ``error.code``, else by its HTTP status."""
    error: Any = None
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        pass
    if not isinstance(error, dict):
        text = body.decode("utf-8", "replace").strip()[:200]
        cls = _ERROR_BY_STATUS.get(status, ClientError)
        return cls(text or f"HTTP {status}", status=status, code=cls.code if cls is not ClientError else "http_error")
    code = str(error.get("code") or "error")
    cls = _ERROR_BY_CODE.get(code) or _ERROR_BY_STATUS.get(status, ClientError)
    return cls(str(error.get("message") or code), error.get("details"), status=status, code=code)


# -- Server-Sent Events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None


class SSEDecoder:
    """Turns ``text/event-stream`` bytes, fed in chunks of any size, into messages (WHATWG rules).

    Comments (``: keepalive``) are counted in ``comments``; ``retry`` advice lands in ``retry_ms``.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._after_cr = False
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self.comments = 0

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._after_cr = False
        self._buffer += chunk
        messages: list[ServerSentEvent] = []
        start = 0
        while True:
            ends = [i for i in (self._buffer.find(b"\r", start), self._buffer.find(b"\n", start)) if i >= 0]
            if not ends:
                break
            end = min(ends)
            line = self._buffer[start:end]
            if self._buffer[end:end + 2] == b"\r\n":
                start = end + 2
            else:
                start = end + 1
                # A lone CR at the end of a chunk may be the first half of a CRLF split across chunks.
                self._after_cr = self._buffer[end:end + 1] == b"\r" and start == len(self._buffer)
            message = self._line(line.decode("utf-8", "replace"))
            if message is not None:
                messages.append(message)
        self._buffer = self._buffer[start:]
        return messages

    def _line(self, line: str) -> ServerSentEvent | None:
        if not self._started:
            self._started = True
            line = line.removeprefix("\ufeff")
        if not line:
            data, event = self._data, self._event
            self._data, self._event = [], ""
            if not data:
                return None
            return ServerSentEvent(event or "message", "\n".join(data), self.last_id)
        if line.startswith(":"):
            self.comments += 1
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self.last_id = value
        elif field == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


# -- the client ------------------------------------------------------------------------------------


class EventClient:
    """A thread-safe client of one eventsvc server (one HTTP connection pool per thread).

    ``retries`` and ``backoff`` govern re-sends of appends and reconnects of ``follow``: the
    n-th retry waits about ``backoff * 2**n`` seconds (jittered, at most ``max_backoff``).
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 10.0, *,
                 retries: int = 5, backoff: float = 0.1, max_backoff: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._local = threading.local()

    def close(self) -> None:
        """Close this thread's connections (other threads' close when their threads end)."""
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None

    def __enter__(self) -> EventClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writes

    def append(self, session_id: str, event_or_events: Mapping[str, Any] | Sequence[Mapping[str, Any]], *,
               default_source: str | None = None) -> dict[str, Any] | list[dict[str, Any]]:
        """Append one event (returns its stored envelope) or a batch, atomically (returns the list).

        Events lacking an ``event_id`` get a UUID4 before the first attempt, so a retry after a
        timeout, a reset connection or a 502/503/504 is an idempotent re-send. 4xx answers are
        never retried: they raise at once. ``default_source`` fills ``source`` where an event
        has none (as the in-process store's ``append`` does). The caller's dicts are not changed.
        """
        single = isinstance(event_or_events, Mapping)
        events = [event_or_events] if single else list(event_or_events)
        prepared = []
        for event in events:
            event = dict(event)
            event.setdefault("event_id", str(uuid.uuid4()))
            if default_source is not None:
                event.setdefault("source", default_source)
            prepared.append(event)
        body = json.dumps(prepared[0] if single else prepared, ensure_ascii=False, allow_nan=False,
                          separators=(",", ":")).encode()
        answer = self._request("POST", f"/api/sessions/{_segment(session_id)}/events", data=body,
                               headers={"Content-Type": "application/json"}, retry=True)
        return answer if single else answer["events"]

    # -- reads

    def session_events(self, session_id: str, since_seq: int = 0, *, limit: int = 100,
                       types: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every event of the session after ``since_seq`` (only of ``types``, if given), a page at a time."""
        return self._pages(f"/api/sessions/{_segment(session_id)}/events", since_seq, limit, types)

    def run_events(self, run_id: str, since_seq: int = 0, *, limit: int = 100,
                   types: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every event of the run after ``since_seq`` (original session seqs), a page at a time."""
        return self._pages(f"/api/runs/{_segment(run_id)}/events", since_seq, limit, types)

    def _pages(self, path: str, since_seq: int, limit: int, types: Iterable[str] | None) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {"limit": min(limit, MAX_PAGE), **_types_param(types)}
        while True:
            page = self._request("GET", path, params={**params, "since_seq": since_seq}, retry=True)
            yield from page["events"]
            if not page["has_more"]:
                return
            since_seq = page["next_since_seq"]  # under a type filter it may lie past the last event

    # -- summaries

    def session(self, session_id: str) -> dict[str, Any]:
        """The session's summary; raises NotFound for an unknown session."""
        return self._request("GET", f"/api/sessions/{_segment(session_id)}", retry=True)

    def run(self, run_id: str) -> dict[str, Any]:
        """The run's summary (status, verify, counts, …); raises NotFound for an unknown run."""
        return self._request("GET", f"/api/runs/{_segment(run_id)}", retry=True)

    def sessions(self, *, limit: int = 100) -> Iterator[dict[str, Any]]:
        """Every session's summary, most recently appended-to first, fetched a page at a time."""
        return self._listing("/api/sessions", "sessions", {"limit": min(limit, MAX_PAGE)})

    def runs(self, *, status: str | Iterable[str] | None = None, session_id: str | None = None,
             limit: int = 100) -> Iterator[dict[str, Any]]:
        """Run summaries, most recently appended-to first, optionally of some statuses and/or one session."""
        params: dict[str, Any] = {"limit": min(limit, MAX_PAGE)}
        if status is not None:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        if session_id is not None:
            params["session_id"] = session_id
        return self._listing("/api/runs", "runs", params)

    def _listing(self, path: str, key: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self._request("GET", path, params={**params, **({"cursor": cursor} if cursor else {})},
                                 retry=True)
            yield from page[key]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def follow(self, session_id: str | None = None, run_id: str | None = None, since_seq: int = 0, *,
               until_seq: int | None = None, wait: bool = False, idle_timeout: float = 60.0,
               give_up_after: float | None = 300.0, types: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """The events after ``since_seq``, then each new one as it is appended, as envelopes.

        Reconnects with ``Last-Event-ID`` after a dropped connection, a silence longer than
        ``idle_timeout`` (the server sends keepalives) or a restart, so each event is yielded
        exactly once. Stops after the server's ``end`` message: a run's terminal event, or
        ``until_seq``. ``types`` keeps only events of those types (a run's stream still ends at
        its terminal event). Raises the mapped error for a 4xx (a 404 before the session exists,
        unless ``wait``), and ConnectionFailed once reconnects have failed for ``give_up_after``
        seconds in a row.
        """
        if (session_id is None) == (run_id is None):
            raise ValueError("follow needs exactly one of session_id and run_id")
        path = (f"/api/sessions/{_segment(session_id)}/events/stream" if session_id is not None
                else f"/api/runs/{_segment(run_id)}/events/stream")
        cursor = since_seq
        failures = 0
        failing_since: float | None = None
        retry_ms: int | None = None
        while True:
            params: dict[str, Any] = {"since_seq": cursor, **_types_param(types)}
            if until_seq is not None:
                params["until_seq"] = until_seq
            if wait:
                params["wait"] = 1
            headers = {"Accept": "text/event-stream"}
            if cursor:
                headers["Last-Event-ID"] = str(cursor)
            try:
                with self._session().get(self.base_url + path, params=params, headers=headers, stream=True,
                                         timeout=(self.timeout, idle_timeout)) as response:
                    if response.status_code != 200:
                        if response.status_code not in RETRY_STATUSES:
                            raise error_from_response(response.status_code, response.content)
                        raise _Retryable(f"HTTP {response.status_code}")
                    decoder = SSEDecoder()
                    for chunk in response.iter_content(chunk_size=None):
                        for message in decoder.feed(chunk):
                            if message.event == "end":
                                return
                            seq = int(message.id) if message.id is not None else cursor + 1
                            if seq <= cursor:
                                continue
                            cursor = seq
                            failures, failing_since = 0, None
                            yield json.loads(message.data)
                        retry_ms = decoder.retry_ms or retry_ms
                    failures, failing_since = 0, None
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    _Retryable) as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if give_up_after is not None and now - failing_since > give_up_after:
                    raise ConnectionFailed(f"cannot follow {path}: {exc}") from exc
            # Without ``end`` the stream was cut (or the server restarted): resume after the cursor.
            limit = self.max_backoff if retry_ms is None else max(retry_ms / 1000, self.backoff)
            time.sleep(_jittered(min(limit, self.backoff * 2 ** failures)))
            failures += 1

    # -- transport

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            if self.token:
                session.headers["Authorization"] = f"Bearer {self.token}"
            self._local.session = session
        return session

    def _request(self, method: str, path: str, *, retry: bool, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                response = self._session().request(method, self.base_url + path, timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if not retry or attempt >= self.retries:
                    raise ConnectionFailed(f"{method} {path}: {exc}") from exc
            else:
                if response.status_code < 400:
                    return response.json()
                if not retry or response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    raise error_from_response(response.status_code, response.content)
            time.sleep(_jittered(min(self.max_backoff, self.backoff * 2 ** attempt)))
            attempt += 1


class RemoteEmitter(EventEmitter):
    """The in-process ``EventEmitter``, appending through an ``EventClient``.

    ``emit`` has the same signature and honours the same ``run_scope`` (the run_id comes from
    ``eventsvc.emitter.current_run_id()`` unless passed), so agent code moves from an
    embedded store to the service by changing the line that builds its emitter. Errors are the
    client's exceptions, which are also the store's (a ValidationFailed is a ValueError).
    """

    def __init__(self, client: EventClient, source: str = "session") -> None:
        super().__init__(client, source)
        self.client = client


class _Retryable(Exception):
    pass


def _types_param(types: Iterable[str] | None) -> dict[str, str]:
    if types is None:
        return {}
    return {"types": types if isinstance(types, str) else ",".join(types)}


def _segment(identifier: str) -> str:
    return quote(identifier, safe="")


def _jittered(delay: float) -> float:
    return delay * (0.5 + random.random() / 2)
