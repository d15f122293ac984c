"""The gunicorn worker class of ``make run``: gthread, accepting a connection only while a thread is free.

Plain gthread caps the connections a worker holds at ``worker_connections``, idle keep-alive
ones included. A cap at ``threads`` turns keep-alive off altogether (every answer closes its
connection, and clients pay a new TCP handshake per request); a cap above it lets a worker
whose threads all hold event streams go on accepting requests it cannot start, while the
other worker idles. Counting the connections handed to the thread pool keeps both:
idle keep-alive connections wait in the poller without a thread, and a worker stops
accepting (and keeping connections alive) once every thread is taken.

Written against gunicorn 27's gthread worker (its enqueue_req, finish_request,
set_accept_enabled, murder_keepalived and max_keepalived), hence the 27.x pin in setup.cfg;
tests/test_worker.py checks the behaviour from outside, on a real server.
"""
from __future__ import annotations

from typing import Any

from gunicorn.workers.gthread import ThreadWorker


class ThreadFreeWorker(ThreadWorker):
    """gthread that stops accepting while all of its threads are busy (e.g. holding streams).

    While it is that full it also keeps no idle connection: each is closed (its client reconnects,
    to a worker with a free thread), so that no request waits in this worker for a stream to end.
    """

    in_pool = 0  # connections submitted to the thread pool and not finished; changed on the main thread only

    @property
    def saturated(self) -> bool:
        return self.in_pool >= self.cfg.threads

    @property
    def max_keepalived(self) -> int:
        """gthread's own limit, read as each answer is sent (the answering request still counts in
        ``in_pool``): none while requests wait for a thread."""
        return 0 if self.in_pool > self.cfg.threads else self._max_keepalived

    @max_keepalived.setter
    def max_keepalived(self, value: int) -> None:
        self._max_keepalived = value

    def murder_keepalived(self, force: bool = False) -> None:
        # Called once per turn of the main loop, after the poller's callbacks: a safe point.
        super().murder_keepalived(force=force or self.saturated)

    def accept(self, listener: Any) -> None:
        if self._accepting:  # a second listener's event of the same turn, after accepting stopped
            super().accept(listener)

    def enqueue_req(self, conn: Any) -> None:
        self.in_pool += 1
        if self.saturated:
            self.set_accept_enabled(False)
        super().enqueue_req(conn)

    def finish_request(self, *args: Any) -> None:
        """Runs on the main thread, once for each ``enqueue_req`` (it may enqueue the connection again)."""
        self.in_pool -= 1
        super().finish_request(*args)

    def set_accept_enabled(self, enabled: bool) -> None:
        # The run loop asks again on every turn, so accepting resumes once a thread is free.
        super().set_accept_enabled(enabled and not self.saturated)
