"""gunicorn's logs: the request id on each access line; EVENTSVC_LOG_FORMAT=json; never a token."""
from __future__ import annotations

import json
import socket

import pytest
import requests

from conftest import start_server

TOKEN = "tok-SECRET-4f9a"


@pytest.mark.slow
def test_json_logs_are_one_object_per_line_with_the_request_and_no_secret(tmp_path):
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=1,
                          env={"EVENTSVC_LOG_FORMAT": "json", "EVENTSVC_API_TOKENS": TOKEN,
                               "EVENTSVC_FSYNC": "never"})  # never: so that the app itself logs a warning
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        requests.post(server.url + "/api/sessions/s1/events", json={"type": "user_message"},
                      headers={**auth, "X-Request-ID": "trace-1"}, timeout=10)
        requests.get(server.url + "/api/sessions/s1/events?since_seq=424242&limit=1",
                     headers={**auth, "X-Request-ID": "trace-2"}, timeout=10)
        requests.get(server.url + "/api/sessions/s1/events", headers={"Authorization": "Bearer wrong-SECRET-7",
                                                                      "X-Request-ID": TOKEN}, timeout=10)
    finally:
        server.stop()
    text = server.log()
    assert TOKEN not in text and "wrong-SECRET-7" not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    access = {line.get("request_id"): line for line in lines if "method" in line}
    read = access["trace-2"]
    assert {"time", "level", "request_id", "method", "path", "status", "duration_ms", "bytes"} <= set(read)
    assert (read["method"], read["path"], read["status"]) == ("GET", "/api/sessions/s1/events", 200)
    assert read["query_params"] == ["limit", "since_seq"] and "424242" not in json.dumps(read)
    assert read["bytes"] > 0 and read["duration_ms"] >= 0 and read["time"].endswith("Z")
    assert access["trace-1"]["status"] == 201
    refused = [line for line in access.values() if line["status"] == 401]
    assert len(refused) == 1 and refused[0]["request_id"] not in (None, TOKEN)
    assert any(line.get("level") == "info" and "Booting worker" in line.get("message", "") for line in lines)
    assert any(line.get("logger") == "eventsvc" and "EVENTSVC_FSYNC=never" in line["message"] for line in lines)


@pytest.mark.slow
def test_text_access_lines_carry_the_request_id(server):
    answer = requests.get(server.url + "/api/event-types?x=secret-value", headers={"X-Request-ID": "trace-7"},
                          timeout=10)
    generated = requests.get(server.url + "/healthz", timeout=10).headers["X-Request-ID"]
    server.stop()
    assert answer.headers["X-Request-ID"] == "trace-7"
    log = server.log()
    assert any('"GET /api/event-types"' in line and line.endswith("rid=trace-7") for line in log.splitlines())
    assert f"rid={generated}" in log
    assert "secret-value" not in log



@pytest.mark.slow
@pytest.mark.parametrize(("log_format",), [("text",), ("json",)])
def test_what_a_malformed_request_quoted_stays_out_of_the_error_log(tmp_path, log_format):
    server = start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=1,
                          env={"EVENTSVC_LOG_FORMAT": log_format})
    try:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"GET /api/event-types HTTP/1.1\r\nHost: x\r\nBearer {TOKEN}\r\n\r\n".encode())
            answer = sock.recv(65536)
    finally:
        server.stop()
    assert answer.startswith(b"HTTP/1.1 400") and b'"code": "bad_request"' in answer
    log = server.log()
    assert "Invalid request from ip=" in log and "<redacted>" in log
    assert TOKEN not in log
