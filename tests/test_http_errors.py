"""Requests gunicorn refuses before Flask sees them still get the one JSON error shape (found by Schemathesis)."""
from __future__ import annotations

import json
import socket

import pytest
import requests


@pytest.mark.slow
@pytest.mark.parametrize(("line", "headers", "status", "code"), [
    ("/api/event-types?x=" + "a" * 5000, {}, 414, "uri_too_long"),
    ("/api/event-types", {"X-Big": "b" * 9000}, 431, "request_header_fields_too_large"),
])
def test_a_request_gunicorn_refuses_itself_gets_the_json_error_shape(server, line, headers, status, code):
    answer = requests.get(server.url + line, headers=headers, timeout=10)
    assert answer.status_code == status
    assert answer.headers["Content-Type"] == "application/json"
    error = answer.json()["error"]
    assert error["code"] == code and error["request_id"] == answer.headers["X-Request-ID"]
    assert "aaaa" not in answer.text and "bbbb" not in answer.text


@pytest.mark.slow
@pytest.mark.parametrize(("headers", "status_line", "code"), [
    (b"Transfer-Encoding: x\r\nContent-Length: 0\r\n", b"HTTP/1.1 501 Not Implemented\r\n", "not_implemented"),
    (b"Expect: x\r\n", b"HTTP/1.1 417 Expectation Failed\r\n", "expectation_failed"),
])
def test_framing_gunicorn_refuses_gets_its_own_status_line_and_the_json_shape(server, headers, status_line, code):
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(status_line), answer[:80]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == code
