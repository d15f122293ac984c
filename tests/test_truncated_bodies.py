"""A body shorter than its Content-Length is a broken upload: 400 if the client still reads, and nothing stored.

Raw sockets against a real gunicorn, in both configurations the README allows: ``make run``'s
(eventsvc.gunicorn_conf, our gthread worker) and plain ``gunicorn -w 2 wsgi:app`` (sync workers).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import ROOT, Server, free_port, start_server

SINGLE = b'{"type": "status"}'
BATCH = b'[{"type": "status"}, {"type": "user_message", "payload": {"text": "hi"}}]'


def start_plain_gunicorn(data_dir: Path, log_path: Path) -> Server:
    """``gunicorn -w 2 wsgi:app``: the default sync worker, no config of ours."""
    port = free_port()
    env = {**os.environ, "EVENTSVC_DATA_DIR": str(data_dir)}
    env.pop("GUNICORN_CMD_ARGS", None)
    gunicorn = Path(sys.executable).with_name("gunicorn")
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen([str(gunicorn), "-w", "2", "--bind", f"127.0.0.1:{port}",
                                    "--access-logfile", "-", "wsgi:app"],
                                   cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = Server(process, f"http://127.0.0.1:{port}", data_dir, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, server.log()
        try:
            if requests.get(server.url + "/healthz", timeout=5).status_code == 200:
                return server
        except requests.RequestException:  # not listening yet, or still booting on a busy machine
            time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise AssertionError(f"plain gunicorn did not answer:\n{server.log()}")


@pytest.fixture(scope="module", params=["make-run", "plain-gunicorn"])
def any_server(request, tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "make-run":
        server = start_server(root / "data", root / "gunicorn.log")
    else:
        server = start_plain_gunicorn(root / "data", root / "gunicorn.log")
    yield server
    server.stop()


def _connect(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=20)


def _head(session_id: str, declared: int) -> bytes:
    return (f"POST /api/sessions/{session_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n").encode()


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    raw = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        raw += chunk
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if sep and b"content-length:" in head.lower():
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(rest) >= length:
                break
    status = int(raw.split(b" ", 2)[1])
    return status, raw.partition(b"\r\n\r\n")[2]


def _events(server: Server, session_id: str) -> list[dict] | None:
    response = requests.get(f"{server.url}/api/sessions/{session_id}/events", timeout=10)
    return None if response.status_code == 404 else response.json()["events"]


@pytest.mark.parametrize("body", [SINGLE, BATCH], ids=["single", "batch"])
def test_a_short_body_from_a_client_still_reading_is_a_400_and_stores_nothing(any_server, body):
    session_id = f"half-{len(body)}-{time.monotonic_ns()}"
    with _connect(any_server) as sock:
        sock.sendall(_head(session_id, 500) + body)
        sock.shutdown(socket.SHUT_WR)  # the upload stops here; we still read the answer
        status, answer = _read_response(sock)
    assert status == 400, answer
    assert json.loads(answer)["error"]["code"] == "bad_request"
    assert _events(any_server, session_id) is None


@pytest.mark.parametrize("body", [SINGLE, BATCH], ids=["single", "batch"])
def test_a_short_body_from_a_client_that_went_away_stores_nothing(any_server, body):
    session_id = f"gone-{len(body)}-{time.monotonic_ns()}"
    sock = _connect(any_server)
    sock.sendall(_head(session_id, 500) + body)
    sock.close()  # a crash or a timeout mid-upload
    # The request is handled once the server sees the end of the stream; its access log line says so.
    deadline = time.monotonic() + 20
    while f"/api/sessions/{session_id}/events" not in any_server.log():
        assert time.monotonic() < deadline, any_server.log()[-2000:]
        time.sleep(0.05)
    assert _events(any_server, session_id) is None
    # The same session takes a complete append afterwards, as its first event.
    stored = requests.post(f"{any_server.url}/api/sessions/{session_id}/events", data=SINGLE,
                           headers={"Content-Type": "application/json"}, timeout=10)
    assert stored.status_code == 201 and stored.json()["seq"] == 1


def test_an_exact_body_still_appends(any_server):
    session_id = f"exact-{time.monotonic_ns()}"
    with _connect(any_server) as sock:
        sock.sendall(_head(session_id, len(SINGLE)) + SINGLE)
        status, answer = _read_response(sock)
    assert status == 201, answer
    assert [event["seq"] for event in _events(any_server, session_id)] == [1]
