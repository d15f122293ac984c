"""The gunicorn worker class of ``make run``: gthread that reads request headers in its event loop.

Plain gthread hands a connection to a thread as soon as it has a byte to read, and the thread
then blocks until the whole request has arrived. Anyone who can reach the port could hold every
thread with a few hundred connections that send one header line and wait (before any token is
checked). This worker buffers each request's headers in its event loop instead, without a
thread, and hands the connection to a thread only once they are complete:

- headers not complete within EVENTSVC_HEADER_TIMEOUT seconds: the connection is answered 408
  and closed, without ever having held a thread;
- a body that stalls (no byte for EVENTSVC_BODY_TIMEOUT seconds): the thread's read fails
  (a kernel receive timeout on the socket) and the request ends with 408, nothing stored;
- at most EVENTSVC_MAX_CONNECTIONS connections per worker (gunicorn's ``worker_connections``).

It also keeps keep-alive on while no request waits behind busy threads: idle keep-alive
connections wait in the poller without a thread, and a worker whose threads are all taken stops
accepting (and keeping connections alive), so new ones go to the other worker. A worker at its
cap of open streams (eventsvc.api.slots) stops accepting while another worker has room (``Board``),
so that a new connection, which may be one more stream, goes where it can be served.

Written against gunicorn 27's gthread worker (its TConn, enqueue_req, finish_request, handle,
_keepalive_after, set_accept_enabled, murder_keepalived, murder_pending and
wait_for_and_dispatch_events), hence the 27.x pin in setup.cfg; tests/test_worker.py and
tests/test_slow_clients.py check the behaviour from outside, on a real server.
"""
from __future__ import annotations

import errno
import json
import mmap
import selectors
import socket
import struct
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

from . import config

HEAD_ENDS = (b"\r\n\r\n", b"\n\n")
MAX_BUFFERED_HEAD = 64 * 1024  # past this, gunicorn's parser reads the rest (and answers 400 if too large)
DECLINE_RECHECK = 0.02


