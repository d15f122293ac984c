"""Slow and many clients cannot take the service down (a real ``make run`` server: 2 workers x 256 threads).

- 300 connections that send a request line and one header, then wait, hold no thread: a
  well-behaved client's /healthz and appends still answer within 1 s, and the slow ones are
  answered 408 and closed once EVENTSVC_HEADER_TIMEOUT passes.
- A body that stalls ends in 408 after EVENTSVC_BODY_TIMEOUT, with nothing stored.
- 300 event streams requested: each either streams or gets 503 too_many_streams with
  Retry-After at once, at least 200 stream, and short requests keep answering within 1 s.
"""
from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import Server, start_server

pytestmark = pytest.mark.slow
SLOW = 300
TARGET = 1.0  # the promise for a well-behaved client, in seconds


@pytest.fixture
def make_run_server(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log",
                          env={"EVENTSVC_HEADER_TIMEOUT": "3", "EVENTSVC_BODY_TIMEOUT": "1"})
    yield server
    server.stop()


def _address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    assert host == "127.0.0.1"
    return host, int(port)


def _timed(call) -> tuple[float, requests.Response]:
    started = time.monotonic()
    response = call()
    return time.monotonic() - started, response


def _well_behaved_requests_answer_in_time(server: Server, session_id: str) -> None:
    for _ in range(3):
        took, health = _timed(lambda: requests.get(server.url + "/healthz", timeout=10))
        assert health.status_code == 200 and took < TARGET, took
        took, append = _timed(lambda: requests.post(f"{server.url}/api/sessions/{session_id}/events",
                                                    json={"type": "status"}, timeout=10))
        assert append.status_code == 201 and took < TARGET, took


def _read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    received = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the connection was still open at the deadline ({received[:200]!r})")


