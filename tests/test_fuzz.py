"""Fuzzing the HTTP API with hypothesis: hostile bodies, ids, query strings and headers.

Properties, for every request:
- the response is never 5xx, and always ``application/json`` with ``nosniff``;
- an error is ``{"error": {"code", "message", "details"?}}`` with a documented code that
  matches its status;
- a rejected request changes nothing: the session's read, every file and folder under
  ``segments/`` and every index row are identical before and after;
- an accepted one is readable back exactly: GET returns the same envelope, key for key, and
  the session's seqs stay contiguous.

Most tests drive the Flask test client; three drive a real gunicorn on 127.0.0.1, two of them
over raw sockets: Content-Length lies, chunked bodies (honest, over the request limit, with
broken chunk sizes) and malformed Content-Length headers. gunicorn's own HTTP parser answers
some of those with a plain-text 400 before the app sees them; those must still be 4xx and
change nothing.

Profiles: the default runs a few hundred examples in all (``make test``); ``fuzz`` runs more
than 10,000 (``make fuzz``, i.e. ``HYPOTHESIS_PROFILE=fuzz``). Each test scales its share of
the active profile's ``max_examples``.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sqlite3
from collections.abc import Callable
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_from_bytes, urlencode

import pytest
import requests
from hypothesis import HealthCheck, assume, event, example, given, note, settings
from hypothesis import strategies as st
from werkzeug.http import parse_options_header

from eventsvc import create_app
from eventsvc.types import EVENT_TYPES

from conftest import Server, any_valid_id, start_server

# -- profiles ---------------------------------------------------------------------------------

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much, HealthCheck.large_base_example])
settings.register_profile("default-eventsvc", max_examples=160, **_COMMON)
settings.register_profile("fuzz", max_examples=4500, **_COMMON)
PROFILE_NAME = "fuzz" if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else "default-eventsvc"
PROFILE = settings.get_profile(PROFILE_NAME)


def share(fraction: float) -> settings:
    """This test's part of the active profile: ``fraction`` of its max_examples (at least 10)."""
    return settings(PROFILE, max_examples=max(10, int(PROFILE.max_examples * fraction)))


# -- the contract ----------------------------------------------------------------------------

STATUS_OF = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "seq_conflict": 409,
    "event_id_conflict": 409,
    "run_session_conflict": 409,
    "request_timeout": 408,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "validation_error": 422,
    "too_many_streams": 503,
}
KEYS = ["type", "timestamp", "session_id", "run_id", "seq", "source", "event_id", "payload"]
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
TYPES = sorted(EVENT_TYPES)
RW, RO = "fuzz-rw-token", "fuzz-ro-token"


def ordered(text: str | bytes) -> Any:
    """JSON parsed so that two values are equal only with the same key order too."""
    return json.loads(text, object_pairs_hook=lambda pairs: ("object", pairs))


def check_json_response(status: int, headers: Any, data: bytes) -> Any:
    """The properties every response has; returns its parsed body."""
    assert status < 500, (status, data[:2000])
    assert headers.get("Content-Type") == "application/json", (status, dict(headers), data[:500])
    assert headers.get("X-Content-Type-Options") == "nosniff", (status, dict(headers))
    body = json.loads(data)
    event(f"status {status}")
    if status >= 400:
        assert isinstance(body, dict) and set(body) == {"error"}, body
        error = body["error"]
        assert isinstance(error, dict) and {"code", "message"} <= set(error) <= {"code", "message", "details", "request_id"}, error
        assert error["code"] in STATUS_OF, error
        assert STATUS_OF[error["code"]] == status, (status, error)
        assert isinstance(error["message"], str) and error["message"], error
        text = data.decode("utf-8")
        assert "Traceback" not in text and 'File "/' not in text, text
    return body


# -- a state that can be compared --------------------------------------------------------------

def disk_state(data_dir: Path) -> tuple[dict[str, bytes | None], dict[str, list[tuple]]]:
    """Every folder and file under segments/ (files with their bytes), every lock file, and every index row."""
    root = data_dir / "segments"
    entries = {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
               for p in sorted(root.rglob("*"))}
    entries.update({f"locks/{name}": None for name in os.listdir(data_dir / "locks")})
    with contextlib.closing(sqlite3.connect(data_dir / "index.sqlite3", timeout=30)) as db:
        rows = {table: db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                for table in ("event", "run", "session")}
    return entries, rows


