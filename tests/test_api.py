"""The HTTP API through Flask's test client: appends, paged reads, the registry, and every error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from eventsvc import create_app
from eventsvc.types import EVENT_TYPES

KEYS = ["type", "timestamp", "session_id", "run_id", "seq", "source", "event_id", "payload"]
ONE_MIB = 1024 * 1024


def events_url(session_id: str) -> str:
    return f"/api/sessions/{session_id}/events"


def run_url(run_id: str) -> str:
    return f"/api/runs/{run_id}/events"


def files_snapshot(data_dir: Path) -> dict[str, bytes]:
    root = data_dir / "segments"
    if not root.exists():
        return {}
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def assert_error_shape(response, status: int, code: str | None) -> dict:
    """The one error shape; ``code=None`` accepts any code string (the contract names none)."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert {"code", "message", "request_id"} <= set(error) <= {"code", "message", "details", "request_id"}
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    assert 'File "' not in text
    return error


@pytest.fixture
def seeded(client):
    """s1: a legacy event, run r1's two events, another legacy event; s2: one event."""
    for session_id, event in [
        ("s1", {"type": "user_message", "event_id": "e1", "payload": {"text": "hi"}}),   # s1 seq 1
        ("s1", {"type": "run_started", "run_id": "r1", "event_id": "e2"}),               # s1 seq 2
        ("s1", {"type": "assistant_message", "payload": {"text": "thinking"}}),          # s1 seq 3
        ("s1", {"type": "run_completed", "run_id": "r1"}),                               # s1 seq 4
        ("s2", {"type": "user_message"}),                                                # s2 seq 1
    ]:
        assert client.post(events_url(session_id), json=event).status_code == 201
    return client


def state_of(client, data_dir: Path) -> tuple:
    """Everything a bad request must leave alone: the reads and the bytes of every segment file."""
    return (client.get(events_url("s1") + "?limit=1000").get_json(),
            client.get(events_url("s2") + "?limit=1000").get_json(),
            client.get(run_url("r1") + "?limit=1000").get_json(),
            files_snapshot(data_dir))


# -- appends ---------------------------------------------------------------------------------------

def test_post_one_event_answers_201_with_the_stored_envelope(client):
    response = client.post(events_url("s1"), json={"type": "user_message", "payload": {"text": "hi"}})
    assert response.status_code == 201
    event = response.get_json()
    assert list(event) == KEYS
    assert event["seq"] == 1
    assert event["session_id"] == "s1"
    assert event["source"] == "api"
    assert event["payload"] == {"text": "hi"}
    assert client.get(events_url("s1")).get_json()["events"] == [event]


def test_post_keeps_envelope_key_order_in_the_response_body(client):
    response = client.post(events_url("s1"), json={"payload": {"z": 1, "a": 2}, "type": "user_message"})
    assert list(json.loads(response.get_data())) == KEYS
    assert list(json.loads(response.get_data())["payload"]) == ["z", "a"]


def test_post_array_answers_201_with_events(client):
    response = client.post(events_url("s1"), json=[
        {"type": "run_created", "run_id": "r1"},
        {"type": "run_started", "run_id": "r1"},
        {"type": "user_message"},
    ])
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"events"}
    assert [event["seq"] for event in body["events"]] == [1, 2, 3]
    assert [event["type"] for event in body["events"]] == ["run_created", "run_started", "user_message"]
    assert client.get(events_url("s1")).get_json()["events"] == body["events"]


def test_post_accepts_a_batch_of_exactly_one_thousand(client):
    response = client.post(events_url("s1"), json=[{"type": "status"} for _ in range(1000)])
    assert response.status_code == 201
    assert [event["seq"] for event in response.get_json()["events"]] == list(range(1, 1001))


def test_post_accepts_session_id_equal_to_the_url(client):
    response = client.post(events_url("s1"), json={"type": "user_message", "session_id": "s1"})
    assert response.status_code == 201


def test_post_accepts_json_with_a_utf8_charset(client):
    response = client.post(events_url("s1"), data='{"type": "user_message", "payload": {"t": "é"}}'.encode(),
                           content_type="application/json; charset=utf-8")
    assert response.status_code == 201
    assert response.get_json()["payload"] == {"t": "é"}


def test_post_normalises_the_timestamp_to_utc(client):
    response = client.post(events_url("s1"), json={"type": "status", "timestamp": "2026-02-06T12:00:00+02:00"})
    assert response.get_json()["timestamp"] == "2026-02-06T10:00:00Z"


