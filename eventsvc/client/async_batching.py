"""AsyncBatchingEmitter: ``BatchingEmitter`` for asyncio: ``await emit(...)`` from many tasks,
sent as one array POST per session per ``linger`` window.

A dispatcher task cuts due batches (``Batcher``, shared with the sync emitter) and starts one
sender task per batch, at most ``senders`` at once; each session has at most one batch in
flight, so its events are stored in the order ``emit`` was called. A sender that resolves a
session's batch sends the session's next one itself when it is due and a slot is free. All of
it runs on the event loop of the first emit: use one emitter per loop.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from ..emitter import run_scope
from . import batches
from .aio import AsyncEventClient
from .batches import Batcher, Pending
from .errors import ClientError, EmitterClosed


class AsyncBatchingEmitter:
    """The ``EventEmitter`` interface for asyncio, batching: ``await emit(...)`` returns the stored
    envelope; ``emit_nowait`` returns an ``asyncio.Future`` of it at once.

    Errors, retries, ``max_pending``, ``flush()`` and ``close()`` behave as in BatchingEmitter
    (``emit`` waits for room beyond ``max_pending``; ``emit_nowait`` never waits). Use as
    ``async with``.
    """

    run_scope = staticmethod(run_scope)

    def __init__(self, client: AsyncEventClient, source: str = "session", *,
                 linger: float = batches.DEFAULT_LINGER, max_batch: int = batches.DEFAULT_MAX_BATCH,
                 max_batch_bytes: int = batches.DEFAULT_MAX_BATCH_BYTES,
                 max_pending: int = batches.DEFAULT_MAX_PENDING, senders: int = 8,
                 give_up_after: float = batches.DEFAULT_GIVE_UP_AFTER) -> None:
        batches.check_limits(linger, max_batch, max_batch_bytes, max_pending, senders)
        self.client = client
        self.source = source
        self.max_pending = max_pending
        self.senders = senders
        self.give_up_after = give_up_after
        self._batcher = Batcher(linger=linger, max_batch=max_batch, max_batch_bytes=max_batch_bytes)
        self._closed = False
        self._urgent = 0
        self._dispatcher: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._slots = asyncio.Semaphore(senders)
        self._slot_waiters = 0  # _send tasks waiting for a slot: a sender then hands its slot on

    async def __aenter__(self) -> AsyncBatchingEmitter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def emit(self, session_id: str, type: str, payload: dict[str, Any] | None = None, *,
                   run_id: str | None = None, event_id: str | None = None, source: str | None = None,
                   timestamp: str | None = None) -> dict[str, Any]:
        """Append one event with the next batch of its session; returns the stored envelope."""
        while not self._closed and self._batcher.pending >= self.max_pending:
            self._room.clear()
            await self._room.wait()
        return await self.emit_nowait(session_id, type, payload, run_id=run_id, event_id=event_id,
                                      source=source, timestamp=timestamp)

    def emit_nowait(self, session_id: str, type: str, payload: dict[str, Any] | None = None, *,
                    run_id: str | None = None, event_id: str | None = None, source: str | None = None,
                    timestamp: str | None = None) -> asyncio.Future[dict[str, Any]]:
        """Queue one event (from a coroutine of the emitter's loop); the future resolves to its
        stored envelope or to its error."""
        if self._closed:
            raise EmitterClosed("this AsyncBatchingEmitter is closed: emit after close() is refused "
                                "and the event was not sent")
        event, line = batches.prepare(self.source, type, payload, run_id=run_id, event_id=event_id,
                                      event_source=source, timestamp=timestamp)
        loop = asyncio.get_running_loop()
        if self._dispatcher is None:
            self._dispatcher = loop.create_task(self._dispatch(), name="eventsvc-batch-dispatch")
        elif self._dispatcher.get_loop() is not loop:
            raise RuntimeError("this AsyncBatchingEmitter belongs to another event loop"
                               + (" that ended without close(): what was emitted there and not yet stored was "
                                  "never sent" if self._dispatcher.get_loop().is_closed() else "")
                               + "; use one emitter per loop and close it before the loop ends")
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        if self._batcher.add(session_id, Pending(event, line, future, time.monotonic())):
            self._wake.set()
        return future

    async def flush(self, timeout: float | None = None) -> bool:
        """Send everything emitted so far at once and wait until each is stored or has failed; False
        when ``timeout`` ran out first."""
        futures = self._batcher.unresolved()
        if not futures:
            return True
        self._urgent += 1
        self._wake.set()
        try:
            _, not_done = await asyncio.wait(futures, timeout=timeout)
            return not not_done
        finally:
            self._urgent -= 1

    async def close(self) -> None:
        """Flush, then stop the dispatcher; later emits raise EmitterClosed. Idempotent.

        Cancelling it (``asyncio.wait_for`` running out) stops only the wait: the dispatcher and the
        sends go on, and a later close() waits for them again."""
        self._closed = True
        self._wake.set()
        self._room.set()
        if self._dispatcher is not None:
            await asyncio.shield(self._dispatcher)
        if self._sending:
            await asyncio.shield(asyncio.gather(*self._sending))

    aclose = close

    # -- the dispatcher and the senders

    async def _dispatch(self) -> None:
        while True:
            self._wake.clear()
            now = time.monotonic()
            due, next_due = self._batcher.take_due(now, urgent=self._urgent > 0 or self._closed)
            for session_id, batch in due:
                task = asyncio.create_task(self._send(session_id, batch))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
            if self._closed and self._batcher.pending == 0:
                return
            if due:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), None if next_due is None else next_due - now)
            except asyncio.TimeoutError:
                pass

    async def _send(self, session_id: str, batch: list[Pending] | None) -> None:
        """Send the session's batch, then its next one while it is due and no other batch waits
        for a sender's slot (so a busy session cannot keep a slot from the others)."""
        while batch is not None:
            sent = False
            try:
                self._slot_waiters += 1
                try:
                    await self._slots.acquire()
                finally:
                    self._slot_waiters -= 1
                try:
                    await self._send_batch(session_id, batch)
                finally:
                    self._slots.release()
                sent = True
            finally:
                self._batcher.done(session_id)
                # Counted here, not read from Semaphore.locked(): before Python 3.11 that ignores waiters.
                batch = None if not sent or self._slot_waiters else self._batcher.take_next(
                    session_id, time.monotonic(), urgent=self._urgent > 0 or self._closed)
                self._wake.set()
                self._room.set()

    async def _send_batch(self, session_id: str, batch: list[Pending]) -> None:
        parts = deque([batch])
        while parts:
            part = parts.popleft()
            try:
                stored = await self._append(session_id, part)
            except Exception as error:
                batches.settle_failed(part, error, parts)
            else:
                batches.settle_stored(part, stored)

    async def _append(self, session_id: str, part: list[Pending]) -> list[dict[str, Any]]:
        """One POST, re-sent (the same events, the same ids) while the server cannot answer, as in
        BatchingEmitter."""
        body, began, attempt = batches.body_of(part), time.monotonic(), 0
        while True:
            try:
                return await self.client._append_encoded(session_id, body, single=len(part) == 1, retries=0)
            except ClientError as error:
                wait = batches.retry_wait(error, self.client.retry_policy, attempt, began, self.give_up_after)
                if wait is None:
                    raise
            await asyncio.sleep(wait)
            attempt += 1