SEED = [
    ("s1", {"type": "user_message", "event_id": "e1", "payload": {"text": "hi"}}),
    ("s1", {"type": "run_started", "run_id": "r1", "event_id": "e2"}),
    ("s2", {"type": "run_started", "run_id": "r2", "event_id": "e1"}),
    ("s2", {"type": "tool_call", "run_id": "r2", "payload": {"name": "ls", "args": [1, 2.5, None]}}),
]
SESSIONS = ["s1", "s2", "s3"]  # s3 starts empty
RUNS = ["r1", "r2", "r3"]
EVENT_IDS = ["e1", "e2", "e3"]


class Harness:
    """A Flask app on a data dir of its own, replaced every ``ROTATE`` examples to stay small."""

    ROTATE = 40

    def __init__(self, root: Path, config: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        self.root = root
        self.config = config or {}
        self.headers = headers or {}
        self.count = 0
        self.app = None
        self.client = None
        self.data_dir: Path | None = None

    def get(self):
        if self.app is None or self.count % self.ROTATE == 0:
            self.close()
            self.data_dir = self.root / f"data-{self.count}"
            self.app = create_app({"DATA_DIR": str(self.data_dir), "FSYNC": "never", **self.config})
            self.client = self.app.test_client()
            for session_id, seed_event in SEED:
                response = self.client.post(f"/api/sessions/{session_id}/events", json=seed_event,
                                            headers=self.headers)
                assert response.status_code == 201, response.get_data()
        self.count += 1
        return self.client

    def close(self) -> None:
        if self.app is not None:
            self.app.extensions["eventsvc.store"].close()
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.app = None

    def session_read(self, session_id: str) -> tuple[int, bytes]:
        # A fixed request id, so that two reads of an unchanged session compare byte for byte.
        response = self.client.get(f"/api/sessions/{quote(session_id, safe='')}/events?limit=1000",
                                   headers={**self.headers, "X-Request-ID": "fuzz-read"})
        return response.status_code, response.get_data()


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    made = Harness(tmp_path_factory.mktemp("fuzz"))
    yield made
    made.close()


@pytest.fixture(scope="module")
def secured_harness(tmp_path_factory):
    made = Harness(tmp_path_factory.mktemp("fuzz-auth"), {"API_TOKENS": RW, "READ_TOKENS": RO},
                   headers={"Authorization": f"Bearer {RW}"})
    yield made
    made.close()


def check_accepted(read: Callable[[str, int], Any], session_id: str, body: Any, sent: Any, status: int,
                   last_before: int) -> None:
    """An accepted append: every returned envelope is what GET returns at its seq, and matches the input."""
    if isinstance(sent, dict):
        envelopes, inputs = [body], [sent]
    else:
        assert set(body) == {"events"}, body
        envelopes, inputs = body["events"], sent
    assert len(envelopes) == len(inputs)
    created = [e["seq"] for e in envelopes if e["seq"] > last_before]
    assert created == list(range(last_before + 1, last_before + 1 + len(created))), (created, last_before)
    assert (status == 201) == bool(created), (status, created)
    for envelope, given_event in zip(envelopes, inputs):
        assert list(envelope) == KEYS, envelope
        assert envelope["session_id"] == session_id
        stored = read(session_id, envelope["seq"])
        assert ordered(json.dumps(envelope)) == ordered(stored), (envelope, stored)
        assert envelope["type"] == given_event["type"]
        assert envelope["run_id"] == given_event.get("run_id")
        assert envelope["payload"] == given_event.get("payload", {})
        assert envelope["source"] == (given_event.get("source") or "api")
        if given_event.get("event_id") is not None:
            assert envelope["event_id"] == given_event["event_id"]
        if given_event.get("seq") is not None:
            assert envelope["seq"] == given_event["seq"]
        assert STORED_TIMESTAMP.match(envelope["timestamp"]), \
            f"stored timestamp {envelope['timestamp']!r} is not RFC 3339 in UTC"
        if given_event.get("timestamp") is not None and envelope["seq"] > last_before:
            # The same instant, in UTC; precision beyond microseconds may be dropped.
            assert 0 <= _instant(given_event["timestamp"]) - _instant(envelope["timestamp"]) < Fraction(1, 10 ** 6)


STORED_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z\Z")
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)\Z")


