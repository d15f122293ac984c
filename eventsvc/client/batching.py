"""BatchingEmitter: ``EventEmitter.emit`` from many threads, sent as one array POST per session
per ``linger`` window instead of one POST (and one fsync) per event.

A dispatcher thread cuts due batches (``Batcher``) and hands them to a few sender threads; each
session has at most one batch in flight, so its events are stored in the order ``emit`` was
called. A sender that resolves a session's batch sends the session's next one itself when it is
due, unless another session's batch waits for a sender. Event ids are fixed at the emit, so a
batch re-sent after a lost answer, a 503 or a restart of the server is stored exactly once.
"""
from __future__ import annotations

import functools
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from ..emitter import EventEmitter
from . import batches
from .batches import Batcher, Pending
from .errors import ClientError, EmitterClosed
from .sync import EventClient


class BatchingEmitter(EventEmitter):
    """A thread-safe ``EventEmitter`` that batches: ``emit`` blocks until its event is stored and
    returns the envelope; ``emit_nowait`` returns a ``concurrent.futures.Future`` of it.

    One bad event fails only its own emit (with the server's error); the rest of its batch is
    stored. Connection errors and 502/503/504 are retried with jittered backoff for
    ``give_up_after`` seconds, then the batch's emits fail with ConnectionFailed. At most
    ``max_pending`` events wait at once: ``emit_nowait`` blocks for room beyond that. ``flush()``
    waits for everything emitted before it; ``close()`` (or leaving ``with``) flushes and stops,
    and any later emit raises EmitterClosed.
    """

    def __init__(self, client: EventClient, source: str = "session", *, linger: float = batches.DEFAULT_LINGER,
                 max_batch: int = batches.DEFAULT_MAX_BATCH, max_batch_bytes: int = batches.DEFAULT_MAX_BATCH_BYTES,
                 max_pending: int = batches.DEFAULT_MAX_PENDING, senders: int = 8,
                 give_up_after: float = batches.DEFAULT_GIVE_UP_AFTER) -> None:
        batches.check_limits(linger, max_batch, max_batch_bytes, max_pending, senders)
        super().__init__(client, source)
        self.client = client
        self.max_pending = max_pending
        self.give_up_after = give_up_after
        self._batcher = Batcher(linger=linger, max_batch=max_batch, max_batch_bytes=max_batch_bytes)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the dispatcher: a new head, a completion, flush, close
        self._room = threading.Condition(self._lock)  # emitters waiting for max_pending
        self._closed = False
        self._urgent = 0
        self._waiting_sends = 0  # batches handed to the sender pool that no sender has started yet
        self._senders = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="eventsvc-batch-send")
        self._dispatcher = threading.Thread(target=self._dispatch, name="eventsvc-batch-dispatch", daemon=True)
        self._dispatcher.start()
        # A program that ends without close() still sends what it emitted: the hook runs at
        # interpreter exit before the sender pool stops taking work (the one concurrent.futures uses).
        threading._register_atexit(functools.partial(_close_at_exit, weakref.ref(self)))  # type: ignore[attr-defined]

    def __enter__(self) -> BatchingEmitter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def emit(self, session_id: str, type: str, payload: dict[str, Any] | None = None, *,
             run_id: str | None = None, event_id: str | None = None, source: str | None = None,
             timestamp: str | None = None) -> dict[str, Any]:
        """Append one event with the next batch of its session; block until stored, return the envelope."""
        self._refuse_to_block("emit()")
        return self.emit_nowait(session_id, type, payload, run_id=run_id, event_id=event_id, source=source,
                                timestamp=timestamp).result()

    def emit_nowait(self, session_id: str, type: str, payload: dict[str, Any] | None = None, *,
                    run_id: str | None = None, event_id: str | None = None, source: str | None = None,
                    timestamp: str | None = None) -> Future[dict[str, Any]]:
        """Queue one event; the future resolves to its stored envelope or to its error."""
        event, line = batches.prepare(self.source, type, payload, run_id=run_id, event_id=event_id,
                                      event_source=source, timestamp=timestamp)
        future: Future[dict[str, Any]] = Future()
        future.set_running_or_notify_cancel()  # an emitted event cannot be taken back
        with self._lock:
            # A done-callback's emit does not wait for room: room is made by the thread it runs on.
            while not self._closed and self._batcher.pending >= self.max_pending \
                    and not self._on_own_sender():
                self._room.wait()
            if self._closed:
                raise EmitterClosed("this BatchingEmitter is closed: emit after close() is refused "
                                    "and the event was not sent")
            if self._batcher.add(session_id, Pending(event, line, future, time.monotonic())):
                self._wake.notify()
        return future

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything emitted so far at once and wait until each is stored or has failed; False
        when ``timeout`` ran out first."""
        self._refuse_to_block("flush()")
        with self._lock:
            futures = self._batcher.unresolved()
            self._urgent += 1
            self._wake.notify()
        try:
            return not wait(futures, timeout).not_done
        finally:
            with self._lock:
                self._urgent -= 1

    def close(self) -> None:
        """Flush, then stop the threads; later emits raise EmitterClosed. Idempotent.

        From a done-callback (which runs on a sender thread) it only closes: what is pending is
        still sent, and the next close() elsewhere (or the one at exit) waits for it."""
        with self._lock:
            self._closed = True
            self._wake.notify()
            self._room.notify_all()
        if self._on_own_sender():
            return
        if self._dispatcher is not threading.current_thread():
            self._dispatcher.join()
        self._senders.shutdown(wait=True)

    def _on_own_sender(self) -> bool:
        """Whether this thread is sending one of this emitter's batches (a done-callback runs there)."""
        return getattr(_sending, "emitter", None) is self

    def _refuse_to_block(self, what: str) -> None:
        """A done-callback runs on the sender that resolved its future: waiting there for a batch
        would wait for that very sender."""
        if self._on_own_sender():
            raise RuntimeError(f"{what} waits for stored events and cannot be called from a done-callback "
                               "of this BatchingEmitter (it runs on the thread that sends them): use emit_nowait()")

    # -- the dispatcher and the senders

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                while True:
                    now = time.monotonic()
                    due, next_due = self._batcher.take_due(now, urgent=self._urgent > 0 or self._closed)
                    if due:
                        break
                    if self._closed and self._batcher.pending == 0:
                        return
                    self._wake.wait(None if next_due is None else next_due - now)
                self._waiting_sends += len(due)
            for session_id, batch in due:
                self._senders.submit(self._send, session_id, batch)

    def _send(self, session_id: str, batch: list[Pending] | None) -> None:
        """Send the session's batch, then its next one while it is due and no other session's
        batch waits for a sender (so a busy session cannot keep a sender from the others)."""
        with self._lock:
            self._waiting_sends -= 1
        _sending.emitter = self
        try:
            self._send_chain(session_id, batch)
        finally:
            _sending.emitter = None

    def _send_chain(self, session_id: str, batch: list[Pending] | None) -> None:
        while batch is not None:
            sent = False
            try:
                self._send_batch(session_id, batch)
                sent = True
            finally:
                with self._lock:
                    self._batcher.done(session_id)
                    batch = None if not sent or self._waiting_sends else self._batcher.take_next(
                        session_id, time.monotonic(), urgent=self._urgent > 0 or self._closed)
                    self._wake.notify()
                    self._room.notify_all()

    def _send_batch(self, session_id: str, batch: list[Pending]) -> None:
        parts = deque([batch])
        while parts:
            part = parts.popleft()
            try:
                stored = self._append(session_id, part)
            except Exception as error:
                batches.settle_failed(part, error, parts)
            else:
                batches.settle_stored(part, stored)

    def _append(self, session_id: str, part: list[Pending]) -> list[dict[str, Any]]:
        """One POST, re-sent (the same events, the same ids) while the server cannot answer, until
        ``give_up_after`` seconds from the first attempt (one attempt at a time: the client's own
        retries would run past that)."""
        body, began, attempt = batches.body_of(part), time.monotonic(), 0
        while True:
            try:
                return self.client._append_encoded(session_id, body, single=len(part) == 1, retries=0)
            except ClientError as error:
                wait = batches.retry_wait(error, self.client.retry_policy, attempt, began, self.give_up_after)
                if wait is None:
                    raise
            time.sleep(wait)
            attempt += 1


_sending = threading.local()  # .emitter: the BatchingEmitter whose batch this thread is sending


def _close_at_exit(emitter: weakref.ref[BatchingEmitter]) -> None:
    alive = emitter()
    if alive is not None:
        alive.close()
