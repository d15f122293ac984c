"""How the workers share connections (eventsvc.worker: ``_balancing``, ``_declining``, ``Board``):
evenly when a client opens several at once, and when one worker cannot take its share (stopped,
at its connection cap, at its stream cap, stopping) a new connection never waits for it."""
from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from conftest import Server, start_server

pytestmark = pytest.mark.slow
BOUND = 10.0
PROMPT = 3.0  # an answer within this is prompt; the bugs these tests guard against waited 8-12 s or forever


def _address(server: Server) -> tuple[str, int]:
    parts = urlsplit(server.url)
    return parts.hostname, parts.port


def _connection(server: Server) -> http.client.HTTPConnection:
    host, port = _address(server)
    return http.client.HTTPConnection(host, port, timeout=BOUND)


def _worker_pids(server: Server) -> list[int]:
    return [int(pid) for pid in re.findall(r"Worker ready \(pid: (\d+)\)", server.log())]


def _owner(server: Server, client: socket.socket) -> int | None:
    """The worker holding the server side of ``client``'s connection (from /proc: its socket inode)."""
    port = urlsplit(server.url).port
    wanted = f"0100007F:{port:04X} 0100007F:{client.getsockname()[1]:04X}"
    inode = None
    deadline = time.monotonic() + BOUND
    while inode is None and time.monotonic() < deadline:
        with open("/proc/net/tcp") as table:
            for line in table:
                fields = line.split()
                if f"{fields[1]} {fields[2]}" == wanted and fields[9] != "0":
                    inode = fields[9]
        if inode is None:
            time.sleep(0.01)
    for pid in _worker_pids(server):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
        except OSError:
            continue
    return None


def _healthz_answered_within(server: Server) -> float:
    """Seconds until a new connection's /healthz is answered (BOUND if it is not)."""
    started = time.monotonic()
    with socket.create_connection(_address(server), timeout=BOUND) as probe:
        probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        try:
            answer = probe.recv(100)
        except socket.timeout:
            return BOUND
    assert answer.startswith(b"HTTP/1.1 200"), answer
    return time.monotonic() - started


def test_a_worker_at_its_connection_cap_takes_new_connections_once_the_other_stops(tmp_path: Path):
    """Worker A holds its cap of connections (half-sent requests), B none; B is then stopped. A new
    connection is taken by A (evicting its oldest unfinished request), not left for B for ever:
    a worker at its cap that had stopped accepting to leave connections to B must look again."""
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=2,
                          env={"EVENTSVC_THREADS": "4", "EVENTSVC_MAX_CONNECTIONS": "6",
                               "EVENTSVC_HEADER_TIMEOUT": "60"})
    held: list[socket.socket] = []
    try:
        first = None
        for _ in range(100):  # connections until one worker holds 6 (those the other took are closed)
            client = socket.create_connection(_address(server), timeout=BOUND)
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
            owner = _owner(server, client)
            first = first or owner
            if owner == first:
                held.append(client)
            else:
                client.close()
            if len(held) == 6:
                break
            time.sleep(0.12)  # past the balancing window, so that A takes the next one again
        assert len(held) == 6
        other = next(pid for pid in _worker_pids(server) if pid != first)
        time.sleep(0.3)
        with _stopped(other):
            assert _healthz_answered_within(server) < PROMPT
    finally:
        for client in held:
            client.close()
        server.stop()