def test_trickling_headers_hold_no_thread_and_are_closed_after_the_header_timeout(make_run_server):
    address = _address(make_run_server)
    slow = []
    try:
        for _ in range(SLOW):
            sock = socket.create_connection(address, timeout=10)
            sock.sendall(b"POST /api/sessions/x/events HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append(sock)
        opened = time.monotonic()
        _well_behaved_requests_answer_in_time(make_run_server, "fine")
        # Closed once the header timeout (3 s) has passed: answered 408, never served.
        deadline = opened + 3 + 10
        answers = [_read_until_closed(sock, deadline) for sock in slow]
        assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers[:3]
        assert json.loads(answers[0].partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
        assert time.monotonic() - opened >= 3 - 0.5  # not before the timeout
    finally:
        for sock in slow:
            sock.close()
    assert requests.get(f"{make_run_server.url}/api/sessions/x/events", timeout=10).status_code == 404


def test_a_stalled_body_ends_in_408_and_stores_nothing(make_run_server):
    with socket.create_connection(_address(make_run_server), timeout=10) as sock:
        sock.sendall(b"POST /api/sessions/stalled/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\": ")
        answer = _read_until_closed(sock, time.monotonic() + 15)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
    assert requests.get(f"{make_run_server.url}/api/sessions/stalled/events", timeout=10).status_code == 404


def _open_stream(address: tuple[str, int], session_id: str) -> tuple[socket.socket, int, dict[str, str]]:
    sock = socket.create_connection(address, timeout=10)
    sock.sendall(f"GET /api/sessions/{session_id}/events/stream?since_seq=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    lines = head.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return sock, int(lines[0].split()[1]), headers


def test_many_streams_leave_threads_for_short_requests(make_run_server):
    server = make_run_server
    requests.post(f"{server.url}/api/sessions/watched/events", json={"type": "status"}, timeout=10).raise_for_status()
    address = _address(server)
    streaming, refused = [], 0
    try:
        for number in range(SLOW):
            sock, status, headers = _open_stream(address, "watched")
            if status == 200:
                streaming.append(sock)
            else:
                assert status == 503, status
                assert headers["retry-after"] == "2"
                refused += 1
                sock.close()
            if number % 50 == 49:
                _well_behaved_requests_answer_in_time(server, "busy")
        assert len(streaming) >= 200, (len(streaming), refused)
        assert len(streaming) + refused == SLOW
        _well_behaved_requests_answer_in_time(server, "busy")
        # Every open stream is live: each receives the next event.
        stored = requests.post(f"{server.url}/api/sessions/watched/events", json={"type": "status"}, timeout=10)
        seq = stored.json()["seq"]
        deadline = time.monotonic() + 20
        for sock in streaming:
            received = b""
            while b"id: %d\n" % seq not in received:
                ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
                assert ready, f"a stream did not receive seq {seq}: {received[-300:]!r}"
                chunk = sock.recv(65536)
                assert chunk, received
                received += chunk
    finally:
        for sock in streaming:
            sock.close()


def test_head_requests_on_stream_routes_give_their_slots_back(make_run_server):
    """HEAD answers a stream route without iterating its body: the slot must still come back."""
    server = make_run_server
    requests.post(f"{server.url}/api/sessions/watched/events", json={"type": "status"}, timeout=10).raise_for_status()
    with requests.Session() as http:
        for _ in range(500):  # more than both workers' caps together (2 x 240)
            assert http.head(f"{server.url}/api/sessions/watched/events/stream", timeout=10).status_code == 200
    with requests.get(f"{server.url}/api/sessions/watched/events/stream", params={"until_seq": 1},
                      stream=True, timeout=10) as stream:
        assert stream.status_code == 200 and b"event: end" in stream.content


def test_a_pipelined_partial_request_is_read_in_the_loop_too(make_run_server):
    """A complete request followed by the start of another, then silence: the second is answered 408
    after the header timeout (3 s), never left to hold a thread."""
    with socket.create_connection(_address(make_run_server), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n")
        answers = _read_until_closed(sock, time.monotonic() + 15)
    assert answers.startswith(b"HTTP/1.1 200 ")
    assert b"HTTP/1.1 408 " in answers


def test_a_head_over_64_kib_is_a_431(make_run_server):
    with socket.create_connection(_address(make_run_server), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Filler: " + b"a" * 8000 + b"\r\n")
        for _ in range(9):
            sock.sendall(b"X-More: " + b"b" * 8000 + b"\r\n")
        answer = _read_until_closed(sock, time.monotonic() + 10)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_header_fields_too_large"


def test_a_head_over_64_kib_is_a_431_though_it_ends_in_the_same_read(make_run_server):
    head = (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + b"".join(b"X-More-%d: " % n + b"b" * 8000 + b"\r\n" for n in range(15)) + b"\r\n")  # ~120 KiB
    with socket.create_connection(_address(make_run_server), timeout=10) as sock:
        sock.sendall(head)
        answer = _read_until_closed(sock, time.monotonic() + 10)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]


def test_trickling_bodies_hold_no_thread(make_run_server):
    """300 requests with complete headers whose bodies arrive a byte at a time: read in the loop, so
    short requests still answer within 1 s; none of them is stored before its body is complete."""
    address = _address(make_run_server)
    slow = []
    try:
        for _ in range(SLOW):
            sock = socket.create_connection(address, timeout=10)
            sock.sendall(b"POST /api/sessions/trickle/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
            slow.append(sock)
        for _ in range(3):
            for sock in slow:
                sock.sendall(b" ")
            _well_behaved_requests_answer_in_time(make_run_server, "fine")
    finally:
        for sock in slow:
            sock.close()
    assert requests.get(f"{make_run_server.url}/api/sessions/trickle/events", timeout=10).status_code == 404


@pytest.mark.parametrize("framing", [
    b"Transfer-Encoding: chunked\r\n\r\nffffff\r\n",  # chunked: read by a thread
    b"Content-Length: 2000000\r\n\r\n",  # over 1 MiB: read by a thread
    b"Expect: 100-continue\r\nContent-Length: 2000\r\n\r\n",  # the thread sends the go-ahead
], ids=["chunked", "large", "expect-100"])
def test_a_body_a_thread_reads_that_trickles_ends_in_408_though_it_never_stalls(tmp_path: Path, framing: bytes):
    """A byte every 0.3 s never stalls for EVENTSVC_BODY_TIMEOUT (1 s), but is far below MIN_BODY_RATE:
    cut off soon after the timeout's grace, so such uploads cannot hold the threads for ever."""
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=1,
                          env={"EVENTSVC_THREADS": "8", "EVENTSVC_BODY_TIMEOUT": "1"})
    try:
        with socket.create_connection(_address(server), timeout=10) as sock:
            sock.sendall(b"POST /api/sessions/trickle/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\n" + framing)
            answer, began = b"", time.monotonic()
            while b"HTTP/1.1 4" not in answer and time.monotonic() < began + 15:
                try:
                    sock.sendall(b" ")
                except OSError:
                    pass  # answered and closed: the answer is there to read
                if select.select([sock], [], [], 0.3)[0]:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
        assert b"HTTP/1.1 408 " in answer, answer[:300]
        assert time.monotonic() - began < 10
        assert requests.get(f"{server.url}/api/sessions/trickle/events", timeout=10).status_code == 404
    finally:
        server.stop()


def test_each_chunked_body_on_a_kept_alive_connection_is_paced_afresh(tmp_path: Path):
    """The pace is one request's: idle time between requests, or many requests, count for nothing."""
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=1,
                          env={"EVENTSVC_THREADS": "8", "EVENTSVC_BODY_TIMEOUT": "1"})
    statuses = []
    try:
        with socket.create_connection(_address(server), timeout=10) as sock:
            for n in range(3):
                body = json.dumps({"type": "status", "payload": {"n": n}}).encode()
                sock.sendall(b"POST /api/sessions/kept/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                time.sleep(0.2)  # the body after the head: read by the thread, paced
                sock.sendall(b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
                answer = b""
                while b"\r\n\r\n" not in answer:
                    chunk = sock.recv(65536)
                    assert chunk, (statuses, answer)  # closed: an answer before it was the last
                    answer += chunk
                head, _, rest = answer.partition(b"\r\n\r\n")
                statuses.append(head.split(b" ")[1])
                assert statuses[-1] == b"201", (statuses, rest)
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(rest) < length:
                    rest += sock.recv(65536)
                time.sleep(1.5)  # idle on the kept-alive connection, past the body timeout
    finally:
        server.stop()
    assert statuses == [b"201"] * 3


def test_uploads_a_thread_reads_take_at_most_a_quarter_of_the_threads(tmp_path: Path):
    """12 chunked uploads trickling within the body timeout, on a worker of 8 threads: 2 of them get a
    thread, the rest wait without one, and short requests answer within 1 s meanwhile."""
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=1,
                          env={"EVENTSVC_THREADS": "8", "EVENTSVC_BODY_TIMEOUT": "6"})
    uploads = []
    try:
        for _ in range(12):
            sock = socket.create_connection(_address(server), timeout=10)
            sock.sendall(b"POST /api/sessions/trickle/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nffffff\r\n")
            uploads.append(sock)
        for _ in range(3):
            time.sleep(0.3)
            for sock in uploads:
                sock.sendall(b" ")
            _well_behaved_requests_answer_in_time(server, "fine")
        # Those that waited for a body thread, and then those reading (they stall now), end in 408.
        answers = [_read_until_closed(sock, time.monotonic() + 20) for sock in uploads]
        assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers[:2]
    finally:
        for sock in uploads:
            sock.close()
        server.stop()
    assert "no thread was free within 6 s to read the request body" in (tmp_path / "gunicorn.log").read_text()


def test_at_the_connection_cap_the_oldest_unfinished_request_makes_room(tmp_path: Path):
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=1,
                          env={"EVENTSVC_MAX_CONNECTIONS": "40", "EVENTSVC_THREADS": "8"})
    idle = []
    try:
        for _ in range(60):
            sock = socket.create_connection(_address(server), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            idle.append(sock)
        _well_behaved_requests_answer_in_time(server, "fine")
    finally:
        for sock in idle:
            sock.close()
        server.stop()


def test_the_stream_cap_follows_the_threads_gunicorn_really_has(tmp_path: Path):
    """`--threads 4` on the command line (EVENTSVC_THREADS left at 128): the cap is 4 less a reserve, so
    streams beyond it are refused and /healthz still answers."""
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=1,
                          env={"GUNICORN_CMD_ARGS": "--threads 4"})
    streams = []
    try:
        requests.post(f"{server.url}/api/sessions/w/events", json={"type": "status"}, timeout=10).raise_for_status()
        statuses = []
        for _ in range(6):
            sock, status, _headers = _open_stream(_address(server), "w")
            statuses.append(status)
            streams.append(sock)
        assert statuses == [200, 200, 200, 503, 503, 503], statuses
        _well_behaved_requests_answer_in_time(server, "fine")
    finally:
        for sock in streams:
            sock.close()
        server.stop()