class ThreadFreeWorker(ThreadWorker):
    """gthread that reads headers without a thread and accepts only while a thread is free."""

    in_pool = 0  # connections submitted to the thread pool and not finished; changed on the main thread only

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = config.load()
        self.header_timeout: float = settings["HEADER_TIMEOUT"]
        self.body_timeout: float = settings["BODY_TIMEOUT"]
        self.reading_heads: dict[Any, float] = {}  # connection -> deadline, in deadline order
        self.board_index: int | None = getattr(self, "board_index", None)  # set by the master's pre_fork
        self._slots: Any = None

    # -- reading request heads in the event loop -------------------------------------------------

    def accept(self, listener: Any) -> None:
        if not self._accepting:  # a second listener's event of the same turn, after accepting stopped
            return
        if self._declining():
            self.set_accept_enabled(False)  # level-triggered: a listener left registered would spin
            return
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        # A blocking read in a thread (a request body) fails once nothing arrives for body_timeout.
        seconds = int(self.body_timeout)
        client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                               struct.pack("ll", seconds, int((self.body_timeout - seconds) * 1e6)))
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())
        self._read_head(conn)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection's next request begins: read its head here too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_head(conn)

    def _read_head(self, conn: Any) -> None:
        if self.cfg.is_ssl:  # TLS handshakes happen in the thread; gunicorn's own path
            self.enqueue_req(conn)
            return
        conn.head = bytearray()
        conn.sock.setblocking(False)
        self.reading_heads[conn] = time.monotonic() + self.header_timeout
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_bytes, conn))

    def _on_head_bytes(self, conn: Any, _sock: Any) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before finishing its request
            self._stop_reading_head(conn)
            self.nr_conns -= 1
            conn.close()
            return
        conn.head += data
        if len(conn.head) > MAX_BUFFERED_HEAD or any(end in conn.head for end in HEAD_ENDS):
            self._stop_reading_head(conn)
            conn.data_ready = True
            self.enqueue_req(conn)

    def _stop_reading_head(self, conn: Any) -> None:
        self.reading_heads.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (OSError, KeyError, ValueError):
            pass

    def murder_pending(self) -> None:
        """Close connections whose headers did not arrive in time (all of them once stopping)."""
        super().murder_pending()
        now = time.monotonic()
        expired = []
        for conn, deadline in self.reading_heads.items():
            if deadline > now and self.alive:
                break
            expired.append(conn)
        for conn in expired:
            self._stop_reading_head(conn)
            if self.alive:
                _answer_quietly(conn.sock, 408, "request_timeout",
                                f"request headers not complete within {self.header_timeout:g} s")
            self.nr_conns -= 1
            conn.close()

    def handle(self, conn: Any) -> Any:
        """In a thread: give the parser the head bytes the event loop read, then serve as gthread does."""
        head = getattr(conn, "head", None)
        if head is not None:
            conn.head = None
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(bytes(head))
        return super().handle(conn)

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        try:
            return super()._keepalive_after(conn, keepalive)
        except OSError:
            return False  # the rest of a body stalled past the receive timeout: drop the connection

    # -- keeping threads free ---------------------------------------------------------------------

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

    def enqueue_req(self, conn: Any) -> None:
        self.in_pool += 1
        if self.saturated:
            self.set_accept_enabled(False)
            self._publish_room()
        super().enqueue_req(conn)

    def finish_request(self, *args: Any) -> None:
        """Runs on the main thread, once for each ``enqueue_req`` (it may enqueue the connection again)."""
        self.in_pool -= 1
        if self.in_pool == self.cfg.threads - 1:
            self._publish_room()
        super().finish_request(*args)

    def set_accept_enabled(self, enabled: bool) -> None:
        # The run loop asks again on every turn, so accepting resumes once a thread is free.
        super().set_accept_enabled(enabled and not self.saturated and not self._declining())

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self.reading_heads:
            timeout = min(timeout, 0.5)  # header deadlines are swept each turn
        if self._declining():
            timeout = min(timeout, DECLINE_RECHECK)  # take connections again once the others fill up
        super().wait_for_and_dispatch_events(timeout)

    # -- sharing stream room with the other workers ------------------------------------------------

    def run(self) -> None:
        self._slots = getattr(self.wsgi, "extensions", {}).get("eventsvc.stream_slots")
        if self._slots is not None and self.board_index is not None:
            self._slots.on_change = self._publish_room
            self._publish_room()
        super().run()

    def _publish_room(self) -> None:
        if self.board_index is not None:
            BOARD.set(self.board_index, room=not (self._slots.full or self.saturated))

    def _declining(self) -> bool:
        """At the stream cap while another worker has room: leave new connections (maybe streams) to it."""
        return (self._slots is not None and self.board_index is not None and self._slots.full
                and BOARD.others_have_room(self.board_index))


class Board:
    """One byte per worker, in memory the gunicorn master maps before forking and every worker shares.

    0: no live worker there; 1: that worker has room for another stream and a free thread; 2: it
    has not. A worker at its stream cap stops accepting while another has room, so a stream that
    one worker would refuse with 503 goes to a worker that can serve it. Set by the master
    (``claim`` in pre_fork, ``release`` when a worker exits, dead or alive) and by each worker.
    """

    SIZE = 4096

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, self.SIZE)

    def claim(self, taken: set[int]) -> int:
        """A byte for a worker about to boot: it will have room, so the others leave connections to it."""
        index = next(i for i in range(self.SIZE) if i not in taken)
        self._map[index] = 1
        return index

    def release(self, index: int | None) -> None:
        if index is not None:
            self._map[index] = 0

    def set(self, index: int, *, room: bool) -> None:
        self._map[index] = 1 if room else 2

    def others_have_room(self, index: int) -> bool:
        found = self._map.find(b"\x01")
        if found == index:
            found = self._map.find(b"\x01", index + 1)
        return found != -1


BOARD = Board()


def _answer_quietly(sock: Any, status: int, code: str, message: str) -> None:
    """Best effort, never blocking: tell a client why its connection closes."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (f"HTTP/1.1 {status} Request Timeout\r\nContent-Type: application/json\r\n"
            f"X-Content-Type-Options: nosniff\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    try:
        sock.send(head.encode() + body)
    except OSError:
        pass
