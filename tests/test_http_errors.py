"""Requests gunicorn refuses before Flask sees them still get the one JSON error shape (found by Schemathesis)."""
from __future__ import annotations

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