def test_full_resend_of_one_event_answers_200_with_the_stored_event(client, data_dir):
    event = {"type": "user_message", "event_id": "e1", "payload": {"text": "hi"}}
    first = client.post(events_url("s1"), json=event)
    before = files_snapshot(data_dir)
    again = client.post(events_url("s1"), json=event)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json() == first.get_json()
    assert files_snapshot(data_dir) == before


def test_full_resend_of_an_array_answers_200_with_the_stored_events(client, data_dir):
    batch = [{"type": "user_message", "event_id": f"e{n}"} for n in range(3)]
    first = client.post(events_url("s1"), json=batch)
    before = files_snapshot(data_dir)
    again = client.post(events_url("s1"), json=batch)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json() == first.get_json()
    assert files_snapshot(data_dir) == before


def test_partial_resend_of_an_array_answers_201(client):
    client.post(events_url("s1"), json={"type": "user_message", "event_id": "old"})
    response = client.post(events_url("s1"), json=[{"type": "user_message", "event_id": "old"},
                                                    {"type": "user_message", "event_id": "new"}])
    assert response.status_code == 201
    assert [event["seq"] for event in response.get_json()["events"]] == [1, 2]


# -- reads -----------------------------------------------------------------------------------------

def test_get_session_answers_the_aggregated_shape(seeded):
    body = seeded.get(events_url("s1")).get_json()
    assert set(body) == {"session_id", "events", "next_since_seq", "has_more"}
    assert body["session_id"] == "s1"
    assert [event["seq"] for event in body["events"]] == [1, 2, 3, 4]
    assert [event["run_id"] for event in body["events"]] == [None, "r1", None, "r1"]
    assert all(list(event) == KEYS for event in body["events"])
    assert body["next_since_seq"] == 4
    assert body["has_more"] is False


def test_get_run_answers_only_that_runs_events_with_session_seqs(seeded):
    seeded.post(events_url("s1"), json={"type": "tool_call", "run_id": "r9"})
    body = seeded.get(run_url("r1")).get_json()
    assert set(body) == {"session_id", "run_id", "events", "next_since_seq", "has_more"}
    assert (body["session_id"], body["run_id"]) == ("s1", "r1")
    assert [event["seq"] for event in body["events"]] == [2, 4]
    assert {event["run_id"] for event in body["events"]} == {"r1"}
    assert body["next_since_seq"] == 4
    assert body["has_more"] is False


def test_reads_equal_the_posted_envelopes(client):
    posted = [client.post(events_url("s1"), json={"type": "tool_call", "run_id": "r1", "payload": {"n": n}})
              .get_json() for n in range(3)]
    assert client.get(events_url("s1")).get_json()["events"] == posted
    assert client.get(run_url("r1")).get_json()["events"] == posted


@pytest.mark.parametrize(("query", "seqs", "next_since_seq", "has_more"), [
    ("", [1, 2, 3, 4], 4, False),
    ("?limit=2", [1, 2], 2, True),
    ("?since_seq=2&limit=1", [3], 3, True),
    ("?since_seq=2&limit=2", [3, 4], 4, False),
    ("?since_seq=3", [4], 4, False),
    ("?since_seq=4", [], 4, False),
    ("?since_seq=50", [], 50, False),
])
def test_session_page_next_since_seq_and_has_more(seeded, query, seqs, next_since_seq, has_more):
    body = seeded.get(events_url("s1") + query).get_json()
    assert [event["seq"] for event in body["events"]] == seqs
    assert body["next_since_seq"] == next_since_seq
    assert body["has_more"] is has_more


@pytest.mark.parametrize(("query", "seqs", "next_since_seq", "has_more"), [
    ("", [2, 4], 4, False),
    ("?limit=1", [2], 2, True),
    ("?since_seq=2", [4], 4, False),
    ("?since_seq=3&limit=1", [4], 4, False),
    ("?since_seq=4", [], 4, False),
    ("?since_seq=99", [], 99, False),
])
def test_run_page_next_since_seq_and_has_more(seeded, query, seqs, next_since_seq, has_more):
    body = seeded.get(run_url("r1") + query).get_json()
    assert [event["seq"] for event in body["events"]] == seqs
    assert body["next_since_seq"] == next_since_seq
    assert body["has_more"] is has_more


def test_following_next_since_seq_pages_through_the_whole_session_and_run(client):
    client.post(events_url("s1"), json=[{"type": "tool_call", "run_id": "r1"} if n % 3 else {"type": "status"}
                                        for n in range(25)])
    for url in (events_url("s1"), run_url("r1")):
        whole = client.get(url + "?limit=1000").get_json()["events"]
        collected, since_seq, pages = [], 0, 0
        while True:
            body = client.get(f"{url}?since_seq={since_seq}&limit=4").get_json()
            collected.extend(body["events"])
            since_seq = body["next_since_seq"]
            pages += 1
            if not body["has_more"]:
                break
        assert pages > 2
        assert collected == whole