def _instant(text: str) -> Fraction:
    """Seconds since the epoch, exactly, for an RFC 3339 timestamp with an offset."""
    match = _RFC3339.match(text)
    assert match, text
    *parts, fraction, offset = match.groups()
    moment = datetime(*map(int, parts), tzinfo=timezone.utc)
    seconds = Fraction(int(moment.timestamp())) + Fraction(int(fraction or "0"), 10 ** len(fraction or ""))
    if offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        seconds -= sign * (int(offset[1:3]) * 3600 + int(offset[4:6]) * 60)
    return seconds


def run_append(h: Harness, session_id: str, data: bytes, content_type: str | None,
               sent: Any = None, headers: dict[str, str] | None = None, method: str = "POST"):
    """``headers`` replace the harness's own (its valid token) for this request only, when given."""
    """One append through the test client, checked against every property."""
    client = h.get()
    valid_id = bool(ID_RE.match(session_id))
    before = disk_state(h.data_dir)
    read_before = h.session_read(session_id) if valid_id else None
    last_before = _last_seq(read_before)
    all_headers = dict(h.headers if headers is None else headers)
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    response = client.open(f"/api/sessions/{quote(session_id, safe='')}/events", method=method,
                           data=data, headers=all_headers)
    body = check_json_response(response.status_code, response.headers, response.get_data())
    note(f"{response.status_code} {response.get_data()[:300]!r}")
    if response.status_code in (200, 201):
        assert sent is not None and method == "POST" and valid_id, "accepted a request that cannot be valid"

        def read(sid: str, seq: int) -> bytes:
            page = client.get(f"/api/sessions/{sid}/events?since_seq={seq - 1}&limit=1", headers=h.headers)
            assert page.status_code == 200
            events = page.get_json()["events"]
            assert len(events) == 1 and events[0]["seq"] == seq
            return json.dumps(events[0])

        check_accepted(read, session_id, body, sent, response.status_code, last_before)
        everything = json.loads(h.session_read(session_id)[1])["events"]
        assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
        if response.status_code == 200:
            assert disk_state(h.data_dir) == before
    else:
        assert disk_state(h.data_dir) == before
        if valid_id:
            assert h.session_read(session_id) == read_before
    return response


def _last_seq(read: tuple[int, bytes] | None) -> int:
    if read is None or read[0] != 200:
        return 0
    events = json.loads(read[1])["events"]
    return events[-1]["seq"] if events else 0


# -- strategies ------------------------------------------------------------------------------

any_text = st.text(alphabet=st.characters(categories=["Cs"]) | st.characters(), max_size=20)
json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10 ** 40), max_value=10 ** 40)
                | st.floats(allow_nan=False, allow_infinity=False) | any_text)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=16,
)
valid_ids = any_valid_id
ids = st.sampled_from(RUNS) | valid_ids | any_text | st.just("a" * 128) | st.just("a" * 129)
event_ids = st.sampled_from(EVENT_IDS) | valid_ids | any_text
timestamps = st.sampled_from([
    "2026-02-06T10:00:00Z", "2026-02-06T10:00:00.123456789+05:30", "2026-02-06t10:00:00z",
    "2026-02-06 10:00:00-23:59", "2026-02-30T10:00:00Z", "2026-02-06T24:00:00Z", "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2026-02-06T10:00:00", "2026-02-06",
]) | st.datetimes(timezones=st.timezones() | st.just(None)).map(lambda d: d.isoformat())

