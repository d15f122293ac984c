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
- a body read by a thread (chunked, over 1 MiB, or after ``Expect: 100-continue``): at most a
  quarter of the threads read such bodies at once (the others wait, holding no thread and read
  no further, until one is free or the body timeout ends them with 408), and once
  EVENTSVC_BODY_TIMEOUT has passed the body must have averaged MIN_BODY_RATE bytes a second
  (Apache's mod_reqtimeout MinRate), else 408 too: uploads trickled a byte a second cannot hold
  the threads short requests need;
- at most EVENTSVC_MAX_CONNECTIONS connections per worker (gunicorn's ``worker_connections``).

It also keeps keep-alive on while no request waits behind busy threads: idle keep-alive
connections wait in the poller without a thread, and a worker whose threads are all taken stops
accepting (and keeping connections alive), so new ones go to the other worker. A worker at its
cap of open streams (eventsvc.api.slots) stops accepting while another worker has room (``Board``),
so that a new connection, which may be one more stream, goes where it can be served. And a worker
that holds more connections than another worker with room leaves the next ones to it: the
kernel wakes every worker for a new connection and the first to call accept() wins, so without
this a few keep-alive clients (an agent backend's pool, a load generator) all land on the worker
that happened to be running and the other cores idle.

Written against gunicorn 27's gthread worker (its TConn, enqueue_req, finish_request, handle,
_keepalive_after, set_accept_enabled, murder_keepalived, murder_pending and
wait_for_and_dispatch_events), hence the 27.x pin in setup.cfg; tests/test_worker.py and
tests/test_slow_clients.py check the behaviour from outside, on a real server.
"""
from __future__ import annotations

import errno
import mmap
import select
import selectors
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Iterator
from functools import partial
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import TConn, ThreadWorker

from . import config
from .errors import SchemaMismatch
from .http_errors import count_refused, json_error

MAX_HEAD = 64 * 1024  # larger request heads are answered 431
MAX_LOOP_BODY = 1024 * 1024  # bodies up to this are read in the loop too; larger ones by the thread
MAX_BUFFERED_BODIES = 64 * 1024 * 1024  # body bytes one worker holds in its loop at most
# Bytes a second that a body read by a thread must average after the body timeout's grace: each
# byte received extends its deadline by 1/MIN_BODY_RATE s (a 32 MiB upload may take ~9 hours).
MIN_BODY_RATE = 1024
DECLINE_RECHECK = 0.02
# A worker that holds more connections than another leaves the next one to it for this long at
# most; past it, it accepts again, so a stuck neighbour can delay a connection, never strand it.
BALANCE_WAIT = 0.05
BALANCE_RECHECK = 0.005  # a balancing worker looks again this often: the other may have caught up
BALANCE_DISTRUST = 1.0


class ThreadFreeWorker(ThreadWorker):
    """gthread that reads headers without a thread and accepts only while a thread is free."""

    in_pool = 0  # connections submitted to the thread pool and not finished; changed on the main thread only

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = config.load()
        self.header_timeout: float = self.settings["HEADER_TIMEOUT"]
        self.body_timeout: float = self.settings["BODY_TIMEOUT"]
        self.reading: dict[Any, float] = {}  # connection -> deadline, in the order they started
        self.buffered = 0  # body bytes held in the loop, across connections
        self.body_threads = 0  # threads reading a request's body themselves (main thread's count)
        self.body_thread_cap = max(1, self.cfg.threads // 4)
        self.parked: deque[Any] = deque()  # heads whose body waits for a body thread, in arrival order
        self.board_index: int | None = getattr(self, "board_index", None)  # set by the master's pre_fork
        self._slots: Any = None
        self._balancing_since: float | None = None  # when this worker began leaving connections to another
        self._balancing_off_until = 0.0

    # -- reading requests in the event loop ---------------------------------------------------------

    def accept(self, listener: Any) -> None:
        if not self._accepting:  # a second listener's event of the same turn, after accepting stopped
            return
        if self._declining():
            self.set_accept_enabled(False)  # level-triggered: a listener left registered would spin
            return
        if self.nr_conns >= self.worker_connections and not self._evict_one():
            self.set_accept_enabled(False)
            return
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        # A blocking read in a thread (a chunked or large body) fails once nothing arrives for body_timeout.
        _set_receive_timeout(client_sock, self.body_timeout)
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())
        self._read_request(conn, b"")
        self._publish_room()
        if self._balancing(start=True):
            self.set_accept_enabled(False)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection's next request begins: read it here too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_request(conn, b"")

    def finish_request(self, conn: Any, fs: Any) -> None:
        """Runs on the main thread, once for each ``enqueue_req`` (it may enqueue the connection again).

        A client that pipelined part of its next request behind the last one: those bytes are
        read on in the event loop like any other request, never by a thread.
        """
        self.in_pool -= 1
        if self.in_pool == self.cfg.threads - 1:
            self._publish_room()
        if getattr(conn, "body_thread", False):
            conn.body_thread = False
            self.body_threads -= 1
            if self.parked:
                self._hand_over_body(self.parked.popleft())
        if (self.alive and not self.cfg.is_ssl and not fs.cancelled() and fs.exception() is None
                and fs.result() is True and conn.parser is not None):
            leftover = conn.parser.unreader.take_buffered()
            if leftover:
                self._read_request(conn, leftover)
                return
        super().finish_request(conn, fs)

    def _read_request(self, conn: Any, already: bytes) -> None:
        """Buffer a request's head (and a small body) without a thread; hand it over once complete."""
        if self.cfg.is_ssl:  # TLS handshakes happen in the thread; gunicorn's own path (see README)
            self.enqueue_req(conn)
            return
        conn.head = bytearray(already)
        conn.body_left = None  # bytes of body still to come, once the head is complete
        conn.sock.setblocking(False)
        self.reading[conn] = time.monotonic() + self.header_timeout
        if not self._advance(conn):
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))

    def _on_request_bytes(self, conn: Any, _sock: Any) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client stopped sending before finishing its request: nothing is stored
            if conn.body_left is not None:  # it may still read: say why (a body shorter than announced)
                _answer_quietly(conn.sock, 400, "bad_request",
                                f"the request body ended {conn.body_left} bytes short of its Content-Length; "
                                "nothing was stored", conn.head)
                self.log.info('%s "%s" 400: the body ended %d bytes short of its Content-Length; nothing stored',
                              _client(conn), _request_line(conn.head), conn.body_left)
            self._drop(conn)
            return
        conn.head += data
        if conn.body_left is not None:
            conn.body_left -= len(data)
            self.buffered += len(data)
            self.reading[conn] = time.monotonic() + self.body_timeout  # a stall, not a slow body, is the limit
        if self._advance(conn):
            self._stop_reading(conn)

    def _advance(self, conn: Any) -> bool:
        """Whether the connection left the loop (handed to a thread, or answered and closed)."""
        if conn.body_left is None:
            end = _head_end(conn.head)
            if end is None or end > MAX_HEAD:
                if end is None and len(conn.head) <= MAX_HEAD:
                    return False
                _answer_quietly(conn.sock, 431, "request_header_fields_too_large",
                                f"request headers are larger than {MAX_HEAD // 1024} KiB", conn.head)
                self._drop(conn)
                return True
            length = _small_body_length(bytes(conn.head[:end]))
            if length is None or self.buffered + length > MAX_BUFFERED_BODIES:
                return self._hand_over_body(conn)  # chunked, large or expecting 100-continue: a thread reads it
            conn.body_left = length - (len(conn.head) - end)
            self.buffered += len(conn.head) - end
            self.reading[conn] = time.monotonic() + self.body_timeout
        if conn.body_left > 0:
            return False
        return self._hand_over(conn)

    def _hand_over_body(self, conn: Any) -> bool:
        """Hand over a request whose body a thread reads, if fewer than ``body_thread_cap`` do; else
        park it (no thread, not read from) until one finishes, within the body timeout."""
        if self.body_threads >= self.body_thread_cap:
            conn.parked = True
            self.reading[conn] = time.monotonic() + self.body_timeout
            self.parked.append(conn)
            return True
        conn.parked = False
        conn.body_thread = True
        self.body_threads += 1
        return self._hand_over(conn)

    def _hand_over(self, conn: Any) -> bool:
        self.reading.pop(conn, None)
        if conn.body_left is not None:
            self.buffered -= len(conn.head) - _head_end(conn.head)
        conn.data_ready = True
        self.enqueue_req(conn)
        return True

    def _stop_reading(self, conn: Any) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (OSError, KeyError, ValueError):
            pass

    def _drop(self, conn: Any) -> None:
        if self.reading.pop(conn, None) is not None and conn.body_left is not None:
            self.buffered -= len(conn.head) - _head_end(conn.head)
        if getattr(conn, "parked", False):
            conn.parked = False
            self.parked.remove(conn)
        self._stop_reading(conn)
        self.nr_conns -= 1
        conn.close()

    def _evict_one(self) -> bool:
        """At the connection cap, make room: the oldest connection still sending its request goes,
        else the oldest idle kept-alive one, so that new clients are never locked out by old ones."""
        if self.reading:
            oldest = next(iter(self.reading))
            _answer_quietly(oldest.sock, 503, "too_many_connections",
                            "this worker is at its cap of open connections; retry", oldest.head)
            self._drop(oldest)
            return True
        if self.keepalived_conns:
            conn = self.keepalived_conns.popleft()
            self._stop_reading(conn)
            self.nr_conns -= 1
            conn.close()
            return True
        return False

    def murder_pending(self) -> None:
        """Close connections whose request did not arrive in time (all of them once stopping)."""
        super().murder_pending()
        now = time.monotonic()
        expired = [conn for conn, deadline in self.reading.items() if deadline <= now or not self.alive]
        for conn in expired:
            if self.alive:
                what = (f"no thread was free within {self.body_timeout:g} s to read the request body"
                        if getattr(conn, "parked", False)
                        else f"request headers not complete within {self.header_timeout:g} s" if conn.body_left is None
                        else f"request body stalled for {self.body_timeout:g} s")
                _answer_quietly(conn.sock, 408, "request_timeout", what, conn.head)
                self.log.info('%s "%s" 408: %s', _client(conn), _request_line(conn.head), what)
            self._drop(conn)

    def handle(self, conn: Any) -> Any:
        """In a thread: give the parser the head bytes the event loop read, then serve as gthread does."""
        head = getattr(conn, "head", None)
        paced = head is not None and conn.body_left is None  # the thread reads the body itself
        if head is not None:
            conn.head = None
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(bytes(head))
            if paced:
                _pace(conn.parser.unreader, conn.sock, self.body_timeout)
        try:
            return super().handle(conn)
        finally:
            if paced:  # a kept-alive connection keeps its parser: its next body is paced afresh, or not at all
                unreader = getattr(conn.parser, "unreader", None)
                if unreader is not None:
                    vars(unreader).pop("chunk", None)
                _set_receive_timeout(conn.sock, self.body_timeout)

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

    def set_accept_enabled(self, enabled: bool) -> None:
        # The run loop asks again on every turn, so accepting resumes once a thread is free. At the
        # connection cap it goes on accepting while it can make room (see _evict_one).
        enabled = enabled or bool(self.alive and (self.reading or self.keepalived_conns))
        super().set_accept_enabled(enabled and not self.saturated and not self._declining())

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        self._publish_room()  # every turn: a worker that stops turning soon counts as having no room
        if self.alive:
            # gthread's run loop asks again only when "under the cap" changes; a worker at its cap that
            # stopped accepting to decline or balance must still take connections once that ends.
            self.set_accept_enabled(self.nr_conns < self.worker_connections)
        if self.reading:
            timeout = min(timeout, 0.5)  # deadlines are swept each turn
        if self._declining():
            timeout = min(timeout, DECLINE_RECHECK)  # take connections again once the others fill up
        if self._balancing_since is not None:
            timeout = min(timeout, BALANCE_RECHECK)
        super().wait_for_and_dispatch_events(timeout)

    # -- sharing stream room with the other workers ------------------------------------------------

    def load_wsgi(self) -> None:
        """A database this release cannot serve stops the start with its message alone: exit code 3
        makes the master stop (gunicorn's "worker failed to boot"), without a traceback per worker."""
        try:
            super().load_wsgi()
        except SchemaMismatch as exc:
            self.log.error("%s", exc.message)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def run(self) -> None:
        self._slots = getattr(self.wsgi, "extensions", {}).get("eventsvc.stream_slots")
        if self._slots is not None:
            # The cap follows the threads this worker really has (--threads may differ from EVENTSVC_THREADS).
            self._slots.limit = config.stream_limit({**self.settings, "THREADS": self.cfg.threads})
            if self.board_index is not None:
                self._slots.on_change = self._publish_room
        self._publish_room()
        super().run()

    def _publish_room(self) -> None:
        if self.board_index is not None:
            full = self._slots is not None and self._slots.full
            if not self.alive:  # stopping: it accepts nothing more, so nothing may be left to it
                BOARD.set(self.board_index, room=False)
                return
            BOARD.set(self.board_index, room=not (full or self.saturated), connections=self.nr_conns)

    def _declining(self) -> bool:
        """At the stream cap while another worker has room, or holding more connections than another
        worker with room: leave new connections to it."""
        if self.board_index is None:
            return False
        if self._slots is not None and self._slots.full and BOARD.others_have_room(self.board_index):
            self._balancing_since = None  # declining already: no 5 ms re-checks for a balancing episode
            return True
        return self._balancing()

    def _balancing(self, *, start: bool = False) -> bool:
        """Whether to leave the next connection to a worker with room that holds fewer (``start``: begin
        now if so). Only for ``BALANCE_WAIT`` at a time; if a connection is still waiting then, the
        other worker is not taking any (stuck, or its loop slow to turn), and this one stops leaving
        connections to anyone for ``BALANCE_DISTRUST``."""
        if self.board_index is None:
            return False
        now = time.monotonic()
        if now < self._balancing_off_until:
            return False
        fewest = BOARD.fewest_connections_elsewhere(self.board_index)
        if fewest is None or self.nr_conns <= fewest:
            self._balancing_since = None
            return False
        if start:
            self._balancing_since = now
        if self._balancing_since is None:
            return False  # an episode ended: accept until the next connection starts one
        if now - self._balancing_since < BALANCE_WAIT:
            return True
        self._balancing_since = None
        if _waiting(self.sockets):
            self._balancing_off_until = now + BALANCE_DISTRUST
        return False


