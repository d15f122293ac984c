"""AsyncEventClient: ``EventClient``'s surface for asyncio programs, over one ``httpx.AsyncClient``.

Same methods, same retries and the same exceptions; reads and ``follow`` are async iterators.
The request shapes, the retry policy and the follow cursor come from ``protocol``, so the two
clients cannot drift apart.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import httpx

from . import protocol
from .errors import ConnectionFailed, error_from_response
from .protocol import ClientSettings, Follow, RetryNotice


class AsyncEventClient(ClientSettings):
    """A client of one eventsvc server for one event loop; use as ``async with``.

    ``retries``, ``backoff`` and ``max_backoff`` mean what they mean for ``EventClient``.
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 10.0, *,
                 retries: int = 5, backoff: float = 0.1, max_backoff: float = 5.0) -> None:
        super().__init__(base_url, token, timeout, retries=retries, backoff=backoff, max_backoff=max_backoff)
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop _http belongs to

    async def close(self) -> None:
        """Close the connection pool; a later call opens a new one."""
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    aclose = close

    async def __aenter__(self) -> AsyncEventClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- writes

    async def append(self, session_id: str,
                     event_or_events: Mapping[str, Any] | Sequence[Mapping[str, Any]], *,
                     default_source: str | None = None) -> dict[str, Any] | list[dict[str, Any]]:
        """Append one event (returns its stored envelope) or a batch, atomically (returns the list).

        As ``EventClient.append``: event ids are given before the first attempt, so retries
        (connection errors, 502/503/504) are idempotent; a 4xx raises at once.
        """
        single, body = protocol.append_body(event_or_events, default_source)
        answer = await self._request("POST", protocol.append_path(session_id), content=body,
                                     headers={"Content-Type": "application/json"})
        return answer if single else answer["events"]

    async def _append_encoded(self, session_id: str, body: bytes, *, single: bool,
                              retries: int | None = None) -> list[dict[str, Any]]:
        """Append events already encoded (every one with its ``event_id``): a JSON array, or one event's
        object (``single``); ``retries`` in place of the client's own (the batching emitters retry themselves)."""
        answer = await self._request("POST", protocol.append_path(session_id), retries=retries, content=body,
                                     headers={"Content-Type": "application/json"})
        return [answer] if single else answer["events"]

    # -- reads

    def session_events(self, session_id: str, since_seq: int = 0, *, limit: int = 100,
                       types: str | Iterable[str] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every event of the session after ``since_seq`` (of ``types`` only, if given), a page at a time."""
        return self._pages(f"/api/sessions/{protocol.segment(session_id)}/events", since_seq, limit, types)

    def run_events(self, run_id: str, since_seq: int = 0, *, limit: int = 100,
                   types: str | Iterable[str] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every event of the run after ``since_seq`` (original session seqs; of ``types`` only, if given)."""
        return self._pages(f"/api/runs/{protocol.segment(run_id)}/events", since_seq, limit, types)

    async def _pages(self, path: str, since_seq: int, limit: int,
                     types: str | Iterable[str] | None) -> AsyncIterator[dict[str, Any]]:
        while True:
            page = await self._request("GET", path, params=protocol.page_params(since_seq, limit, types))
            for event in page["events"]:
                yield event
            if not page["has_more"]:
                return
            since_seq = page["next_since_seq"]

    async def session(self, session_id: str) -> dict[str, Any]:
        """The session's summary (NotFound when unknown)."""
        return await self._request("GET", f"/api/sessions/{protocol.segment(session_id)}")

    async def run(self, run_id: str) -> dict[str, Any]:
        """The run's summary (NotFound when unknown)."""
        return await self._request("GET", f"/api/runs/{protocol.segment(run_id)}")

    def sessions(self, *, limit: int = 100) -> AsyncIterator[dict[str, Any]]:
        """Every session's summary, most recently appended-to first, a page at a time."""
        return self._listing("/api/sessions", "sessions", {"limit": min(limit, protocol.MAX_PAGE)})

    def runs(self, *, session_id: str | None = None, status: str | Iterable[str] | None = None,
             limit: int = 100) -> AsyncIterator[dict[str, Any]]:
        """Run summaries (of one session, of some statuses), most recently appended-to first."""
        return self._listing("/api/runs", "runs", protocol.runs_params(session_id, status, limit))

    async def _listing(self, path: str, key: str, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        while True:
            page = await self._request("GET", path, params=params)
            for item in page[key]:
                yield item
            if page.get("next_cursor") is None:
                return
            params = {**params, "cursor": page["next_cursor"]}

    async def follow(self, session_id: str | None = None, run_id: str | None = None, since_seq: int = 0, *,
                     until_seq: int | None = None, wait: bool = False, idle_timeout: float = 60.0,
                     give_up_after: float | None = 300.0, on_retry: RetryNotice | None = None,
                     types: str | Iterable[str] | None = None) -> AsyncIterator[dict[str, Any]]:
        """As ``EventClient.follow``, as an async iterator: history, then live events, each once,
        resuming with ``Last-Event-ID`` across disconnects, restarts and 503s (``Retry-After``)."""
        state = Follow(protocol.stream_path(session_id, run_id), since_seq, until_seq=until_seq, wait=wait,
                       policy=self.retry_policy, give_up_after=give_up_after, on_retry=on_retry, types=types)
        timeout = httpx.Timeout(self.timeout, read=idle_timeout)
        while True:
            params, headers = state.request()
            try:
                async with self._client().stream("GET", state.path, params=params, headers=headers,
                                                 timeout=timeout) as response:
                    body = None if response.status_code == 200 else await response.aread()
                    delay = state.opened(response, body)
                    if delay is None:
                        async for sse in protocol.event_source(response).aiter_sse():
                            envelope = state.message(sse.event, sse.data, sse.id, sse.retry)
                            if envelope is not None:
                                yield envelope
                            elif state.finished:
                                return
                        delay = state.cut()
            except protocol.TRANSPORT_ERRORS as exc:
                delay = state.failed(protocol.describe(exc))
            await asyncio.sleep(delay)

    # -- transport

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is not None and self._loop is not loop:
            if not self._loop.is_closed():
                raise RuntimeError("this AsyncEventClient belongs to another event loop (not closed yet): "
                                   "use one client per loop")
            self._http = None  # its loop has ended (asyncio.run returned): its connections went with it
        if self._http is None:
            self._http = httpx.AsyncClient(**self._pool_options())
            self._loop = loop
        return self._http

    async def _request(self, method: str, path: str, *, retries: int | None = None, **kwargs: Any) -> Any:
        retries = self.retries if retries is None else retries
        attempt = 0
        while True:
            wait_at_least = None
            try:
                response = await self._client().request(method, path, **kwargs)
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
            await asyncio.sleep(self.retry_policy.delay(attempt, wait_at_least))
            attempt += 1