event_objects = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | any_text},
    optional={
        "run_id": st.none() | ids | json_values,
        "event_id": event_ids | json_values,
        "payload": st.dictionaries(any_text, json_values, max_size=5) | json_values,
        "timestamp": st.none() | timestamps | json_values,
        "source": st.text(min_size=0, max_size=70) | json_values,
        "seq": st.none() | st.integers(min_value=-2, max_value=12) | st.booleans() | st.floats() | json_values,
        "session_id": st.sampled_from(SESSIONS) | ids,
    },
)
# Mostly well-formed events, so that appends are accepted often enough to check the read-back.
valid_events = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={
        "event_id": st.sampled_from(EVENT_IDS) | valid_ids,
        "payload": st.dictionaries(st.text(max_size=10), json_values, max_size=5),
        "timestamp": timestamps,
        "source": st.text(min_size=1, max_size=64),
        "seq": st.integers(min_value=1, max_value=8),
    },
).flatmap(lambda drawn: st.fixed_dictionaries({"run_id": st.sampled_from(RUNS) | valid_ids}).map(
    lambda extra: {**drawn, **extra}) if EVENT_TYPES.is_run_scoped(drawn["type"]) else st.just(drawn))
extra_keys = st.dictionaries(any_text.filter(lambda key: key not in KEYS), json_values, min_size=1, max_size=2)
events = valid_events | event_objects | st.builds(lambda e, x: {**e, **x}, valid_events, extra_keys)
bodies = (events | st.lists(events, min_size=0, max_size=6) | json_values
          | st.just([{"type": "status"}] * 1001) | st.sampled_from([dict(seed_event) for _, seed_event in SEED]))


def encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True, allow_nan=False).encode("ascii")


def is_sendable(value: Any) -> bool:
    try:
        encode(value)
        return True
    except (ValueError, OverflowError):
        return False


# -- the Flask app -----------------------------------------------------------------------------

@share(0.5)
@given(session_id=st.sampled_from(SESSIONS) | valid_ids, body=bodies)
@example(session_id="s1", body={"type": "status", "timestamp": "0999-01-01T00:00:00+00:00"})
@example(session_id="s1", body={"type": "status", "\ud800": None})
@example(session_id="s1", body={"type": "status", "payload": {"n": 10 ** 4000}})
def test_any_json_body(harness, session_id, body):
    assume(is_sendable(body))
    run_append(harness, session_id, encode(body), "application/json", sent=body)


def _mutate(data: bytes, cuts: list[tuple[int, bytes]]) -> bytes:
    for position, insert in cuts:
        position %= len(data) + 1
        data = data[:position] + insert + data[position + 1:]
    return data


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.builds(_mutate, events.filter(is_sendable).map(encode),
              st.lists(st.tuples(st.integers(0, 400), st.binary(max_size=3)), max_size=3)),
    st.builds(lambda n, k: ("[" * n + "]" * k).encode(), st.integers(0, 300), st.integers(0, 300)),
    st.builds(lambda n: b'{"type":"status","payload":' + b'{"a":' * n + b"1" + b"}" * n + b"}",
              st.integers(0, 120)),
    st.builds(lambda n, sign: b'{"type":"status","payload":{"n":' + sign + b"9" * n + b"}}",
              st.integers(1, 6000), st.sampled_from([b"", b"-", b"0.", b"1e"])),
    st.builds(lambda lit: b'{"type":"status","payload":{"x":' + lit + b"}}",
              st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1E999999", b"nan",
                               b"0x10", b"01", b"+1", b".5", b"'s'", b"\"\\ud800\"", b"\"\\udfff\\ud800\""])),
    st.builds(lambda key: b'{"type":"status",' + key + b":1}",
              st.sampled_from([b'"type"', b'"\\ud800"', b'"\\u0000"', b'"payload"', b"1", b"null"])),
    st.builds(lambda raw: b'{"type":"status","source":"' + raw + b'"}', st.binary(min_size=1, max_size=8)),
    st.builds(lambda prefix, event: prefix + encode(event), st.sampled_from([b"\xef\xbb\xbf", b" \n\t", b"\x00"]),
              st.just({"type": "status"})),
    st.just('{"type":"status"}'.encode("utf-16")),
)


@share(0.5)
@given(session_id=st.sampled_from(SESSIONS), data=raw_bodies,
       content_type=st.sampled_from(["application/json", "application/json; charset=utf-8",
                                     "application/json; charset=UTF8"]))