class Board:
    """Per worker, whether it has room for another stream, how many connections it holds, and when
    it last said so, in memory the gunicorn master maps before forking and every worker shares.

    A worker at its stream cap stops accepting while another has room, so that a stream one
    worker would refuse with 503 goes to a worker that can serve it. A worker says so on every
    turn of its loop (at least once a second); one that has not for ``STALE`` seconds (stopped,
    or stuck holding the interpreter lock) counts as having no room, so it can never make the
    others turn connections away. Slots are claimed by the master in pre_fork and freed when a
    worker exits, dead or alive. A booting worker has room for streams but no connection count
    (-1) until its loop runs: no worker balances connections to one still loading the app, but a
    worker at its stream cap does decline them to it, so new connections wait for its boot (at
    most ``STALE``).
    """

    SIZE = 256  # workers
    STALE = 3.0
    # room (0 none, 1 yes, 2 no), open connections (-1: not said yet), time.monotonic() of the last word
    _ENTRY = struct.Struct("=Bxxxid")

    # Before the entries: how many slots were ever claimed, so that a worker reads those alone
    # (it asks on every turn of its loop; all 256 cost ~8 µs a time, some 5% of a request).
    _USED = struct.Struct("=i12x")  # 16 bytes: the entries stay aligned

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, self._USED.size + self.SIZE * self._ENTRY.size)

    def claim(self, taken: set[int]) -> int:
        """A slot for a worker about to boot: it will have room, so the others leave streams to it."""
        index = next(i for i in range(self.SIZE) if i not in taken)
        self._write(index, 1, -1)
        if index >= self._used():
            self._USED.pack_into(self._map, 0, index + 1)
        return index

    def _used(self) -> int:
        return self._USED.unpack_from(self._map, 0)[0]

    def release(self, index: int | None) -> None:
        if index is not None:
            self._ENTRY.pack_into(self._map, self._USED.size + index * self._ENTRY.size, 0, -1, 0.0)

    def set(self, index: int, *, room: bool, connections: int = -1) -> None:
        self._write(index, 1 if room else 2, connections)

    def _write(self, index: int, room: int, connections: int) -> None:
        self._ENTRY.pack_into(self._map, self._USED.size + index * self._ENTRY.size, room, connections,
                              time.monotonic())

    def _others_with_room(self, index: int) -> Iterator[int]:
        """The connection counts of the other workers with room that spoke lately."""
        fresh_after = time.monotonic() - self.STALE
        end = self._USED.size + min(self._used(), self.SIZE) * self._ENTRY.size
        for other, (room, connections, said) in enumerate(self._ENTRY.iter_unpack(self._map[self._USED.size:end])):
            if other != index and room == 1 and said >= fresh_after:
                yield connections

    def others_have_room(self, index: int) -> bool:
        return any(True for _ in self._others_with_room(index))

    def fewest_connections_elsewhere(self, index: int) -> int | None:
        """The fewest connections another worker with room holds (None: no such worker has said)."""
        return min((n for n in self._others_with_room(index) if n >= 0), default=None)