# -- the registry and health -----------------------------------------------------------------------

def test_event_types_lists_the_twenty_two(client):
    response = client.get("/api/event-types")
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"event_types"}
    listed = body["event_types"]
    assert len(listed) == 22
    assert all(set(item) == {"name", "category", "run_scoped"} for item in listed)
    assert {item["name"] for item in listed} == set(EVENT_TYPES)
    for item in listed:
        assert item["category"] == EVENT_TYPES[item["name"]].category
        assert item["run_scoped"] is EVENT_TYPES[item["name"]].run_scoped
    assert sum(item["run_scoped"] for item in listed) == 12
    assert sum(item["category"] == "legacy" for item in listed) == 10


def test_extra_event_types_are_listed_and_accepted(data_dir):
    client = create_app({"DATA_DIR": str(data_dir), "EXTRA_EVENT_TYPES": "deploy_started"}).test_client()
    listed = client.get("/api/event-types").get_json()["event_types"]
    assert len(listed) == 23
    assert {"name": "deploy_started", "category": "extra", "run_scoped": False} in listed
    assert client.post(events_url("s1"), json={"type": "deploy_started"}).status_code == 201


def test_healthz_answers_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


# -- bad requests ----------------------------------------------------------------------------------

JSON = "application/json"
DEEP = '{"type": "user_message", "payload": ' + '{"a": ' * 100 + "1" + "}" * 100 + "}"