@example(session_id="s1", data=b'{"type":"status","payload":{"n":' + b"9" * 4301 + b"}}",
         content_type="application/json")
@example(session_id="s1", data=b'{"type":"status","\\ud800":1}', content_type="application/json")
def test_raw_bytes_body(harness, session_id, data, content_type):
    try:
        sent = json.loads(data)
    except (ValueError, RecursionError):
        sent = None
    run_append(harness, session_id, data, content_type, sent=sent if isinstance(sent, (dict, list)) else None)


url_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
path_segments = st.one_of(
    st.sampled_from(SESSIONS + RUNS + ["", ".", "..", "-a", "a/b", "a%2Fb", "a b", "a" * 128, "a" * 129,
                                       "a.b:c_d-e", "CON", "index.sqlite3", "..%2F..", "s1\x00"]),
    valid_ids,
    url_text,
).map(lambda text: (text, quote(text, safe="")))
def _decoded(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


raw_path_segments = st.binary(min_size=1, max_size=12).map(lambda raw: (_decoded(raw), quote_from_bytes(raw, safe="")))


@share(0.4)
@given(segment=path_segments | raw_path_segments,
       method=st.sampled_from(["POST", "POST", "GET", "PUT", "DELETE", "PATCH"]),
       body=valid_events)
@example(segment=("s1/", "s1%2F"), method="POST", body={"type": "status"})
def test_any_session_id(harness, segment, method, body):
    text, quoted = segment
    client = harness.get()
    before = disk_state(harness.data_dir)
    response = client.open(f"/api/sessions/{quoted}/events", method=method, data=encode(body),
                           content_type="application/json")
    parsed = check_json_response(response.status_code, response.headers, response.get_data())
    if response.status_code in (200, 201) and method == "POST":
        assert text is not None and ID_RE.match(text), text
        assert parsed["session_id"] == text
        stored = client.get(f"/api/sessions/{quoted}/events?since_seq={parsed['seq'] - 1}&limit=1")
        assert ordered(json.dumps(parsed)) == ordered(json.dumps(stored.get_json()["events"][0]))
    elif response.status_code == 200:
        assert method == "GET"
        assert parsed["session_id"] == text
    else:
        assert disk_state(harness.data_dir) == before
    if text is None or not ID_RE.match(text):
        # What is not an id never becomes a folder or a session.
        assert response.status_code not in (200, 201)


@share(0.3)
@given(segment=path_segments | raw_path_segments)
@example(segment=("0/", "0%2F"))
def test_any_run_id(harness, segment):
    text, quoted = segment
    client = harness.get()
    before = disk_state(harness.data_dir)
    response = client.get(f"/api/runs/{quoted}/events")
    body = check_json_response(response.status_code, response.headers, response.get_data())
    if response.status_code == 200:  # a run some earlier example appended (r1, r2 or one of its own)
        assert text is not None and ID_RE.match(text), text
        assert body["run_id"] == text and body["events"]
        assert all(e["run_id"] == text for e in body["events"])
    assert disk_state(harness.data_dir) == before


query_values = st.one_of(st.integers(-5, 1005).map(str), url_text, st.sampled_from(
    ["", "0", "1", "1000", "1001", "01", "+1", " 1", "1 ", "1.0", "1e3", "0x10", "９", "1_0", "-0",
     "9" * 18, "9" * 19, "99999999999999999999999"]))
query_keys = st.sampled_from(["since_seq", "limit"]) | url_text


@share(0.4)
@given(target=st.sampled_from(["/api/sessions/s1/events", "/api/sessions/s2/events", "/api/sessions/s3/events",
                               "/api/runs/r1/events", "/api/runs/r2/events", "/api/event-types"]),
       pairs=st.lists(st.tuples(query_keys, query_values), max_size=4),
       raw=st.none() | st.binary(max_size=20).map(lambda raw: quote_from_bytes(raw, safe="=&")))
def test_any_query_string(harness, target, pairs, raw):
    client = harness.get()
    before = disk_state(harness.data_dir)
    query = urlencode(pairs) if raw is None else raw
    response = client.get(f"{target}?{query}")
    body = check_json_response(response.status_code, response.headers, response.get_data())
    if response.status_code == 200 and "events" in body:
        seqs = [e["seq"] for e in body["events"]]
        assert seqs == sorted(set(seqs))
        if raw is None:
            args = dict(pairs)
            since = int(args.get("since_seq", 0))
            assert all(seq > since for seq in seqs)
            assert len(seqs) <= int(args.get("limit", 100))
            assert body["next_since_seq"] == (seqs[-1] if seqs else since)
    elif response.status_code == 422:
        assert body["error"]["code"] == "validation_error"
    assert disk_state(harness.data_dir) == before


header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=40)
authorizations = st.one_of(
    st.just(f"Bearer {RW}"),
    st.just(f"Bearer {RW}"),
    st.none(),
    st.sampled_from([f"Bearer {RO}", f"bearer {RW}", f"Bearer  {RW} ", RW, f"Bearer {RW}x",
                     f"Bearer {RW[:-1]}", "Bearer", "Bearer ", f"Basic {RW}", f"Bearer {RO},{RW}"]),
    header_text,
    header_text.map(lambda text: f"Bearer {text}"),
)
content_types = st.one_of(
    st.just("application/json"),
    st.just("application/json; charset=utf-8"),
    st.none(),
    st.sampled_from(["Application/JSON", "application/json; charset=utf-8",
                     "application/json; charset=latin-1", "application/json;charset=\"utf-8\"",
                     "application/json; charset", "application/json; charset=", "application/jsonx",
                     "application/json-patch+json", "text/json", "text/plain", "multipart/form-data",
                     "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "", ";", "/",
                     "application/json; boundary=\"", "application/json, text/plain"]),
    header_text,
)


