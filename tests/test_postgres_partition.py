"""A PostgreSQL server that stops answering mid-request (a partition, a hung proxy): the statement
timeout is the server's and cannot fire, so the store's own deadline must answer 503, and service
must resume by itself once the server answers again."""
from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from urllib.parse import urlsplit, urlunsplit

from eventsvc.errors import StorageError
from eventsvc.store import open_store


class HoldingProxy:
    """A TCP proxy on 127.0.0.1 to the test server that, while held, keeps every connection open and
    accepts new ones but forwards nothing: the peer is still there, and never answers."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.held = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                while self.held.is_set():
                    time.sleep(0.05)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for one in (source, sink):
                try:
                    one.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.held.clear()
        self.listener.close()
        for one in self._sockets:
            one.close()


@pytest.fixture
def proxy(pg_url: str) -> Iterator[tuple[HoldingProxy, str]]:
    parts = urlsplit(pg_url)
    holding = HoldingProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    user = f"{parts.username}@" if parts.username else ""
    yield holding, urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{holding.port}"))
    holding.close()


def test_a_server_that_stops_answering_mid_append_is_a_503_and_service_resumes(proxy):
    holding, url = proxy
    store = open_store(url, pool_size=2, connect_timeout=1.0, statement_timeout=1.0)
    try:
        assert store.append("s1", {"type": "user_message", "event_id": "e1"})["seq"] == 1
        holding.held.set()
        outcome: list[object] = []

        def append() -> None:
            try:
                outcome.append(store.append("s1", {"type": "user_message", "event_id": "e2"}))
            except StorageError as exc:
                outcome.append(exc)

        began = time.monotonic()
        attempt = threading.Thread(target=append, daemon=True)
        attempt.start()
        attempt.join(20)  # the deadline is 2 s (connect + statement timeout); without one it never ends
        assert not attempt.is_alive(), "the append waited on a server that does not answer"
        assert isinstance(outcome[0], StorageError) and "unavailable" in outcome[0].message
        assert time.monotonic() - began < 10
        with pytest.raises(StorageError):  # a new connection waits no longer than the connect timeout
            store.last_seq("s1")

        holding.held.clear()
        deadline = time.monotonic() + 20
        while True:  # resumes by itself: the cut-off connection was dropped, not handed out again
            try:
                again = store.append("s1", {"type": "user_message", "event_id": "e2"})
                break
            except StorageError:
                assert time.monotonic() < deadline, "service did not resume once the server answered"
                time.sleep(0.2)
        # Cut off before its commit left: nothing of it was stored, so the re-send is stored once.
        assert again["seq"] == 2 and store.last_seq("s1") == 2
        assert [json.loads(line)["event_id"] for line in store.read_page("s1").lines] == ["e1", "e2"]
    finally:
        holding.held.clear()
        store.close()