BAD_REQUESTS = [
    # (name, method, url, body, content_type, status, code)
    ("malformed_json", "POST", events_url("s1"), b'{"type": ', JSON, 400, "bad_request"),
    ("trailing_garbage", "POST", events_url("s1"), b'{"type": "status"} x', JSON, 400, "bad_request"),
    ("empty_body", "POST", events_url("s1"), b"", JSON, 400, "bad_request"),
    ("invalid_utf8", "POST", events_url("s1"), b'{"type": "status", "payload": {"t": "\xff\xfe"}}', JSON,
     400, "bad_request"),
    ("nesting_too_deep", "POST", events_url("s1"), DEEP.encode(), JSON, 400, "bad_request"),
    ("nan", "POST", events_url("s1"), b'{"type": "status", "payload": {"x": NaN}}', JSON, 400, "bad_request"),
    ("float_overflow", "POST", events_url("s1"), b'{"type": "status", "payload": {"x": 1e400}}', JSON, 400,
     "bad_request"),
    ("null_source", "POST", events_url("s1"), b'{"type": "status", "source": null}', JSON, 422,
     "validation_error"),
    ("null_event_id", "POST", events_url("s1"), b'{"type": "status", "event_id": null}', JSON, 422,
     "validation_error"),
    ("null_timestamp", "POST", events_url("s1"), b'{"type": "status", "timestamp": null}', JSON, 422,
     "validation_error"),
    ("infinity", "POST", events_url("s1"), b'{"type": "status", "payload": {"x": Infinity}}', JSON,
     400, "bad_request"),
    ("duplicate_key", "POST", events_url("s1"), b'{"type": "status", "type": "error"}', JSON, 400, "bad_request"),
    ("text_plain", "POST", events_url("s1"), b'{"type": "status"}', "text/plain", 415, "unsupported_media_type"),
    ("form", "POST", events_url("s1"), b"type=status", "application/x-www-form-urlencoded",
     415, "unsupported_media_type"),
    ("no_content_type", "POST", events_url("s1"), b'{"type": "status"}', None, 415, "unsupported_media_type"),
    ("unknown_type", "POST", events_url("s1"), b'{"type": "bogus"}', JSON, 422, "validation_error"),
    ("missing_type", "POST", events_url("s1"), b'{"payload": {}}', JSON, 422, "validation_error"),
    ("payload_string", "POST", events_url("s1"), b'{"type": "status", "payload": "text"}', JSON,
     422, "validation_error"),
    ("payload_list", "POST", events_url("s1"), b'{"type": "status", "payload": [1]}', JSON,
     422, "validation_error"),
    ("payload_null", "POST", events_url("s1"), b'{"type": "status", "payload": null}', JSON,
     422, "validation_error"),
    ("run_scoped_without_run_id", "POST", events_url("s1"), b'{"type": "run_started"}', JSON,
     422, "validation_error"),
    ("unknown_key", "POST", events_url("s1"), b'{"type": "status", "data": 1}', JSON, 422, "validation_error"),
    ("bad_event_id", "POST", events_url("s1"), b'{"type": "status", "event_id": "a/b"}', JSON,
     422, "validation_error"),
    ("naive_timestamp", "POST", events_url("s1"), b'{"type": "status", "timestamp": "2026-02-06T10:00:00"}',
     JSON, 422, "validation_error"),
    ("session_id_differs", "POST", events_url("s1"), b'{"type": "status", "session_id": "s2"}', JSON,
     422, "validation_error"),
    ("body_is_a_string", "POST", events_url("s1"), b'"status"', JSON, 422, "validation_error"),
    ("body_is_a_number", "POST", events_url("s1"), b"5", JSON, 422, "validation_error"),
    ("empty_array", "POST", events_url("s1"), b"[]", JSON, 422, "validation_error"),
    ("array_of_1001", "POST", events_url("s1"), json.dumps([{"type": "status"}] * 1001).encode(), JSON,
     422, "validation_error"),
    ("array_with_a_bad_event", "POST", events_url("s1"),
     b'[{"type": "status"}, {"type": "status", "payload": "x"}]', JSON, 422, "validation_error"),
    ("event_over_max_event_bytes", "POST", events_url("s1"),
     json.dumps({"type": "status", "payload": {"t": "x" * ONE_MIB}}).encode(), JSON, 413, "payload_too_large"),
    ("seq_conflict", "POST", events_url("s1"), b'{"type": "status", "seq": 3}', JSON, 409, "seq_conflict"),
    ("event_id_conflict", "POST", events_url("s1"), b'{"type": "user_message", "event_id": "e1"}', JSON,
     409, "event_id_conflict"),
    ("event_id_conflict_in_batch", "POST", events_url("s1"),
     b'[{"type": "status"}, {"type": "status", "event_id": "e2"}]', JSON, 409, "event_id_conflict"),
    ("run_in_another_session", "POST", events_url("s2"), b'{"type": "run_started", "run_id": "r1"}', JSON,
     409, "run_session_conflict"),
    ("since_seq_negative", "GET", events_url("s1") + "?since_seq=-1", None, None, 422, "validation_error"),
    ("since_seq_text", "GET", events_url("s1") + "?since_seq=abc", None, None, 422, "validation_error"),
    ("since_seq_float", "GET", events_url("s1") + "?since_seq=1.5", None, None, 422, "validation_error"),
    ("since_seq_empty", "GET", events_url("s1") + "?since_seq=", None, None, 422, "validation_error"),
    ("since_seq_5000_digits", "GET", events_url("s1") + "?since_seq=" + "9" * 5000, None, None, 422,
     "validation_error"),
    ("limit_5000_digits", "GET", "/api/runs/r1/events?limit=" + "1" * 5000, None, None, 422, "validation_error"),
    ("wait_too_long", "GET", events_url("s1") + "?wait=61", None, None, 422, "validation_error"),
    ("limit_zero", "GET", events_url("s1") + "?limit=0", None, None, 422, "validation_error"),
    ("limit_negative", "GET", events_url("s1") + "?limit=-1", None, None, 422, "validation_error"),
    ("limit_1001", "GET", events_url("s1") + "?limit=1001", None, None, 422, "validation_error"),
    ("limit_text", "GET", events_url("s1") + "?limit=abc", None, None, 422, "validation_error"),
    ("limit_float", "GET", events_url("s1") + "?limit=1.5", None, None, 422, "validation_error"),
    ("run_since_seq_negative", "GET", run_url("r1") + "?since_seq=-1", None, None, 422, "validation_error"),
    ("run_since_seq_float", "GET", run_url("r1") + "?since_seq=1.5", None, None, 422, "validation_error"),
    ("run_limit_zero", "GET", run_url("r1") + "?limit=0", None, None, 422, "validation_error"),
    ("run_limit_1001", "GET", run_url("r1") + "?limit=1001", None, None, 422, "validation_error"),
    ("run_limit_text", "GET", run_url("r1") + "?limit=abc", None, None, 422, "validation_error"),
    ("unknown_session", "GET", events_url("nobody"), None, None, 404, "not_found"),
    ("unknown_run", "GET", run_url("nobody"), None, None, 404, "not_found"),
    ("malformed_run_id", "GET", run_url(".hidden"), None, None, 404, "not_found"),
    ("unknown_route", "GET", "/api/nothing", None, None, 404, "not_found"),
    ("session_unknown_suffix", "GET", "/api/sessions/s1/nothing", None, None, 404, "not_found"),
    ("delete_events", "DELETE", events_url("s1"), None, None, 405, None),
    ("put_events", "PUT", events_url("s1"), b'{"type": "status"}', JSON, 405, None),
    ("post_run_events", "POST", run_url("r1"), b'{"type": "status"}', JSON, 405, None),
    ("post_event_types", "POST", "/api/event-types", b"{}", JSON, 405, None),
]