@share(0.4)
@given(authorization=authorizations, content_type=content_types, body=valid_events | events,
       method=st.sampled_from(["POST", "POST", "GET"]), session_id=st.sampled_from(SESSIONS))
def test_any_authorization_and_content_type(secured_harness, authorization, content_type, body, method, session_id):
    assume(is_sendable(body))
    h = secured_harness
    headers = {} if authorization is None else {"Authorization": authorization}
    if method == "GET":
        client = h.get()
        before = disk_state(h.data_dir)
        response = client.get(f"/api/sessions/{session_id}/events", headers=headers)
        check_json_response(response.status_code, response.headers, response.get_data())
        assert disk_state(h.data_dir) == before
    else:
        response = run_append(h, session_id, encode(body), content_type, sent=body, headers=headers)
    token_like = authorization is not None and (RW in authorization or RO in authorization)
    if not token_like:
        assert response.status_code == 401, (authorization, response.get_data())
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if authorization == f"Bearer {RO}" and method == "POST":
        assert response.status_code == 403
    if authorization == f"Bearer {RW}" and method == "POST":
        if parse_options_header(content_type or "")[0].lower() != "application/json":
            assert response.status_code == 415, (content_type, response.get_data())


# -- a real gunicorn on 127.0.0.1 ----------------------------------------------------------------

REQUEST_LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-gunicorn")
    server = start_server(root / "data", root / "gunicorn.log", workers=2,
                          env={"EVENTSVC_API_TOKENS": RW, "EVENTSVC_READ_TOKENS": RO,
                               "EVENTSVC_MAX_REQUEST_BYTES": str(REQUEST_LIMIT)})
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {RW}"
    for session_id, seed_event in SEED:
        response = http.post(f"{server.url}/api/sessions/{session_id}/events", json=seed_event, timeout=10)
        assert response.status_code == 201
    yield server, http
    http.close()
    server.stop()


def server_session_read(server: Server, http: requests.Session, session_id: str) -> tuple[int, bytes]:
    response = http.get(f"{server.url}/api/sessions/{session_id}/events", params={"limit": 1000}, timeout=30,
                        headers={"X-Request-ID": "fuzz-read"})
    return response.status_code, response.content


