"""eventsvc.client against a real gunicorn on loopback: appends, pages, errors, retries, follow,
the remote emitter and ``eventsvc tail``.

Lost answers, timeouts and 503s come from a real TCP relay standing between the client and the
server (where a load balancer would stand), never from a mocked transport.
"""
from __future__ import annotations

import contextvars
import inspect
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Server, start_server
from eventsvc import EventEmitter, EventStore, errors, run_scope
from eventsvc.client import (AsyncEventClient, BadRequest, ClientError, Conflict, ConnectionFailed, EventClient,
                             EventIdConflict, Forbidden, InsufficientStorage, NotFound, PayloadTooLarge, RemoteEmitter,
                             RunSessionConflict, SeqConflict, StorageUnavailable, StoreBusy, TooManyConnections,
                             Unauthorized, UnsupportedMediaType, ValidationFailed, error_from_response)

pytestmark = pytest.mark.slow

BOUND = 30  # seconds: a safety bound on every wait, never a measurement
WRITE_TOKEN, READ_TOKEN = "rw-token-for-tests", "ro-token-for-tests"
EVENTSVC = Path(sys.executable).with_name("eventsvc")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """A server with a write token, a read-only token and a small event size limit."""
    root = tmp_path_factory.mktemp("client")
    running = start_server(root / "data", root / "gunicorn.log", env={
        "EVENTSVC_API_TOKENS": WRITE_TOKEN, "EVENTSVC_READ_TOKENS": READ_TOKEN,
        "EVENTSVC_MAX_EVENT_BYTES": "4096", "EVENTSVC_SSE_KEEPALIVE": "0.5"})
    yield running
    running.stop()


@pytest.fixture
def client(server) -> Iterator[EventClient]:
    with EventClient(server.url, token=WRITE_TOKEN) as event_client:
        yield event_client


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# -- a relay that loses answers on purpose -------------------------------------------------------------


class Relay:
    """A TCP relay on 127.0.0.1 in front of a server, one request per connection.

    Scripted faults apply to the next connections in order: ``drop`` forwards the request, lets
    the server answer, and closes the connection instead of passing the answer on; ``hold``
    does the same but keeps the connection open until the client gives up; ``503`` answers
    503 itself. Other connections are relayed, streaming included. ``seen`` records each
    request's head and the status the server gave it (None when it never reached the server).
    """

    def __init__(self, upstream_url: str, faults: tuple[str, ...] = ()) -> None:
        self.upstream = upstream_url
        self.faults = deque(faults)
        self.seen: list[tuple[str, int | None]] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def requests(self, method: str) -> list[tuple[str, int | None]]:
        with self._lock:
            return [(head, status) for head, status in self.seen if head.startswith(method + " ")]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                fault = self.faults.popleft() if self.faults else None
            threading.Thread(target=self._serve, args=(conn, fault), daemon=True).start()

    def _serve(self, conn: socket.socket, fault: str | None) -> None:
        conn.settimeout(BOUND)
        with conn:
            request = _read_request(conn)
            if request is None:
                return
            head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            if fault == "503":
                self._record(head, None)
                body = b'{"error":{"code":"storage_unavailable","message":"the relay is draining"}}'
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                return
            host, port = self.upstream.rsplit("/", 1)[1].rsplit(":", 1)
            try:
                upstream = socket.create_connection((host, int(port)), timeout=BOUND)
            except OSError:
                self._record(head, None)
                return  # the server is down: the client sees its connection closed
            with upstream:
                upstream.sendall(request)
                first = upstream.recv(65536)
                status = int(first.split(b" ", 2)[1]) if first.startswith(b"HTTP/") else None
                self._record(head, status)
                if fault is None:
                    self._pipe(upstream, conn, first)
                    return
                while upstream.recv(65536):
                    pass  # the server has answered in full: the append is committed
                if fault == "hold":
                    try:
                        conn.recv(1)  # until the client times out and closes its end
                    except OSError:
                        pass

    def _record(self, head: str, status: int | None) -> None:
        with self._lock:
            self.seen.append((head, status))

    @staticmethod
    def _pipe(upstream: socket.socket, conn: socket.socket, first: bytes) -> None:
        data = first
        try:
            while data:
                conn.sendall(data)
                data = upstream.recv(65536)
        except OSError:
            pass


