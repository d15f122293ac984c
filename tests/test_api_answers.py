"""Answers a new user can act on: ids, ranges, keys and OPTIONS say what the rule is, in JSON."""
from __future__ import annotations

import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventsvc.schemas import is_valid_id

ID_TEXT = "1-128 characters of A-Z, a-z, 0-9"


@pytest.mark.parametrize("url", [
    "/api/sessions/-bad/events/stream?wait=1",
    "/api/sessions/-bad/events?wait=30",
    "/api/runs/.x/events/stream?wait=1",
    "/api/runs/.x/events?wait=30",
    "/api/sessions/-bad/events",
])
def test_an_id_that_breaks_the_rule_is_a_404_naming_it_before_any_wait(client, url):
    started = time.monotonic()
    response = client.get(url)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    assert ID_TEXT in response.get_json()["error"]["message"]
    assert time.monotonic() - started < 5  # answered, not waited on (the wait asked for is 30 s)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="/?#%"), min_size=1,
                    max_size=20))
def test_a_read_with_wait_never_waits_for_an_id_that_cannot_exist(app, text):
    if is_valid_id(text) or text in (".", ".."):  # "." and ".." are path steps, not ids
        return
    response = app.test_client().get(f"/api/sessions/{requests.utils.quote(text, safe='')}/events?wait=30")
    assert response.status_code == 404, response.get_data()


@pytest.mark.parametrize("path", ["/api/sessions/a%2Fb/events", "/api/sessions/a/b/events", "/api/runs/a/b/events"])
def test_a_slash_in_an_id_names_the_id_rule(client, path):
    response = client.get(path)
    assert response.status_code == 404
    message = response.get_json()["error"]["message"]
    assert ID_TEXT in message and "'/'" in message


@pytest.mark.parametrize(("query", "field", "words"), [
    ("since_seq=-1", "since_seq", "must be an integer >= 0"),
    ("since_seq=x", "since_seq", "must be an integer >= 0"),
    ("limit=0", "limit", "must be an integer from 1 to 1000"),
    ("limit=-5", "limit", "must be an integer from 1 to 1000"),
    ("wait=-1", "wait", "must be a number of seconds from 0 to 60"),
    ("sinse_seq=1", "sinse_seq", "unknown query parameter"),
])
def test_a_bad_query_value_says_its_range(client, query, field, words):
    client.post("/api/sessions/s1/events", json={"type": "status"})
    response = client.get(f"/api/sessions/s1/events?{query}")
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][field] == [words]


def test_an_extra_top_level_key_says_custom_data_goes_in_payload(client):
    response = client.post("/api/sessions/s1/events", json={"type": "status", "text": "hi"})
    assert response.status_code == 422
    (message,) = response.get_json()["error"]["details"]["text"]
    assert "payload" in message


@pytest.mark.parametrize("path", ["/api/sessions/s1/events", "/api/runs/r1/events", "/api/event-types", "/healthz",
                                  "/api/sessions/s1/events/stream"])
def test_options_answers_json_with_the_allowed_methods(client, path):
    response = client.options(path)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    allowed = response.get_json()["allow"]
    assert "OPTIONS" in allowed and "GET" in allowed
    assert sorted(method.strip() for method in response.headers["Allow"].split(",")) == allowed
