"""The make-run worker class (eventsvc.worker): keep-alive on, and no request accepted by a worker with no free thread."""
from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from conftest import Server, start_server

pytestmark = pytest.mark.slow
BOUND = 10.0


def _connection(server: Server) -> http.client.HTTPConnection:
    parts = urlsplit(server.url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=BOUND)


def test_one_connection_serves_many_requests(server: Server):
    connection = _connection(server)
    try:
        sockets = []
        for n in range(1, 6):
            connection.request("POST", "/api/sessions/ka/events", body=b'{"type":"user_message","payload":{}}',
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 201
            assert response.getheader("Connection", "").lower() != "close"
            assert b'"seq":%d' % n in response.read()
            sockets.append(connection.sock)
        assert all(sock is sockets[0] and sock is not None for sock in sockets), "the server closed the connection"
    finally:
        connection.close()


def test_an_idle_keep_alive_connection_holds_no_thread(tmp_path: Path):
    """With one worker of four threads, four idle keep-alive connections still leave room for new requests."""
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=1, env={"EVENTSVC_THREADS": "4"})
    idle = []
    try:
        for _ in range(4):
            connection = _connection(server)
            connection.request("GET", "/healthz")
            assert connection.getresponse().read()
            idle.append(connection)
        sockets = [connection.sock for connection in idle]
        for _ in range(10):
            assert requests.get(server.url + "/healthz", timeout=BOUND).status_code == 200
        for connection, sock in zip(idle, sockets):  # still alive, and served again
            connection.request("GET", "/healthz")
            assert connection.getresponse().read()
            assert sock is not None and connection.sock is sock
    finally:
        for connection in idle:
            connection.close()
        server.stop()


def _stream(server: Server, session_id: str) -> requests.Response:
    """A stream that stays open (it waits for events after seq 1), holding one server thread."""
    response = requests.get(f"{server.url}/api/sessions/{session_id}/events/stream", params={"since_seq": 1},
                            headers={"Accept": "text/event-stream"}, stream=True, timeout=(BOUND, BOUND))
    assert response.status_code == 200
    return response


@contextmanager
def _two_workers_of_two_threads(tmp_path: Path) -> Iterator[tuple[Server, list[requests.Response]]]:
    """A server of 2 workers x 2 threads whose session "busy" holds one event, and a list of the
    test's open streams, all closed at the end (short keepalives: a closed stream soon frees its thread)."""
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=2,
                          env={"EVENTSVC_THREADS": "2", "EVENTSVC_SSE_KEEPALIVE": "0.2"})
    streams: list[requests.Response] = []
    try:
        requests.post(f"{server.url}/api/sessions/busy/events", json={"type": "user_message"},
                      headers={"Connection": "close"}, timeout=BOUND).raise_for_status()
        yield server, streams
    finally:
        for stream in streams:
            stream.close()
        server.stop()


def _close_streams(server: Server, streams: list[requests.Response]) -> None:
    """Close them, then wait until a request is answered: each frees its thread at its next keepalive write."""
    for stream in streams:
        stream.close()
    streams.clear()
    assert requests.get(server.url + "/healthz", headers={"Connection": "close"}, timeout=BOUND).status_code == 200


def test_a_worker_whose_threads_all_hold_streams_leaves_new_connections_to_the_other(tmp_path: Path):
    """2 workers x 2 threads: four streams opened one after another all start, whichever worker took which.

    A worker that went on accepting with both threads taken would leave a stream (or any
    request) queued for a thread that frees only when a stream ends.
    """
    with _two_workers_of_two_threads(tmp_path) as (server, streams):
        for _ in range(3):  # rounds: which worker wins each accept is a race, so try it more than once
            for _ in range(4):
                streams.append(_stream(server, "busy"))
            _close_streams(server, streams)


def test_a_kept_alive_connection_is_not_left_waiting_behind_streams(tmp_path: Path):
    """2 workers x 2 threads, three open streams: one worker is full. A pooled client's next
    request is answered however its kept-alive connection fell: a full worker closes its idle
    connections, and the client's pool reconnects, to the worker with a free thread."""
    with _two_workers_of_two_threads(tmp_path) as (server, streams), requests.Session() as client:
        for _ in range(4):  # rounds: which worker holds the pooled connection is a race
            assert client.get(server.url + "/healthz", timeout=BOUND).status_code == 200
            streams += [_stream(server, "busy") for _ in range(3)]
            time.sleep(0.2)  # the full worker's loop turns: it closes its idle connections
            assert client.get(server.url + "/healthz", timeout=BOUND).status_code == 200
            _close_streams(server, streams)
