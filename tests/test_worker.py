"""The make-run worker class (eventsvc.worker): keep-alive on, and no request accepted by a worker with no free thread."""
from __future__ import annotations

import gc
import http.client
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


class Streams:
    """Open streams on session "busy" that end when told: each waits for one event past the last seq.

    Ending them with an append (rather than closing sockets) frees their server threads and stream
    slots deterministically: once a client has read a stream to its end, its slot is back.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.last_seq = 1
        self.open: list[requests.Response] = []

    def start(self) -> requests.Response:
        return requests.get(f"{self.server.url}/api/sessions/busy/events/stream",
                            params={"since_seq": self.last_seq, "until_seq": self.last_seq + 1},
                            headers={"Accept": "text/event-stream"}, stream=True, timeout=(BOUND, BOUND))

    def add(self) -> None:
        response = self.start()
        assert response.status_code == 200, response.content
        self.open.append(response)

    def end_all(self) -> None:
        requests.post(f"{self.server.url}/api/sessions/busy/events", json={"type": "user_message"},
                      headers={"Connection": "close"}, timeout=BOUND).raise_for_status()
        self.last_seq += 1
        for response in self.open:
            assert b"event: end" in response.content  # read to the end: the server is done with it
        self.open.clear()

    def close(self) -> None:
        for response in self.open:
            response.close()


@contextmanager
def _two_workers_of_three_threads(tmp_path: Path) -> Iterator[tuple[Server, Streams]]:
    """A server of 2 workers x 3 threads with at most 2 streams each (one thread kept for short
    requests), whose session "busy" holds one event."""
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=2,
                          env={"EVENTSVC_THREADS": "3", "EVENTSVC_MAX_STREAMS": "2"})
    streams = Streams(server)
    try:
        requests.post(f"{server.url}/api/sessions/busy/events", json={"type": "user_message"},
                      headers={"Connection": "close"}, timeout=BOUND).raise_for_status()
        yield server, streams
    finally:
        streams.close()
        server.stop()


def test_streams_up_to_both_workers_caps_all_start_and_the_next_is_a_503(tmp_path: Path):
    """2 workers x 2 stream slots: four streams opened one after another all start, whichever worker
    took which (a worker at its cap leaves new connections to the other), and a fifth gets 503
    too_many_streams with Retry-After at once, while /healthz is still answered."""
    with _two_workers_of_three_threads(tmp_path) as (server, streams):
        for _ in range(3):  # rounds: which worker wins each accept is a race, so try it more than once
            for _ in range(4):
                streams.add()
            extra = streams.start()
            assert extra.status_code == 503, extra.status_code
            assert extra.headers["Retry-After"] == "2"
            assert extra.json()["error"]["code"] == "too_many_streams"
            assert requests.get(server.url + "/healthz", timeout=BOUND).status_code == 200
            streams.end_all()


def test_a_kept_alive_connection_is_served_beside_streams(tmp_path: Path):
    """2 workers x 3 threads, four open streams: both workers at their stream cap. A pooled client's
    next request is answered on its kept-alive connection, by the thread kept for short requests."""
    with _two_workers_of_three_threads(tmp_path) as (server, streams), requests.Session() as client:
        for _ in range(3):
            assert client.get(server.url + "/healthz", timeout=BOUND).status_code == 200
            for _ in range(4):
                streams.add()
            for _ in range(5):
                assert client.get(server.url + "/healthz", timeout=BOUND).status_code == 200
            assert client.post(f"{server.url}/api/sessions/other/events", json={"type": "status"},
                               timeout=BOUND).status_code == 201
            streams.end_all()


def test_a_worker_freezes_what_loading_the_app_created():
    """What the app holds for the worker's life is out of the collector's reach (gc.freeze), so a
    full collection does not walk it while requests wait."""
    from eventsvc import gunicorn_conf

    assert gc.get_freeze_count() == 0
    try:
        gunicorn_conf.settle_heap()
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
