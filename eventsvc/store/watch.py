"""Wake readers when a session grows, whichever process appended.

Appends made in this process wake waiters at once. Appends made by other processes (other
gunicorn workers, the CLI) are seen by one poller thread per process that asks SQLite for
``PRAGMA data_version`` every ``poll_interval`` seconds and, when it moved, re-reads the last
seq of the watched sessions only. Waiters never touch the database while they wait, and no
lock of the store is held while a reader waits or writes to a slow client.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

DEFAULT_POLL_INTERVAL = 0.05
log = logging.getLogger(__name__)


class AppendWatcher:
    def __init__(self, last_seqs: Callable[[list[str]], dict[str, int]], data_version: Callable[[], int],
                 *, poll_interval: float = DEFAULT_POLL_INTERVAL) -> None:
        self._last_seqs = last_seqs
        self._data_version = data_version
        self.poll_interval = poll_interval
        self._changed = threading.Condition()
        self._known: dict[str, int] = {}
        self._watched: Counter[str] = Counter()
        self._poller: threading.Thread | None = None
        self._closed = False

    def appended(self, session_id: str, last_seq: int) -> None:
        """Called after an append in this process committed."""
        with self._changed:
            if session_id in self._watched:
                self._known[session_id] = max(last_seq, self._known.get(session_id, 0))
                self._changed.notify_all()

    def wait(self, session_id: str, after_seq: int, timeout: float) -> int:
        """Block until the session's last seq passes ``after_seq`` or ``timeout`` runs out; returns it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._watched[session_id] += 1
            self._start_poller()
        try:
            # Watched first, then read, outside the lock: an append from now on is heard either way,
            # and the read (a database round trip on PostgreSQL, which may wait for a pooled
            # connection) holds up no other waiter's wake-up and no append's.
            current = self._last_seqs([session_id]).get(session_id, 0)
            with self._changed:
                self._known[session_id] = max(self._known.get(session_id, 0), current)
                while self._known.get(session_id, 0) <= after_seq and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.wait(remaining)
                return self._known.get(session_id, 0)
        finally:
            with self._changed:
                self._watched[session_id] -= 1
                if not self._watched[session_id]:
                    del self._watched[session_id]
                    self._known.pop(session_id, None)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _start_poller(self) -> None:
        if self._poller is None or not self._poller.is_alive():
            self._poller = threading.Thread(target=self._poll, name="eventsvc-append-watcher", daemon=True)
            self._poller.start()

    def _poll(self) -> None:
        while not self._closed:
            try:
                self._poll_forever()
            except Exception:  # noqa: BLE001 - a full or busy disk must not end the watching
                log.exception("append watcher: polling the index failed; retrying")
                time.sleep(1.0)

    def _poll_forever(self) -> None:
        version = None
        while not self._closed:
            time.sleep(self.poll_interval)
            # The version first, then who watches: a session watched only after this read has read its
            # own last seq after registering, and an append after this read moves the next version.
            current = self._data_version()
            with self._changed:
                watched = list(self._watched)
            if not watched:
                continue
            if current == version:
                continue
            version = current
            seqs = self._last_seqs(watched)
            with self._changed:
                for session_id, last_seq in seqs.items():
                    if session_id in self._watched and last_seq > self._known.get(session_id, 0):
                        self._known[session_id] = last_seq
                self._changed.notify_all()