def check_server_outcome(server: Server, http: requests.Session, session_id: str, status: int, body: Any,
                         sent: Any, before: tuple, read_before: tuple[int, bytes]) -> None:
    if status in (200, 201):
        assert sent is not None

        def read(sid: str, seq: int) -> bytes:
            page = http.get(f"{server.url}/api/sessions/{sid}/events",
                            params={"since_seq": seq - 1, "limit": 1}, timeout=30)
            assert page.status_code == 200
            return json.dumps(page.json()["events"][0])

        check_accepted(read, session_id, body, sent, status, _last_seq(read_before))
        everything = json.loads(server_session_read(server, http, session_id)[1])["events"]
        assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
    else:
        assert disk_state(server.data_dir) == before
        assert server_session_read(server, http, session_id) == read_before


@share(0.05)
@given(session_id=st.sampled_from(SESSIONS) | valid_ids, body=bodies | raw_bodies, content_type=content_types,
       authorization=st.sampled_from([f"Bearer {RW}"] * 4 + [f"Bearer {RO}", "", "Bearer nope"]))
def test_real_server_any_body_and_headers(real_server, session_id, body, content_type, authorization):
    server, http = real_server
    if isinstance(body, bytes):
        data = body
        try:
            sent = json.loads(data)
        except (ValueError, RecursionError):
            sent = None
    else:
        assume(is_sendable(body))
        data, sent = encode(body), body
    before = disk_state(server.data_dir)
    read_before = server_session_read(server, http, session_id)
    headers = {"Authorization": authorization}
    if content_type is not None:
        headers["Content-Type"] = content_type.encode("latin-1").decode("latin-1")
    try:
        response = requests.post(f"{server.url}/api/sessions/{session_id}/events", data=data, headers=headers,
                                 timeout=30)
    except requests.exceptions.InvalidHeader:
        assume(False)
    body_out = check_json_response(response.status_code, response.headers, response.content)
    note(f"{response.status_code} {response.content[:300]!r}")
    check_server_outcome(server, http, session_id, response.status_code, body_out,
                         sent if isinstance(sent, (dict, list)) else None, before, read_before)