def test_a_worker_at_its_stream_cap_does_not_wait_for_a_stopping_neighbour(tmp_path: Path):
    """A is at its stream cap and B is told to stop (SIGTERM) while it still serves a stream, so it
    drains for up to its graceful timeout, accepting nothing. A stops leaving connections to B at
    once: a new request is answered now, not after B has drained."""
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=2,
                          env={"EVENTSVC_THREADS": "3", "EVENTSVC_MAX_STREAMS": "2"})
    streams: dict[int, list[socket.socket]] = {}
    try:
        requests.post(f"{server.url}/api/sessions/busy/events", json={"type": "user_message"},
                      headers={"Connection": "close"}, timeout=BOUND).raise_for_status()
        for _ in range(40):  # streams until one worker is at its cap (2) and the other holds one
            client = socket.create_connection(_address(server), timeout=BOUND)
            client.sendall(b"GET /api/sessions/busy/events/stream?since_seq=1 HTTP/1.1\r\nHost: x\r\n"
                           b"Accept: text/event-stream\r\n\r\n")
            head = client.recv(200)
            owner = _owner(server, client)
            if head.startswith(b"HTTP/1.1 200") and owner is not None and len(streams.get(owner, [])) < 2:
                streams.setdefault(owner, []).append(client)
            else:
                client.close()
            if len(streams) == 2 and sorted(map(len, streams.values())) == [1, 2]:
                break
        assert sorted(map(len, streams.values())) == [1, 2], {pid: len(held) for pid, held in streams.items()}
        stopping = next(pid for pid, held in streams.items() if len(held) == 1)
        time.sleep(0.3)
        os.kill(stopping, signal.SIGTERM)
        time.sleep(0.2)
        assert _healthz_answered_within(server) < PROMPT
    finally:
        for held in streams.values():
            for client in held:
                client.close()
        server.stop()


def test_keep_alive_connections_are_spread_over_the_workers(tmp_path: Path):
    """Eight keep-alive connections opened at once, as a load generator or a client's pool does,
    then used in turn: both workers get their share. Without balancing, the kernel wakes both
    workers for each connection and the first to call accept() takes it: often one takes all."""
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=2)
    connections = [_connection(server) for _ in range(8)]
    try:
        for connection in connections:
            connection.connect()
        for round in ("first", "again"):  # each served twice, on the same connection
            for n, connection in enumerate(connections):
                connection.request("GET", "/healthz", headers={"X-Request-Id": f"{round}-{n}"})
                assert connection.getresponse().read()
        served_by: dict[str, set[str]] = {}
        for line in server.log().splitlines():
            match = re.search(r'"GET /healthz" 200 \d+ \d+ms <(\d+)> rid=(first|again)-(\d)\b', line)
            if match:
                served_by.setdefault(match.group(3), set()).add(match.group(1))
        assert len(served_by) == 8 and all(len(pids) == 1 for pids in served_by.values()), served_by
        per_worker = Counter(next(iter(pids)) for pids in served_by.values())
        assert len(per_worker) == 2 and min(per_worker.values()) >= 3, per_worker
    finally:
        for connection in connections:
            connection.close()
        server.stop()


def test_a_stopped_worker_does_not_strand_the_connections_left_to_it(tmp_path: Path):
    """A worker that holds more connections leaves new ones to the other, but only while the other
    takes them: with the other stopped (SIGSTOP), new connections are still accepted and answered."""
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=2)
    pids = _worker_pids(server)
    held = []
    try:
        for n in range(10):  # kept-alive connections until both workers hold some
            connection = _connection(server)
            connection.request("GET", "/healthz", headers={"X-Request-Id": f"held-{n}"})
            assert connection.getresponse().read()
            held.append(connection)
            by_worker = Counter(_served_by(server, f"held-{i}") for i in range(len(held)))
            if len(by_worker) == 2:
                break
        assert len(by_worker) == 2, by_worker
        stopped = min(pids, key=lambda pid: by_worker[pid])  # the one the other would leave connections to
        with _stopped(stopped):
            for n in range(6):
                fresh = _connection(server)
                try:
                    fresh.request("GET", "/healthz", headers={"X-Request-Id": f"fresh-{n}"})
                    response = fresh.getresponse()
                    assert response.status == 200 and response.read()
                finally:
                    fresh.close()
                assert _served_by(server, f"fresh-{n}") != stopped
    finally:
        for connection in held:
            connection.close()
        server.stop()


@contextmanager
def _stopped(pid: int) -> Iterator[None]:
    """The worker ``pid`` stopped (SIGSTOP) while inside, and running again after, whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _served_by(server: Server, request_id: str) -> int:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        match = re.search(rf"<(\d+)> rid={re.escape(request_id)}\n", server.log())
        if match:
            return int(match.group(1))
        time.sleep(0.01)
    raise AssertionError(f"no access log line for {request_id}")
