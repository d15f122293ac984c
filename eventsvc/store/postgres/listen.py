"""Wake readers when a session grows, on whichever host the append committed.

Each append NOTIFYs inside its transaction, so the notification leaves only when the events
are visible. One thread per process holds one LISTEN connection and wakes the waiters of the
sessions named. When that connection drops (PostgreSQL restarted), the thread reconnects and,
once listening again, re-reads the last seq of every watched session: a notification lost
while nobody listened delays no one. Waiters never touch the database while they wait.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

import psycopg

from ...errors import StorageError
from .writes import CHANNEL

log = logging.getLogger(__name__)
_POLL = 1.0  # how often the listener looks up from its socket to notice close()


class NotifyWatcher:
    def __init__(self, connect: Callable[[], psycopg.Connection],
                 last_seqs: Callable[[list[str]], dict[str, int]]) -> None:
        self._connect = connect
        self._last_seqs = last_seqs
        self._changed = threading.Condition()
        self._known: dict[str, int] = {}
        self._watched: Counter[str] = Counter()
        self._listener: threading.Thread | None = None
        self._closed = False
        self.reconnects = 0  # listening connections opened after the first (for tests and logs)

    def appended(self, session_id: str, last_seq: int) -> None:
        """Called after an append in this process committed: its waiters need not wait for the NOTIFY."""
        with self._changed:
            if session_id in self._watched and last_seq > self._known.get(session_id, 0):
                self._known[session_id] = last_seq
                self._changed.notify_all()

    def wait(self, session_id: str, after_seq: int, timeout: float) -> int:
        """Block until the session's last seq passes ``after_seq`` or ``timeout`` runs out; returns it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._watched[session_id] += 1
            self._start_listener()
        try:
            try:
                current = self._last_seqs([session_id]).get(session_id, 0)
            except StorageError:
                current = 0  # the server is away: wait, and let the caller's next read say so
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

    def _start_listener(self) -> None:
        """Started on first use, in the process that waits (a gunicorn worker, not its master)."""
        if self._listener is None or not self._listener.is_alive():
            self._listener = threading.Thread(target=self._listen_forever, name="eventsvc-pg-listener", daemon=True)
            self._listener.start()

    def _listen_forever(self) -> None:
        pause = 0.2
        first = True
        while not self._closed:
            try:
                conn = self._connect()
            except (StorageError, psycopg.Error) as exc:
                log.warning("LISTEN connection failed (%s); retrying in %.1fs", exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            if not first:
                self.reconnects += 1
            first = False
            pause = 0.2
            try:
                self._listen(conn)
            except (StorageError, psycopg.Error) as exc:
                log.warning("LISTEN connection lost (%s); reconnecting", exc)
            finally:
                conn.close()

    def _listen(self, conn: psycopg.Connection) -> None:
        conn.execute(f"LISTEN {CHANNEL}")
        self._catch_up()  # whatever committed while nobody listened
        while not self._closed:
            for notify in conn.notifies(timeout=_POLL):
                seq, _, session_id = notify.payload.partition(" ")
                with self._changed:
                    if session_id in self._watched and int(seq) > self._known.get(session_id, 0):
                        self._known[session_id] = int(seq)
                        self._changed.notify_all()

    def _catch_up(self) -> None:
        with self._changed:
            watched = list(self._watched)
        if not watched:
            return
        seqs = self._last_seqs(watched)
        with self._changed:
            for session_id, last_seq in seqs.items():
                if session_id in self._watched and last_seq > self._known.get(session_id, 0):
                    self._known[session_id] = last_seq
            self._changed.notify_all()
