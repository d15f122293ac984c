"""EventClient: the eventsvc HTTP API from Python threads, over one ``httpx.Client`` pool.

Appends are safe to retry: every event gets its ``event_id`` before the first attempt, so a
re-send after a lost answer is an idempotent replay that the server stores once. ``follow``
reads the Server-Sent Events stream (httpx-sse) and reconnects by itself with
``Last-Event-ID``, so the caller sees every event exactly once across disconnects and restarts.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from ..emitter import EventEmitter
from . import protocol
from .errors import ConnectionFailed, error_from_response
from .protocol import ClientSettings, Follow, RetryNotice


class EventClient(ClientSettings):
    """A thread-safe client of one eventsvc server (one connection pool shared by all threads).

    ``retries``, ``backoff`` and ``max_backoff`` govern re-sends of appends and reconnects of
    ``follow`` (see ``RetryPolicy``); a 503's ``Retry-After`` is honoured when it is longer.
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 10.0, *,
                 retries: int = 5, backoff: float = 0.1, max_backoff: float = 5.0) -> None:
        super().__init__(base_url, token, timeout, retries=retries, backoff=backoff, max_backoff=max_backoff)
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None

    def close(self) -> None:
        """Close the connection pool; a later call opens a new one."""
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

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
        single, body = protocol.append_body(event_or_events, default_source)
        answer = self._request("POST", protocol.append_path(session_id), content=body,
                               headers={"Content-Type": "application/json"})
        return answer if single else answer["events"]

    def _append_encoded(self, session_id: str, body: bytes, *, single: bool,
                        retries: int | None = None) -> list[dict[str, Any]]:
        """Append events already encoded (every one with its ``event_id``): a JSON array, or one event's
        object (``single``); ``retries`` in place of the client's own (the batching emitters retry themselves)."""
        answer = self._request("POST", protocol.append_path(session_id), retries=retries, content=body,
                               headers={"Content-Type": "application/json"})
        return [answer] if single else answer["events"]

    # -- reads

    def session_events(self, session_id: str, since_seq: int = 0, *, limit: int = 100,
                       types: str | Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every event of the session after ``since_seq`` (of ``types`` only, if given), a page at a time."""
        return self._pages(f"/api/sessions/{protocol.segment(session_id)}/events", since_seq, limit, types)

    def run_events(self, run_id: str, since_seq: int = 0, *, limit: int = 100,
                   types: str | Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every event of the run after ``since_seq`` (original session seqs; of ``types`` only, if given)."""
        return self._pages(f"/api/runs/{protocol.segment(run_id)}/events", since_seq, limit, types)

    def _pages(self, path: str, since_seq: int, limit: int,
               types: str | Iterable[str] | None) -> Iterator[dict[str, Any]]:
        while True:
            page = self._request("GET", path, params=protocol.page_params(since_seq, limit, types))
            yield from page["events"]
            if not page["has_more"]:
                return
            since_seq = page["next_since_seq"]

    def session(self, session_id: str) -> dict[str, Any]:
        """The session's summary (NotFound when unknown)."""
        return self._request("GET", f"/api/sessions/{protocol.segment(session_id)}")

    def run(self, run_id: str) -> dict[str, Any]:
        """The run's summary (NotFound when unknown)."""
        return self._request("GET", f"/api/runs/{protocol.segment(run_id)}")

    def sessions(self, *, limit: int = 100) -> Iterator[dict[str, Any]]:
        """Every session's summary, most recently appended-to first, a page at a time."""
        return self._listing("/api/sessions", "sessions", {"limit": min(limit, protocol.MAX_PAGE)})

    def runs(self, *, session_id: str | None = None, status: str | Iterable[str] | None = None,
             limit: int = 100) -> Iterator[dict[str, Any]]:
        """Run summaries (of one session, of some statuses), most recently appended-to first."""
        return self._listing("/api/runs", "runs", protocol.runs_params(session_id, status, limit))

    def _listing(self, path: str, key: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        while True:
            page = self._request("GET", path, params=params)
            yield from page[key]
            if page.get("next_cursor") is None:
                return
            params = {**params, "cursor": page["next_cursor"]}

    def follow(self, session_id: str | None = None, run_id: str | None = None, since_seq: int = 0, *,
               until_seq: int | None = None, wait: bool = False, idle_timeout: float = 60.0,
               give_up_after: float | None = 300.0, on_retry: RetryNotice | None = None,
               types: str | Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """The events after ``since_seq``, then each new one as it is appended, as envelopes.

        Reconnects with ``Last-Event-ID`` after a dropped connection, a silence longer than
        ``idle_timeout`` (the server sends keepalives), a restart, or a 503 (``too_many_streams``
        waits its ``Retry-After``), so each event is yielded exactly once. Stops after the
        server's ``end`` message: a run's terminal event, or ``until_seq``. Raises the mapped
        error for a 4xx (a 404 before the session exists, unless ``wait``), and ConnectionFailed
        once reconnects have failed for ``give_up_after`` seconds in a row. ``on_retry`` hears
        of each failure before its wait.
        """
        state = Follow(protocol.stream_path(session_id, run_id), since_seq, until_seq=until_seq, wait=wait,
                       policy=self.retry_policy, give_up_after=give_up_after, on_retry=on_retry, types=types)
        timeout = httpx.Timeout(self.timeout, read=idle_timeout)
        while True:
            params, headers = state.request()
            try:
                with self._client().stream("GET", state.path, params=params, headers=headers,
                                           timeout=timeout) as response:
                    body = None if response.status_code == 200 else response.read()
                    delay = state.opened(response, body)
                    if delay is None:
                        for sse in protocol.event_source(response).iter_sse():
                            envelope = state.message(sse.event, sse.data, sse.id, sse.retry)
                            if envelope is not None:
                                yield envelope
                            elif state.finished:
                                return
                        delay = state.cut()
            except protocol.TRANSPORT_ERRORS as exc:
                delay = state.failed(protocol.describe(exc))
            time.sleep(delay)

    # -- transport

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(**self._pool_options())
            return self._http

    def _request(self, method: str, path: str, *, retries: int | None = None, **kwargs: Any) -> Any:
        retries = self.retries if retries is None else retries
        attempt = 0
        while True:
            wait_at_least = None
            try:
                response = self._client().request(method, path, **kwargs)
            except protocol.TRANSPORT_ERRORS as exc:
                if attempt >= retries:
                    raise ConnectionFailed(f"{method} {path}: {protocol.describe(exc)}") from exc
            else:
                if response.status_code < 400:
                    return response.json()
                wait_at_least = protocol.retry_after(response.headers)
                if response.status_code not in protocol.RETRY_STATUSES or attempt >= retries:
                    error = error_from_response(response.status_code, response.content)
                    error.retry_after = wait_at_least
                    raise error
            time.sleep(self.retry_policy.delay(attempt, wait_at_least))
            attempt += 1


class RemoteEmitter(EventEmitter):
    """The in-process ``EventEmitter``, appending through an ``EventClient`` (one POST per event).

    ``emit`` has the same signature and honours the same ``run_scope`` (the run_id comes from
    ``eventsvc.emitter.current_run_id()`` unless passed), so agent code moves from an
    embedded store to the service by changing the line that builds its emitter. Errors are the
    client's exceptions, which are also the store's (a ValidationFailed is a ValueError).
    """

    def __init__(self, client: EventClient, source: str = "session") -> None:
        super().__init__(client, source)
        self.client = client
