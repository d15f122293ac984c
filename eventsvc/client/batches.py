"""What both batching emitters share and that does no I/O and takes no lock: per-session queues
of pending emits, which batch goes next, and what a failed batch means for each of its emits.

``BatchingEmitter`` (threads) and ``AsyncBatchingEmitter`` (asyncio) wrap it with their own
locking and transport, so both cut, order, split and retry alike.
"""
from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..emitter import make_event
from .errors import (BadRequest, ClientError, Conflict, ConnectionFailed, EventIdConflict, PayloadTooLarge,
                     RunSessionConflict, ValidationFailed)
from .protocol import MAX_BATCH, RetryPolicy, encode, retryable

DEFAULT_LINGER = 0.005
DEFAULT_MAX_BATCH = 500
DEFAULT_MAX_BATCH_BYTES = 1 << 20  # far below the server's default request limit (32 MiB); a 413 halves a batch
DEFAULT_MAX_PENDING = 100_000
DEFAULT_GIVE_UP_AFTER = 120.0


@dataclass(eq=False)
class Pending:
    """One emitted event waiting for its batch: the future gets its stored envelope or its error."""

    event: dict[str, Any]
    line: bytes  # the event as sent, encoded once at the emit
    future: Any  # concurrent.futures.Future or asyncio.Future
    since: float  # time.monotonic() of the emit


def prepare(source: str, type: str, payload: dict[str, Any] | None, *, run_id: str | None,
            event_id: str | None, event_source: str | None, timestamp: str | None) -> tuple[dict[str, Any], bytes]:
    """The event as it will be sent, and its JSON. The ``event_id`` is fixed here, at the
    emit, so every re-send of its batch is an idempotent replay: stored once whatever happens.
    Raises TypeError or ValueError at once for a payload JSON cannot carry."""
    event = make_event(type, payload, run_id=run_id, event_id=event_id, source=event_source, timestamp=timestamp)
    event.setdefault("event_id", str(uuid.uuid4()))
    event.setdefault("source", source)
    return event, encode(event)


def body_of(batch: list[Pending]) -> bytes:
    """The POST of a batch, from the JSON encoded at each emit: an array, or one event alone as the
    object itself, so that it meets exactly the server's answer (and its error's details) of a
    one-event POST, as through RemoteEmitter (an array also nests the event one level deeper)."""
    if len(batch) == 1:
        return batch[0].line
    return b"[" + b",".join(item.line for item in batch) + b"]"


def settle(future: Any, envelope: dict[str, Any] | None = None, *, error: BaseException | None = None) -> None:
    """Resolve an emit's future, unless its caller cancelled it (the event is sent all the same)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(envelope)


def settle_stored(part: list[Pending], stored: list[dict[str, Any]]) -> None:
    """Each emit gets its envelope (the answer lists them in batch order)."""
    if len(stored) != len(part):  # a server (or proxy) that answers another count: no emit can trust it
        error = ClientError(f"the server answered {len(stored)} envelopes for a batch of {len(part)}",
                            status=None, code="bad_answer")
        for item in part:
            settle(item.future, error=error)
        return
    for item, envelope in zip(part, stored):
        settle(item.future, envelope)


def settle_failed(part: list[Pending], error: Exception, parts: deque[list[Pending]]) -> None:
    """Fail the emits a batch's error is theirs, and put what should go again at the front of ``parts``."""
    if not isinstance(error, ClientError):  # an answer we cannot read: every emit of the part hears of it
        for item in part:
            settle(item.future, error=error)
        return
    failures, again = after_error(part, error)
    for item, item_error in failures:
        settle(item.future, error=item_error)
    parts.extendleft(reversed(again))


def check_limits(linger: float, max_batch: int, max_batch_bytes: int, max_pending: int, senders: int) -> None:
    if not 0 <= linger <= 60:
        raise ValueError("linger must be between 0 and 60 seconds")
    if not 1 <= max_batch <= MAX_BATCH:
        raise ValueError(f"max_batch must be between 1 and {MAX_BATCH} (the server's batch limit)")
    if max_batch_bytes < 1 or max_pending < 1 or senders < 1:
        raise ValueError("max_batch_bytes, max_pending and senders must be positive")