def raw_exchange(server: Server, request: bytes, timeout: float = 20.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` to the server on 127.0.0.1, close our side, and read the whole response."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    assert host == "127.0.0.1"
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed before reading everything: read what it said
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), raw[:500]
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().title()] = value.strip()
    if "Content-Length" in headers:
        rest = rest[: int(headers["Content-Length"])]
    return status, headers, rest


@share(0.05)
@given(session_id=st.sampled_from(SESSIONS), body=(valid_events | events).filter(is_sendable).map(encode) | raw_bodies,
       lie=st.one_of(st.integers(-40, 40), st.sampled_from([10 ** 6, REQUEST_LIMIT, REQUEST_LIMIT + 1, 10 ** 12])))
def test_real_server_content_length_lies(real_server, session_id, body, lie):
    server, http = real_server
    declared = max(0, len(body) + lie)
    before = disk_state(server.data_dir)
    read_before = server_session_read(server, http, session_id)
    head = (f"POST /api/sessions/{session_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {RW}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\nConnection: close\r\n\r\n").encode()
    status, headers, data = raw_exchange(server, head + body)
    note(f"declared {declared}, sent {len(body)}: {status} {data[:300]!r}")
    parsed = check_json_response(status, headers, data)
    # What the service saw is the first ``declared`` bytes; fewer than declared is a broken upload.
    try:
        sent = json.loads(body[:declared]) if declared <= len(body) else None
    except (ValueError, RecursionError):
        sent = None
    check_server_outcome(server, http, session_id, status, parsed,
                         sent if isinstance(sent, (dict, list)) else None, before, read_before)


def _chunked(body: bytes, sizes: list[int], size_line: Callable[[int], bytes]) -> bytes:
    out, cursor, n = b"", 0, 0
    while cursor < len(body):
        size = max(1, sizes[n % len(sizes)]) if sizes else len(body)
        piece = body[cursor:cursor + size]
        out += size_line(len(piece)) + b"\r\n" + piece + b"\r\n"
        cursor += len(piece)
        n += 1
    return out + b"0\r\n\r\n"


honest_size_lines = st.sampled_from([lambda n: b"%x" % n, lambda n: b"%X" % n, lambda n: b"000%x" % n,
                                     lambda n: b"%x;ext=1" % n])
bad_size_tokens = st.sampled_from([b"zz", b"-1", b"", b" ", b"ffffffffffffffffffffffff", b"0x5", b"5 5", b"+5",
                                   b"\xff", b"1_0"])
bad_content_lengths = st.sampled_from([
    [b"abc"], [b"-1"], [b"1.5"], [b""], [b"+5"], [b"0x10"], [b"5, 5"], [b"99999999999999999999999"],
    [b"5", b"6"], [b"5", b"5"], [b"\xff"],
])
framings = st.one_of(
    st.tuples(st.just("chunked"), st.lists(st.integers(1, 64), max_size=4), honest_size_lines),
    st.tuples(st.just("bad chunk size"), st.integers(0, 3), bad_size_tokens),
    st.tuples(st.just("bad content-length"), bad_content_lengths),
    st.tuples(st.just("content-length and chunked"), st.integers(-5, 5)),
)


@share(0.05)
@given(session_id=st.sampled_from(SESSIONS), body=(valid_events | events).filter(is_sendable).map(encode) | raw_bodies,
       padding=st.sampled_from([0, 0, 0, REQUEST_LIMIT]), framing=framings)
@example(session_id="s3", body=b'{"type":"status","payload":{"x":"' + b"a" * 300_000 + b'"}}', padding=0,
         framing=("chunked", [], lambda n: b"%x" % n))
@example(session_id="s3", body=b'{"type":"status"}', padding=0, framing=("bad chunk size", 0, b"zz"))
def test_real_server_hostile_framing(real_server, session_id, body, padding, framing):
    """Chunked bodies (honest, over the limit, or with broken chunk sizes) and broken Content-Length headers."""
    server, http = real_server
    body = body + b" " * padding
    before = disk_state(server.data_dir)
    read_before = server_session_read(server, http, session_id)
    head = (f"POST /api/sessions/{session_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {RW}\r\nContent-Type: application/json\r\nConnection: close\r\n").encode()
    kind = framing[0]
    if kind == "chunked":
        request = head + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(body, framing[1], framing[2])
    elif kind == "bad chunk size":
        honest = _chunked(body, [16], lambda n: b"%x" % n).split(b"\r\n")
        index = min(framing[1], len(honest) - 1) // 2 * 2  # a size line, never a data line
        honest[index] = framing[2]
        request = head + b"Transfer-Encoding: chunked\r\n\r\n" + b"\r\n".join(honest)
    elif kind == "bad content-length":
        request = head + b"".join(b"Content-Length: " + value + b"\r\n" for value in framing[1]) + b"\r\n" + body
    else:
        request = (head + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % max(0, len(body) + framing[1])
                   + _chunked(body, [], lambda n: b"%x" % n))
    status, headers, data = raw_exchange(server, request)
    note(f"{kind}: {status} {headers} {data[:300]!r}")
    assert status < 500, (status, data[:1000])
    if "X-Content-Type-Options" not in headers:
        # Rejected by gunicorn's HTTP parser before the app saw it: a plain 400, nothing stored.
        event(f"{kind}: gunicorn {status}")
        assert status == 400, (status, headers, data[:500])
        assert disk_state(server.data_dir) == before
        return
    parsed = check_json_response(status, headers, data)
    if kind == "chunked":
        if len(body) > REQUEST_LIMIT:
            assert status == 413 and parsed["error"]["code"] == "payload_too_large", (len(body), status, parsed)
        try:
            sent = json.loads(body)
        except (ValueError, RecursionError):
            sent = None
        check_server_outcome(server, http, session_id, status, parsed,
                             sent if isinstance(sent, (dict, list)) else None, before, read_before)
    else:
        assert status not in (200, 201), (kind, parsed)
        assert disk_state(server.data_dir) == before
        assert server_session_read(server, http, session_id) == read_before


def test_real_server_logged_no_unhandled_error(real_server):
    """After the fuzzing above: the server never hit an unhandled exception, even one it answered."""
    server, _ = real_server
    log = server.log()
    assert "Traceback" not in log and "unhandled error" not in log, log[-5000:]
