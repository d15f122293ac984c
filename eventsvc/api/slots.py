"""A worker's cap on open event streams and long-polls, so short requests always find a thread.

Each open stream or waiting long-poll holds a gunicorn thread. Without a cap, enough watchers
take every thread and appends, reads and ``/healthz`` queue until they time out. The cap
(EVENTSVC_MAX_STREAMS, below EVENTSVC_THREADS) leaves a reserve that only short requests use;
a stream or long-poll beyond it is answered at once with 503 ``too_many_streams`` and
``Retry-After``. The worker (eventsvc.worker) reads ``full`` to leave new connections to a
worker with room while this one is at its cap.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from collections.abc import Callable, Iterator

from flask import Flask, current_app

from ..errors import TooManyStreams

RETRY_AFTER_SECONDS = 2
EXTENSION = "eventsvc.stream_slots"


class StreamSlots:
    """A counting cap, per process (per worker); thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._lock = threading.Lock()
        self.on_change: Callable[[], None] | None = None  # the worker publishes its room to the others

    @property
    def full(self) -> bool:
        return self.in_use >= self.limit

    def take(self) -> None:
        """Take a slot or raise TooManyStreams; the caller must ``give_back`` exactly once."""
        with self._lock:
            if self.in_use >= self.limit:
                raise TooManyStreams(f"this worker already serves {self.limit} open streams and long-polls; "
                                     f"retry in {RETRY_AFTER_SECONDS} s", retry_after=RETRY_AFTER_SECONDS)
            self.in_use += 1
            if self.on_change is not None and self.in_use == self.limit:
                self.on_change()

    @contextmanager
    def held(self) -> Iterator[None]:
        """A slot for the length of a block (a long-poll): TooManyStreams if none is free."""
        self.take()
        try:
            yield
        finally:
            self.give_back()

    def give_back(self) -> None:
        with self._lock:
            self.in_use -= 1
            if self.on_change is not None and self.in_use == self.limit - 1:
                self.on_change()


def init_app(app: Flask, limit: int) -> None:
    app.extensions[EXTENSION] = StreamSlots(limit)


def slots() -> StreamSlots:
    return current_app.extensions[EXTENSION]


class Held:
    """A stream's frames holding a slot: given back once, when the frames end or the response closes.

    A response whose body is never iterated (HEAD, a client gone before the first byte) is only
    closed, and closing a generator that never started runs none of its ``finally``: so the
    response's close hook gives the slot back too, and whichever comes first wins.
    """

    def __init__(self, slot: StreamSlots, frames: Iterator[bytes]) -> None:
        self._slot = slot
        self._frames = frames
        self._held = True
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._frames
        finally:
            self.release()

    def release(self) -> None:
        with self._lock:
            if not self._held:
                return
            self._held = False
        self._slot.give_back()
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()