BOARD = Board()


_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def _waiting(listeners: list[Any]) -> bool:
    """Whether a connection waits to be accepted on any of ``listeners``."""
    try:
        return bool(select.select(listeners, [], [], 0)[0])
    except (OSError, ValueError):
        return False


def _head_end(buffer: bytearray) -> int | None:
    """Where a request's head ends (after its blank line), or None while it is incomplete."""
    ends = [found + len(mark) for mark in (b"\r\n\r\n", b"\n\n") if (found := buffer.find(mark)) != -1]
    return min(ends) if ends else None


def _small_body_length(head: bytes) -> int | None:
    """The Content-Length of a body worth reading in the loop (0 without one); None leaves it to the thread.

    Chunked bodies, ``Expect: 100-continue`` (the client waits for a go-ahead only the thread
    sends), a malformed or repeated length (gunicorn's parser answers those) and large bodies
    all go to the thread, where a stall still ends the request (SO_RCVTIMEO).
    """
    length = None
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        name = name.strip().lower()
        if not sep:
            continue
        if name in (b"transfer-encoding", b"expect"):
            return None
        if name == b"content-length":
            value = value.strip()
            if length is not None or not (value.isdigit() and len(value) <= 12):
                return None
            length = int(value)
    if length is None:
        return 0
    return length if length <= MAX_LOOP_BODY else None


