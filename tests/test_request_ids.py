"""X-Request-ID: echoed when valid, generated otherwise, on every answer and in every error body."""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from eventsvc import create_app

VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
ID_CHARS = "ABCxyz019._:-"


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/healthz", 200),
    ("GET", "/api/event-types", 200),
    ("GET", "/api/sessions/nobody/events", 404),
    ("GET", "/api/nowhere", 404),
    ("DELETE", "/api/event-types", 405),
    ("POST", "/api/sessions/s/events", 415),
])
def test_every_answer_carries_a_generated_id_when_none_is_sent(client, method, path, status):
    response = client.open(path, method=method)
    assert response.status_code == status
    rid = response.headers["X-Request-ID"]
    assert VALID.match(rid)
    if status >= 400:
        assert response.get_json()["error"]["request_id"] == rid


def test_two_requests_get_different_ids(client):
    assert client.get("/healthz").headers["X-Request-ID"] != client.get("/healthz").headers["X-Request-ID"]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sent=st.one_of(st.text(alphabet=ID_CHARS, min_size=1, max_size=130),
                      st.text(min_size=0, max_size=20).filter(lambda text: "\n" not in text and "\r" not in text)))
def test_a_client_id_is_kept_exactly_when_valid(client, sent):
    response = client.get("/api/sessions/nobody/events", headers={"X-Request-ID": sent})
    rid = response.headers["X-Request-ID"]
    assert VALID.match(rid)
    assert (rid == sent) == bool(VALID.match(sent))
    assert response.get_json()["error"]["request_id"] == rid


def test_an_unexpected_error_carries_the_id(client, app, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(app.extensions["eventsvc.store"], "read_page", broken)
    client.post("/api/sessions/s1/events", json={"type": "user_message"})
    response = client.get("/api/sessions/s1/events", headers={"X-Request-ID": "trace-1"})
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "trace-1"
    assert response.get_json()["error"] == {"code": "internal_error", "request_id": "trace-1",
                                            "message": "internal error; the server log has the details"}


def test_a_token_sent_as_a_request_id_is_not_echoed(data_dir):
    client = create_app({"DATA_DIR": str(data_dir), "API_TOKENS": "secret-token-1"}).test_client()
    response = client.get("/healthz", headers={"X-Request-ID": "secret-token-1"})
    assert response.headers["X-Request-ID"] != "secret-token-1"
    unauthorized = client.get("/api/event-types", headers={"X-Request-ID": "secret-token-1"})
    assert unauthorized.status_code == 401
    assert "secret-token-1" not in unauthorized.get_data(as_text=True)