def _read_request(conn: socket.socket) -> bytes | None:
    """One HTTP request, rewritten to ``Connection: close`` so each attempt is its own connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
    length = next((int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return b"\r\n".join(lines + [b"Connection: close"]) + b"\r\n\r\n" + body


# -- append and pages -------------------------------------------------------------------------------------


def test_append_one_returns_the_stored_envelope_without_changing_the_callers_dict(client):
    session_id = new_id("one")
    event = {"type": "user_message", "payload": {"text": "hi"}}
    stored = client.append(session_id, event)
    assert event == {"type": "user_message", "payload": {"text": "hi"}}
    assert stored["seq"] == 1 and stored["session_id"] == session_id and stored["source"] == "api"
    assert uuid.UUID(stored["event_id"]).version == 4
    assert list(client.session_events(session_id)) == [stored]


def test_append_a_batch_returns_the_stored_list(client):
    session_id = new_id("batch")
    stored = client.append(session_id, [{"type": "status", "payload": {"i": i}} for i in range(3)]
                           + [{"type": "status", "event_id": "mine"}])
    assert [e["seq"] for e in stored] == [1, 2, 3, 4]
    assert stored[3]["event_id"] == "mine"
    assert len({e["event_id"] for e in stored}) == 4


def test_session_events_fetches_pages_lazily(client):
    session_id = new_id("pages")
    client.append(session_id, [{"type": "status", "payload": {"i": i}} for i in range(250)])
    events = client.session_events(session_id, limit=100)
    first = next(events)
    # Appended after the first page was read: a lazy iterator finds them on its later pages.
    client.append(session_id, [{"type": "status", "payload": {"late": i}} for i in range(5)])
    rest = list(events)
    assert [e["seq"] for e in [first, *rest]] == list(range(1, 256))
    assert list(client.session_events(session_id, since_seq=250)) == rest[-5:]


def test_run_events_iterate_only_the_runs_events_with_their_session_seqs(client):
    session_id, run_id = new_id("runpages"), new_id("run")
    events = []
    for i in range(130):
        events.append({"type": "tool_call", "run_id": run_id, "payload": {"i": i}} if i % 2
                      else {"type": "assistant_message", "payload": {"i": i}})
    client.append(session_id, events)
    seqs = [e["seq"] for e in client.run_events(run_id, limit=20)]
    assert seqs == list(range(2, 131, 2))
    assert [e["seq"] for e in client.run_events(run_id, since_seq=100, limit=7)] == list(range(102, 131, 2))


# -- errors --------------------------------------------------------------------------------------------------


def raises_from(call) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value


def test_validation_error_carries_field_details_and_is_a_value_error(client):
    error = raises_from(lambda: client.append(new_id("bad"), {"type": "no_such_type", "payload": []}))
    assert isinstance(error, ValidationFailed) and isinstance(error, ValueError)
    assert isinstance(error, errors.ValidationFailed)
    assert (error.status, error.code) == (422, "validation_error")
    assert {"type", "payload"} <= set(error.details)
    assert error.message


def test_batch_validation_error_details_are_keyed_by_index(client):
    session_id = new_id("badbatch")
    error = raises_from(lambda: client.append(session_id, [{"type": "status"}, {"type": "run_started"}]))
    assert isinstance(error, ValidationFailed)
    assert list(error.details) == ["1"] and "run_id" in error.details["1"]
    assert raises_from(lambda: list(client.session_events(session_id))).status == 404


def test_conflicts_map_to_their_own_classes(client):
    session_id, other, run_id = new_id("conf"), new_id("conf"), new_id("run")
    client.append(session_id, [{"type": "run_started", "run_id": run_id, "event_id": "e1"}])
    cases = [
        (lambda: client.append(session_id, {"type": "status", "seq": 99}), SeqConflict, "seq_conflict"),
        (lambda: client.append(session_id, {"type": "status", "event_id": "e1"}), EventIdConflict,
         "event_id_conflict"),
        (lambda: client.append(other, {"type": "tool_call", "run_id": run_id}), RunSessionConflict,
         "run_session_conflict"),
    ]
    for call, cls, code in cases:
        error = raises_from(call)
        assert type(error) is cls
        assert isinstance(error, Conflict) and isinstance(error, errors.Conflict)
        assert (error.status, error.code) == (409, code)
    assert [e["seq"] for e in client.session_events(session_id)] == [1]


def test_not_found_tokens_and_size_map_to_their_classes(server, client):
    reader = EventClient(server.url, token=READ_TOKEN)
    anonymous = EventClient(server.url)
    session_id = new_id("auth")
    client.append(session_id, {"type": "status"})
    cases = [
        (lambda: list(client.run_events(new_id("nope"))), NotFound, 404, "not_found"),
        (lambda: list(client.follow(session_id=new_id("nope"))), NotFound, 404, "not_found"),
        (lambda: anonymous.append(session_id, {"type": "status"}), Unauthorized, 401, "unauthorized"),
        (lambda: list(anonymous.session_events(session_id)), Unauthorized, 401, "unauthorized"),
        (lambda: reader.append(session_id, {"type": "status"}), Forbidden, 403, "forbidden"),
        (lambda: client.append(session_id, {"type": "status", "payload": {"x": "y" * 5000}}), PayloadTooLarge,
         413, "payload_too_large"),
    ]
    for call, cls, status, code in cases:
        error = raises_from(call)
        assert type(error) is cls, error
        assert (error.status, error.code) == (status, code)
    assert [e["seq"] for e in reader.session_events(session_id)] == [1]


@pytest.mark.parametrize(("status", "code", "cls"), [
    (400, "bad_request", BadRequest),
    (415, "unsupported_media_type", UnsupportedMediaType),
    (503, "storage_unavailable", StorageUnavailable),
    (503, "store_busy", StoreBusy),
    (503, "too_many_connections", TooManyConnections),
    (507, "insufficient_storage", InsufficientStorage),
    (409, "a_conflict_from_the_future", Conflict),
    (500, "internal_error", ClientError),
])
def test_error_answers_map_by_code_then_status(status, code, cls):
    body = json.dumps({"error": {"code": code, "message": "m", "details": {"f": ["x"]}}}).encode()
    error = error_from_response(status, body)
    assert type(error) is cls
    assert (error.status, error.code, error.message, error.details) == (status, code, "m", {"f": ["x"]})


@pytest.mark.parametrize("token", ["a\nb", "tok\r\nX-Injected: 1", " padded", "é"])
def test_a_token_that_cannot_go_in_a_header_is_refused_at_construction(token):
    for client_class in (EventClient, AsyncEventClient):
        with pytest.raises(ValueError, match="token"):
            client_class("http://127.0.0.1:1", token=token)


def test_an_error_answer_that_is_not_json_keeps_its_status():
    error = error_from_response(502, b"<html>bad gateway</html>")
    assert type(error) is ClientError and error.status == 502 and "bad gateway" in error.message


# -- retries -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "statuses"), [
    ("drop", [201, 200]),   # the answer was lost after the server stored the event
    ("hold", [201, 200]),   # no answer before the client's timeout
    ("503", [None, 201]),   # the relay refused it before the server saw it
])
def test_append_is_retried_and_the_event_is_stored_once(server, fault, statuses):
    relay = Relay(server.url, faults=(fault,))
    session_id = new_id(f"retry-{fault}")
    try:
        with EventClient(relay.url, token=WRITE_TOKEN, timeout=1.0, backoff=0.05) as retrying:
            stored = retrying.append(session_id, {"type": "user_message", "payload": {"text": "once"}})
        assert [status for _, status in relay.requests("POST")] == statuses
    finally:
        relay.close()
    with EventClient(server.url, token=WRITE_TOKEN) as direct:
        assert list(direct.session_events(session_id)) == [stored]


def test_a_batch_retried_after_a_lost_answer_is_stored_once(server):
    relay = Relay(server.url, faults=("drop", "drop"))
    session_id = new_id("retry-batch")
    try:
        with EventClient(relay.url, token=WRITE_TOKEN, backoff=0.05) as retrying:
            stored = retrying.append(session_id, [{"type": "status", "payload": {"i": i}} for i in range(3)])
        assert [status for _, status in relay.requests("POST")] == [201, 200, 200]
    finally:
        relay.close()
    with EventClient(server.url, token=WRITE_TOKEN) as direct:
        assert list(direct.session_events(session_id)) == stored


def test_client_errors_are_never_retried(server):
    relay = Relay(server.url)
    try:
        with EventClient(relay.url, token=WRITE_TOKEN, backoff=0.05) as retrying:
            with pytest.raises(ValidationFailed):
                retrying.append(new_id("noretry"), {"type": "no_such_type"})
            with pytest.raises(Unauthorized):
                EventClient(relay.url, backoff=0.05).append(new_id("noretry"), {"type": "status"})
        assert [status for _, status in relay.requests("POST")] == [422, 401]
    finally:
        relay.close()


def test_append_gives_up_with_connection_failed_when_nobody_answers():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    with EventClient(f"http://127.0.0.1:{port}", retries=2, backoff=0.01) as unreachable:
        error = raises_from(lambda: unreachable.append("s", {"type": "status"}))
    assert type(error) is ConnectionFailed and error.status is None


# -- follow -----------------------------------------------------------------------------------------------------


def test_follow_yields_history_then_live_events_and_stops_after_the_run_ends(client):
    session_id, run_id = new_id("follow"), new_id("run")
    history = client.append(session_id, [{"type": "run_started", "run_id": run_id},
                                         {"type": "user_message"}])
    followed = client.follow(run_id=run_id)
    assert next(followed) == history[0]
    live = client.append(session_id, [{"type": "tool_call", "run_id": run_id},
                                      {"type": "run_completed", "run_id": run_id},
                                      {"type": "status", "run_id": run_id}])
    assert list(followed) == live[:2]


def test_follow_a_session_from_since_seq_until_seq(client):
    session_id = new_id("followsession")
    stored = client.append(session_id, [{"type": "status", "payload": {"i": i}} for i in range(6)])
    assert list(client.follow(session_id=session_id, since_seq=2, until_seq=5)) == stored[2:5]


def test_follow_with_wait_waits_for_a_session_that_does_not_exist_yet(server, client):
    session_id = new_id("followwait")
    received: queue.Queue = queue.Queue()
    follower = EventClient(server.url, token=WRITE_TOKEN)
    thread = threading.Thread(target=lambda: received.put(list(follower.follow(session_id=session_id, wait=True,
                                                                                until_seq=2))), daemon=True)
    thread.start()
    stored = client.append(session_id, [{"type": "user_message"}, {"type": "status"}])
    assert received.get(timeout=BOUND) == stored


def test_follow_survives_server_restarts_and_yields_each_event_once(tmp_path: Path):
    data_dir, log = tmp_path / "data", tmp_path / "gunicorn.log"
    server = start_server(data_dir, log, env={"EVENTSVC_SSE_KEEPALIVE": "0.5"})
    relay = Relay(server.url)
    session_id = new_id("restart")
    received: queue.Queue = queue.Queue()
    follower = EventClient(relay.url, backoff=0.05)

    def follow() -> None:
        try:
            for envelope in follower.follow(session_id=session_id, until_seq=15):
                received.put(envelope)
        except BaseException as exc:  # handed to the test thread
            received.put(exc)
        received.put(None)

    def take(count: int) -> list[dict]:
        taken = [received.get(timeout=BOUND) for _ in range(count)]
        assert all(isinstance(item, dict) for item in taken), taken
        return taken

    try:
        with EventClient(server.url) as writer:
            stored = writer.append(session_id, [{"type": "status", "payload": {"i": i}} for i in range(5)])
        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        seen = take(5)
        for batch in (range(5, 10), range(10, 15)):
            server.stop(signal.SIGKILL)
            server = start_server(data_dir, log, env={"EVENTSVC_SSE_KEEPALIVE": "0.5"})
            relay.upstream = server.url
            with EventClient(server.url) as writer:
                stored += writer.append(session_id, [{"type": "status", "payload": {"i": i}} for i in batch])
            seen += take(5)
        assert received.get(timeout=BOUND) is None, "follow should stop at until_seq"
        thread.join(BOUND)
        assert seen == stored
        resumes = [head for head, _ in relay.requests("GET") if "last-event-id: " in head.lower()]
        assert any("Last-Event-ID: 5" in head for head in resumes)
        assert any("Last-Event-ID: 10" in head for head in resumes)
    finally:
        relay.close()
        server.stop()


# -- the remote emitter ------------------------------------------------------------------------------------------


def agent(emitter, session_id: str, run_id: str) -> None:
    """Agent code that knows nothing of where its events go."""
    emitter.emit(session_id, "user_message", {"text": "hi"})
    with run_scope(run_id):
        emitter.emit(session_id, "run_started")
        emitter.emit(session_id, "tool_call", {"name": "ls"}, source="tools")
        emitter.emit(session_id, "status", {"note": "elsewhere"}, run_id=f"{run_id}-side")
        with emitter.run_scope(f"{run_id}-inner"):
            emitter.emit(session_id, "run_started")
        contextvars.copy_context().run(emitter.emit, session_id, "state_update", {"k": 1})
        emitter.emit(session_id, "run_completed", event_id=f"{run_id}-done", timestamp="2026-01-02T03:04:05+01:00")
    emitter.emit(session_id, "assistant_message", {"text": "bye"})


def comparable(envelopes: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "timestamp" and (k != "event_id" or v.endswith("-done"))}
            for e in envelopes]


def test_remote_emitter_round_trips_like_the_in_process_emitter(server, client, tmp_path: Path):
    assert inspect.signature(RemoteEmitter.emit) == inspect.signature(EventEmitter.emit)
    session_id, run_id = new_id("emit"), new_id("run")
    remote = RemoteEmitter(client, source="agent")
    agent(remote, session_id, run_id)
    store = EventStore(tmp_path / "local")
    try:
        agent(EventEmitter(store, source="agent"), session_id, run_id)
        local = store.get_events_by_session(session_id, limit=1000)
    finally:
        store.close()
    over_http = list(client.session_events(session_id))
    assert comparable(over_http) == comparable(local)
    assert [(e["run_id"], e["source"]) for e in over_http] == [
        (None, "agent"), (run_id, "agent"), (run_id, "tools"), (f"{run_id}-side", "agent"),
        (f"{run_id}-inner", "agent"), (run_id, "agent"), (run_id, "agent"), (None, "agent")]
    assert over_http[6]["timestamp"] == "2026-01-02T02:04:05Z"
    assert [e["seq"] for e in client.run_events(run_id)] == [2, 3, 6, 7]


def test_remote_emitter_rejects_a_run_event_outside_any_scope_and_writes_nothing(client):
    session_id = new_id("emitbad")
    remote = RemoteEmitter(client)
    remote.emit(session_id, "user_message", {"text": "hi"})
    with pytest.raises(ValueError) as caught:
        remote.emit(session_id, "run_started")
    assert isinstance(caught.value, errors.ValidationFailed) and "run_id" in caught.value.details
    assert [e["seq"] for e in client.session_events(session_id)] == [1]
    assert list(client.session_events(session_id))[0]["source"] == "session"


def test_a_retried_emit_with_an_explicit_event_id_is_stored_once(server):
    relay = Relay(server.url, faults=("drop",))
    try:
        with EventClient(relay.url, token=WRITE_TOKEN, backoff=0.05) as retrying:
            session_id = new_id("emitretry")
            first = RemoteEmitter(retrying).emit(session_id, "user_message", event_id="chosen")
    finally:
        relay.close()
    with EventClient(server.url, token=WRITE_TOKEN) as direct:
        assert list(direct.session_events(session_id)) == [first]


# -- eventsvc tail ---------------------------------------------------------------------------------------------------


def tail(*args: str, token: str | None = WRITE_TOKEN, url: str | None = None) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key not in ("EVENTSVC_URL", "EVENTSVC_TOKEN")}
    if token is not None:
        env["EVENTSVC_TOKEN"] = token
    if url is not None:
        env["EVENTSVC_URL"] = url
    return subprocess.Popen([str(EVENTSVC), "tail", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True)


def lines_of(process: subprocess.Popen) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_tail_prints_json_lines_as_they_arrive_and_exits_0_when_the_run_ends(server, client):
    session_id, run_id = new_id("tail"), new_id("run")
    client.append(session_id, [{"type": "run_started", "run_id": run_id}, {"type": "user_message"}])
    process = tail("--run", run_id, url=server.url)
    try:
        lines = lines_of(process)
        first = lines.get(timeout=BOUND)
        client.append(session_id, [{"type": "tool_call", "run_id": run_id, "payload": {"name": "ls"}},
                                   {"type": "status"},
                                   {"type": "run_completed", "run_id": run_id}])
        printed = [first] + [line for line in iter(lambda: lines.get(timeout=BOUND), None)]
        assert process.wait(timeout=BOUND) == 0
    finally:
        process.kill()
        process.wait()
    assert [json.loads(line) for line in printed] == list(client.run_events(run_id))
    assert all(line.endswith("\n") and "\n" not in line[:-1] for line in printed)


def test_tail_pretty_prints_one_readable_line_per_event(server, client):
    session_id, run_id = new_id("pretty"), new_id("run")
    stored = client.append(session_id, [{"type": "run_started", "run_id": run_id},
                                        {"type": "tool_call", "run_id": run_id, "payload": {"text": "z" * 200}},
                                        {"type": "run_failed", "run_id": run_id}])
    process = tail("--run", run_id, "--pretty", "--url", server.url, "--since-seq", "1")
    out, err = process.communicate(timeout=BOUND)
    assert process.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    for line, envelope in zip(lines, stored[1:]):
        fields = line.split()
        assert fields[:4] == [str(envelope["seq"]), envelope["timestamp"], envelope["type"], run_id]
        assert len(line) < 200
    assert '"text":"zzz' in lines[0]


@pytest.mark.parametrize(("args", "token", "expected"), [
    (("--run", "no-such-run"), WRITE_TOKEN, "not_found"),
    (("--session", "s"), None, "unauthorized"),
    (("--session", "s", "--run", "r"), WRITE_TOKEN, "exactly one"),
    ((), WRITE_TOKEN, "exactly one"),
])
def test_tail_errors_exit_2_with_one_line(server, args, token, expected):
    process = tail(*args, "--url", server.url, token=token)
    out, err = process.communicate(timeout=BOUND)
    assert process.returncode == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and expected in err


def test_tail_says_it_cannot_connect_and_gives_up_with_exit_2_after_its_budget():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        dead = f"http://127.0.0.1:{placeholder.getsockname()[1]}"
    process = tail("--session", "s", "--give-up-after", "1", url=dead)
    out, err = process.communicate(timeout=BOUND)
    assert process.returncode == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) >= 2
    assert all("cannot connect" in line and "retrying in" in line and dead in line for line in lines[:-1])
    assert "gave up after 1 s" in lines[-1] and "cannot connect" in lines[-1]


def test_tail_waits_retry_after_when_the_server_has_too_many_streams():
    from test_async_client import BusyStreamServer

    busy = BusyStreamServer(busy=1)
    try:
        process = tail("--session", "s", url=busy.url)
        out, err = process.communicate(timeout=BOUND)
    finally:
        busy.close()
    assert process.returncode == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [{"seq": 1}, {"seq": 2}]
    assert "too_many_streams" in err and "retrying in 1.0 s" in err
    assert busy.arrivals[1] - busy.arrivals[0] >= 0.95


def test_every_client_error_is_the_matching_server_error():
    """Code written against the embedded store catches the client's errors unchanged: each client class
    is also the eventsvc.errors class that the server raises for the same code."""
    from eventsvc.client.errors import _ERROR_BY_CODE
    server_classes: dict[str, type] = {}
    for cls in vars(errors).values():  # in definition order: a code's base class comes first
        if isinstance(cls, type) and issubclass(cls, errors.EventSvcError):
            server_classes.setdefault(cls.code, cls)
    for code, cls in _ERROR_BY_CODE.items():
        if code == "too_many_connections":  # the worker's own answer, before the app: no class raises it
            continue
        server = {"payload_too_large": errors.EventTooLarge, "storage_unavailable": errors.StorageError,
                  "insufficient_storage": errors.StorageFull}.get(code, server_classes.get(code))
        assert server is not None, f"no server-side class for {code}"
        assert issubclass(cls, server), (cls, server)