def _pace(unreader: Any, sock: Any, grace: float) -> None:
    """Make a thread's reads of one request's body fail (TimeoutError, answered 408 like a stall)
    once it is slower than MIN_BODY_RATE after ``grace`` seconds: each read waits at most until
    that deadline (or ``grace``, the stall limit, if sooner). Shadows the unreader's ``chunk`` for
    this request only (``handle`` removes it)."""
    started, received = time.monotonic(), 0
    read = unreader.chunk

    def chunk(size_hint: int | None = None) -> bytes:
        nonlocal received
        left = started + grace + received / MIN_BODY_RATE - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"request body slower than {MIN_BODY_RATE} bytes a second")
        _set_receive_timeout(sock, min(grace, left))
        data = read(size_hint)
        received += len(data)
        return data

    unreader.chunk = chunk


def _set_receive_timeout(sock: Any, seconds: float) -> None:
    """SO_RCVTIMEO: a blocking read that gets no byte for ``seconds`` fails with EAGAIN."""
    micros = max(1, round(seconds * 1e6))  # 0 would mean no limit at all
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", *divmod(micros, 1_000_000)))
    except OSError:
        pass  # closed meanwhile


def _request_line(head: bytearray) -> str:
    """Method and path of a request for the log (no query string: it may hold secrets), printable ASCII only."""
    line = bytes(head[:200]).split(b"\n", 1)[0].split(b"?", 1)[0].split(b" HTTP/", 1)[0]
    return "".join(chr(byte) if 32 <= byte < 127 and byte != 34 else "?" for byte in line)


def _client(conn: Any) -> str:
    return conn.client[0] if isinstance(conn.client, tuple) else str(conn.client)


def _answer_quietly(sock: Any, status: int, code: str, message: str, head: bytes | bytearray = b"") -> None:
    """Best effort, never blocking: tell a client why its connection closes (and count the answer)."""
    count_refused(status, code, bytes(head[:512]))
    try:
        sock.send(json_error(status, _REASONS[status], code=code, message=message))
    except OSError:
        pass
