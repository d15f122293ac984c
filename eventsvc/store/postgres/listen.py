"""Wake readers when a session grows, on whichever host the append committed.

Each append NOTIFYs inside its transaction, so the notification leaves only when the events
are visible. The waiting itself is the files backend's (``AppendWatcher``: waiters never touch
the database while they wait); only the wake-ups differ: instead of polling SQLite, one thread
per process holds one LISTEN connection and wakes the waiters of the sessions named. When that
connection drops (PostgreSQL restarted), the thread reconnects and, once listening again,
re-reads the last seq of every watched session: a notification lost while nobody listened
delays no one.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg

from ...errors import StorageError
from ..watch import AppendWatcher
from .writes import CHANNEL

log = logging.getLogger(__name__)
_POLL = 1.0  # how often the listener looks up from its socket to notice close()


class NotifyWatcher(AppendWatcher):
    def __init__(self, connect: Callable[[], psycopg.Connection],
                 last_seqs: Callable[[list[str]], dict[str, int]]) -> None:
        super().__init__(last_seqs, lambda: 0)
        self._connect = connect

    def _poll(self) -> None:
        """The watcher thread (started on first wait, in the process that waits): listen, reconnecting."""
        pause = 0.2
        while not self._closed:
            try:
                conn = self._connect()
            except (StorageError, psycopg.Error) as exc:
                log.warning("LISTEN connection failed (%s); retrying in %.1fs", exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            pause = 0.2
            try:
                self._listen(conn)
            except (StorageError, psycopg.Error) as exc:
                if not self._closed:
                    log.warning("LISTEN connection lost (%s); reconnecting", exc)
            except Exception:  # noqa: BLE001 - whatever happens, waiters must keep being woken
                log.exception("LISTEN thread failed; reconnecting")
                time.sleep(pause)
            finally:
                conn.close()

    def _listen(self, conn: psycopg.Connection) -> None:
        conn.execute(f"LISTEN {CHANNEL}")
        self._catch_up()  # whatever committed while nobody listened
        while not self._closed:
            for notify in conn.notifies(timeout=_POLL):
                seq, _, session_id = notify.payload.partition(" ")
                if seq.isascii() and seq.isdigit():  # anyone with access may NOTIFY this channel
                    self.appended(session_id, int(seq))

    def _catch_up(self) -> None:
        with self._changed:
            watched = list(self._watched)
        for session_id, last_seq in (self._last_seqs(watched) if watched else {}).items():
            self.appended(session_id, last_seq)