class Batcher:
    """Per-session FIFO queues in emit order, at most one batch in flight per session (so a
    session's events are stored in emit order), a batch cut when its first event has waited
    ``linger`` or when it is full (``max_batch`` events or ``max_batch_bytes``)."""

    def __init__(self, *, linger: float, max_batch: int, max_batch_bytes: int) -> None:
        self.linger = linger
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.pending = 0  # emitted, not yet resolved
        self._queues: dict[str, deque[Pending]] = {}
        self._in_flight: dict[str, list[Pending]] = {}

    def add(self, session_id: str, item: Pending) -> bool:
        """Queue one emit; True when the dispatcher should look again (a new head, or a full batch)."""
        queue = self._queues.get(session_id)
        if queue is None:
            queue = self._queues[session_id] = deque()
        queue.append(item)
        self.pending += 1
        return len(queue) == 1 or len(queue) == self.max_batch

    def take_due(self, now: float, *, urgent: bool) -> tuple[list[tuple[str, list[Pending]]], float | None]:
        """The batches to send now (marked in flight), and when the next one falls due (None: on
        the next emit or completion). ``urgent`` (flush, close) sends without lingering."""
        batches: list[tuple[str, list[Pending]]] = []
        next_due: float | None = None
        for session_id in list(self._queues):
            if session_id in self._in_flight:
                continue
            batch, due = self._take(session_id, now, urgent=urgent)
            if batch is not None:
                batches.append((session_id, batch))
            elif next_due is None or due < next_due:
                next_due = due
        return batches, next_due

    def done(self, session_id: str) -> None:
        """The session's batch is resolved (every future has its envelope or its error)."""
        self.pending -= len(self._in_flight.pop(session_id))

    def take_next(self, session_id: str, now: float, *, urgent: bool) -> list[Pending] | None:
        """The session's next batch if it is due already (marked in flight), else None. For the
        sender that has just resolved the session's batch: under load the next batch's events
        have waited through that whole POST, and handing them to the dispatcher and then to
        another sender would add two thread (or task) wake-ups to their wait."""
        if session_id in self._in_flight or session_id not in self._queues:
            return None
        return self._take(session_id, now, urgent=urgent)[0]

    def unresolved(self) -> list[Any]:
        """The futures of every emit not yet resolved, queued or in flight."""
        futures = [item.future for batch in self._in_flight.values() for item in batch]
        futures += [item.future for queue in self._queues.values() for item in queue]
        return futures

    def _take(self, session_id: str, now: float, *, urgent: bool) -> tuple[list[Pending] | None, float]:
        """(the session's next batch, marked in flight, or None; when its head falls due)."""
        queue = self._queues[session_id]
        due = queue[0].since + self.linger
        if not (urgent or due <= now or len(queue) >= self.max_batch):
            return None, due
        batch = self._in_flight[session_id] = self._cut(queue)
        if not queue:
            del self._queues[session_id]
        return batch, due

    def _cut(self, queue: deque[Pending]) -> list[Pending]:
        """The batch at the queue's head; it ends before an event_id it holds already, so a repeated
        id meets the stored event (a re-send, or event_id_conflict) as it would emitted alone."""
        batch = [queue.popleft()]
        ids = {batch[0].event["event_id"]}
        size = len(batch[0].line) + 2
        while queue and len(batch) < self.max_batch and size + len(queue[0].line) + 1 <= self.max_batch_bytes \
                and queue[0].event["event_id"] not in ids:
            size += len(queue[0].line) + 1
            ids.add(queue[0].event["event_id"])
            batch.append(queue.popleft())
        return batch


def worth_retrying(error: ClientError) -> bool:
    """No answer, or an answer that says "later" (502/503/504): the same batch is sent again."""
    return isinstance(error, ConnectionFailed) or retryable(error)


def retry_wait(error: ClientError, policy: RetryPolicy, attempt: int, began: float,
               give_up_after: float) -> float | None:
    """Seconds until the next attempt of a batch first sent at ``began`` (time.monotonic()), or None
    to give up: not worth retrying, or ``give_up_after`` spent. The wait (backoff, or a longer
    ``Retry-After``) never runs past the budget: the last attempt is made when it ends."""
    left = began + give_up_after - time.monotonic()
    if not worth_retrying(error) or left <= 0:
        return None
    return min(policy.delay(attempt, error.retry_after), left)


def after_error(batch: list[Pending], error: ClientError) -> tuple[list[tuple[Pending, ClientError]],
                                                                   list[list[Pending]]]:
    """(emits that fail, with their error; the parts of the batch to send next, in order).

    The server stores a batch all or none, so nothing of it was stored. A 422 names the bad
    events by batch index: those fail with their own details and the rest go again as one
    batch. A 409 names the run (run_session_conflict) or the event_id (event_id_conflict) at
    fault: the events that hold it fail, the rest go again. Another 400, 409, 413 or 422 does not
    say which event: the batch is halved until the one at fault stands alone. Any other error
    (401, 403, 507, ...) is every event's error.
    """
    if len(batch) == 1:
        return [(batch[0], error)], []
    named = _named_by_conflict(batch, error)
    if named:
        return [(item, error) for item in named], [[item for item in batch if item not in named]] \
            if len(named) < len(batch) else []
    if isinstance(error, ValidationFailed) and isinstance(error.details, dict):
        bad = {int(key) for key in error.details if str(key).isdigit() and int(key) < len(batch)}
        if bad and len(bad) == len(error.details):
            failures: list[tuple[Pending, ClientError]] = [
                (batch[i], ValidationFailed(error.message, error.details[str(i)], status=error.status,
                                            code=error.code)) for i in sorted(bad)]
            rest = [item for i, item in enumerate(batch) if i not in bad]
            return failures, [rest] if rest else []
    if isinstance(error, (ValidationFailed, BadRequest, Conflict, PayloadTooLarge)):
        middle = len(batch) // 2
        return [], [batch[:middle], batch[middle:]]
    return [(item, error) for item in batch], []


def _named_by_conflict(batch: list[Pending], error: ClientError) -> list[Pending]:
    """The events a 409 names through its details: those of its run, or the one with its event_id."""
    details = error.details if isinstance(error.details, dict) else {}
    if isinstance(error, RunSessionConflict) and isinstance(details.get("run_id"), str):
        return [item for item in batch if item.event.get("run_id") == details["run_id"]]
    if isinstance(error, EventIdConflict) and isinstance(details.get("event_id"), str):
        return [item for item in batch if item.event.get("event_id") == details["event_id"]]
    return []