@pytest.mark.parametrize(("name", "method", "url", "body", "content_type", "status", "code"), BAD_REQUESTS,
                         ids=[row[0] for row in BAD_REQUESTS])
def test_bad_request_answers_its_error_and_changes_nothing(seeded, data_dir, name, method, url, body,
                                                           content_type, status, code):
    before = state_of(seeded, data_dir)
    headers = {"Content-Type": content_type} if content_type else {}
    response = seeded.open(url, method=method, data=body, headers=headers)
    assert_error_shape(response, status, code)
    assert state_of(seeded, data_dir) == before


def test_validation_error_details_name_the_fields(client):
    error = assert_error_shape(client.post(events_url("s1"), json={"type": "status", "payload": "x", "data": 1}),
                               422, "validation_error")
    assert {"payload", "data"} <= set(error["details"])


def test_batch_validation_error_details_are_keyed_by_index(client, data_dir):
    response = client.post(events_url("s1"), json=[{"type": "status"}, {"type": "bogus"},
                                                   {"type": "status"}, {"type": "run_failed"}])
    error = assert_error_shape(response, 422, "validation_error")
    assert set(error["details"]) == {"1", "3"}
    assert "type" in error["details"]["1"]
    assert "run_id" in error["details"]["3"]
    assert files_snapshot(data_dir) == {}


def test_rejected_post_to_a_new_session_leaves_it_unknown(client, data_dir):
    assert_error_shape(client.post(events_url("fresh"), json=[{"type": "status"}, {"type": "run_started"}]),
                       422, "validation_error")
    assert_error_shape(client.get(events_url("fresh")), 404, "not_found")
    assert files_snapshot(data_dir) == {}


def test_query_validation_error_details_name_the_parameter(seeded):
    error = assert_error_shape(seeded.get(events_url("s1") + "?since_seq=abc&limit=0"), 422, "validation_error")
    assert {"since_seq", "limit"} <= set(error["details"])


def test_wrong_method_names_the_allowed_ones(seeded):
    response = seeded.delete(events_url("s1"))
    assert_error_shape(response, 405, None)
    assert {"GET", "POST"} <= {m.strip() for m in response.headers["Allow"].split(",")}


def test_max_event_bytes_comes_from_the_environment(data_dir, monkeypatch):
    monkeypatch.setenv("EVENTSVC_MAX_EVENT_BYTES", "2000")
    client = create_app({"DATA_DIR": str(data_dir)}).test_client()
    assert client.post(events_url("s1"), json={"type": "status", "payload": {"t": "x" * 1000}}).status_code == 201
    before = files_snapshot(data_dir)
    response = client.post(events_url("s1"), json={"type": "status", "payload": {"t": "x" * 2000}})
    assert_error_shape(response, 413, "payload_too_large")
    assert files_snapshot(data_dir) == before


def test_request_body_over_the_request_limit_is_413(data_dir):
    client = create_app({"DATA_DIR": str(data_dir), "MAX_REQUEST_BYTES": 4096}).test_client()
    response = client.post(events_url("s1"), json=[{"type": "status", "payload": {"t": "x" * 100}}] * 50)
    assert_error_shape(response, 413, "payload_too_large")
    assert files_snapshot(data_dir) == {}


@pytest.mark.parametrize(("session_id", "status", "code"), [
    (".hidden", 422, "validation_error"),
    ("a%2Fb", 404, "not_found"),  # no route: a '/' is never part of an id
    ("-x", 422, "validation_error"),
    ("a" * 129, 422, "validation_error"),
])
def test_post_to_an_invalid_session_id_is_rejected_and_creates_nothing(client, data_dir, session_id, status, code):
    response = client.post(f"/api/sessions/{session_id}/events", json={"type": "status"})
    error = assert_error_shape(response, status, code)
    assert "1-128 characters" in (error["message"] + str(error.get("details")))
    assert files_snapshot(data_dir) == {}


@pytest.mark.parametrize("header", ["9" * 5000, "٣", "abc", "-1", "1.5"])
def test_a_bad_last_event_id_is_a_422_before_any_stream_starts(seeded, header):
    response = seeded.get("/api/sessions/s1/events/stream", headers={"Last-Event-ID": header})
    assert_error_shape(response, 422, "validation_error")
