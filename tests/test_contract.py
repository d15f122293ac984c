"""The Store contract, run against every backend: seqs, reads, idempotency, conflicts, atomic batches, waiting.

Each test gets a fresh store of the backend it is parametrised with (the ``backend`` fixture of
conftest.py; tests/test_summaries.py runs its store tests on both the same way); "writes nothing" compares
the backend's whole stored state (every file under segments/, or every row of every table).
"""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from eventsvc.errors import (EventIdConflict, EventTooLarge, RunNotFound, RunSessionConflict, SeqConflict,
                             SessionNotFound, ValidationFailed)
from eventsvc.schemas import ENVELOPE_KEYS, parse_timestamp
from eventsvc.store.base import Store

KEYS = ["type", "timestamp", "session_id", "run_id", "seq", "source", "event_id", "payload"]


@pytest.fixture
def store(backend) -> Store:
    return backend.open()


def seqs(events: list[dict]) -> list[int]:
    return [event["seq"] for event in events]


def stored_lines(store: Store, session_id: str) -> list[bytes]:
    return store.read_page(session_id, limit=10_000).lines


def read_all_by_paging(read, limit: int) -> list[dict]:
    """Follow since_seq from page to page until a page comes back empty."""
    collected: list[dict] = []
    since_seq = 0
    while True:
        page = read(since_seq=since_seq, limit=limit)
        assert len(page) <= limit
        if not page:
            return collected
        collected.extend(page)
        since_seq = page[-1]["seq"]


def test_every_backend_is_a_store(store):
    assert isinstance(store, Store)


# -- seqs --------------------------------------------------------------------------------------

def test_seqs_are_contiguous_from_one(store):
    appended = [store.append("s1", {"type": "user_message", "payload": {"n": n}}) for n in range(3)]
    assert seqs(appended) == [1, 2, 3]
    assert store.last_seq("s1") == 3


def test_each_session_has_its_own_seqs(store):
    store.append("s1", {"type": "user_message"})
    store.append("s1", {"type": "user_message"})
    assert store.append("s2", {"type": "user_message"})["seq"] == 1
    assert store.append("s1", {"type": "user_message"})["seq"] == 3


def test_last_seq_of_an_unknown_session_is_zero(store):
    assert store.last_seq("nobody") == 0


def test_append_many_assigns_contiguous_seqs_in_input_order(store):
    store.append("s1", {"type": "session_created"})
    batch = store.append_many("s1", [{"type": "user_message", "event_id": f"b{n}"} for n in range(4)])
    assert seqs(batch) == [2, 3, 4, 5]
    assert [event["event_id"] for event in batch] == ["b0", "b1", "b2", "b3"]
    assert store.get_events_by_session("s1")[1:] == batch


def test_events_survive_closing_and_reopening_the_store(backend):
    first = backend.open()
    written = [first.append("s1", {"type": "user_message", "payload": {"n": n}}) for n in range(3)]
    first.close()
    second = backend.open()
    assert second.get_events_by_session("s1") == written
    assert second.append("s1", {"type": "status"})["seq"] == 4


# -- the envelope as stored ----------------------------------------------------------------------

def test_stored_envelope_has_the_eight_keys_in_order(store, backend):
    appended = store.append("s1", {"payload": {"b": 1, "a": 2}, "type": "user_message", "source": "x"})
    assert list(appended) == KEYS
    assert list(ENVELOPE_KEYS) == KEYS
    assert list(store.get_events_by_session("s1")[0]) == KEYS
    assert list(json.loads(stored_lines(store, "s1")[0])) == KEYS


def test_append_fills_defaults(store):
    before = datetime.now(timezone.utc)
    event = store.append("s1", {"type": "user_message"})
    after = datetime.now(timezone.utc)
    assert event["payload"] == {}
    assert event["run_id"] is None
    assert event["source"] == "api"
    assert event["event_id"]
    assert event["timestamp"].endswith("Z")
    stamped = parse_timestamp(event["timestamp"])
    assert before - timedelta(seconds=1) <= stamped <= after + timedelta(seconds=1)


def test_input_timestamp_with_offset_is_stored_in_utc(store, backend):
    event = store.append("s1", {"type": "user_message", "timestamp": "2026-02-06T12:00:00+02:00"})
    assert event["timestamp"] == "2026-02-06T10:00:00Z"
    assert json.loads(stored_lines(store, "s1")[0])["timestamp"] == "2026-02-06T10:00:00Z"


def test_log_lines_are_compact_utf8_json(store, backend):
    store.append("s1", {"type": "user_message", "payload": {"text": "héllo ✓", "list": [1, 2]}})
    line = stored_lines(store, "s1")[0]
    text = line.decode("utf-8")
    assert text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


# -- run and session queries ---------------------------------------------------------------------

def test_run_query_returns_only_that_runs_events_with_session_seqs(mixed_session):
    r1 = mixed_session.get_events_by_run("s1", "r1")
    r2 = mixed_session.get_events_by_run("s1", "r2")
    assert seqs(r1) == [2, 4, 7]
    assert [event["type"] for event in r1] == ["run_started", "tool_call", "run_completed"]
    assert {event["run_id"] for event in r1} == {"r1"}
    assert seqs(r2) == [3, 6]
    assert {event["run_id"] for event in r2} == {"r2"}


def test_run_query_for_an_unknown_run_is_empty(mixed_session):
    assert mixed_session.get_events_by_run("s1", "no-such-run") == []


def test_session_query_includes_run_events_and_legacy_events_without_run_id(mixed_session):
    events = mixed_session.get_events_by_session("s1")
    assert seqs(events) == [1, 2, 3, 4, 5, 6, 7]
    assert [event["run_id"] for event in events] == [None, "r1", "r2", "r1", None, "r2", "r1"]


@pytest.mark.parametrize(("since_seq", "session_seqs", "r1_seqs"), [
    (0, [1, 2, 3, 4, 5, 6, 7], [2, 4, 7]),
    (1, [2, 3, 4, 5, 6, 7], [2, 4, 7]),
    (2, [3, 4, 5, 6, 7], [4, 7]),
    (4, [5, 6, 7], [7]),
    (6, [7], [7]),
    (7, [], []),
    (100, [], []),
])
def test_since_seq_returns_only_later_events(mixed_session, since_seq, session_seqs, r1_seqs):
    assert seqs(mixed_session.get_events_by_session("s1", since_seq=since_seq)) == session_seqs
    assert seqs(mixed_session.get_events_by_run("s1", "r1", since_seq=since_seq)) == r1_seqs


def test_limit_caps_a_page(mixed_session):
    assert seqs(mixed_session.get_events_by_session("s1", limit=3)) == [1, 2, 3]
    assert seqs(mixed_session.get_events_by_run("s1", "r1", limit=2)) == [2, 4]


@pytest.mark.parametrize("limit", [1, 4, 7, 10])
def test_pagination_over_several_pages_returns_the_whole_session(store, limit):
    for n in range(23):
        run_id = ("ra", "rb", None)[n % 3]
        event = {"type": "tool_call", "payload": {"n": n}}
        if run_id:
            event["run_id"] = run_id
        store.append("s1", event)
    whole = store.get_events_by_session("s1", limit=1000)
    assert seqs(whole) == list(range(1, 24))
    paged = read_all_by_paging(lambda **q: store.get_events_by_session("s1", **q), limit)
    assert paged == whole


@pytest.mark.parametrize("limit", [1, 3, 5])
def test_pagination_over_several_pages_returns_the_whole_run(store, limit):
    for n in range(20):
        event = {"type": "tool_call", "payload": {"n": n}}
        if n % 2:
            event["run_id"] = "r1"
        store.append("s1", event)
    whole = store.get_events_by_run("s1", "r1", limit=1000)
    assert seqs(whole) == list(range(2, 21, 2))
    paged = read_all_by_paging(lambda **q: store.get_events_by_run("s1", "r1", **q), limit)
    assert paged == whole


# -- idempotent re-send ----------------------------------------------------------------------------

def test_idempotent_resend_returns_the_stored_event_without_a_new_seq(store, backend):
    original = store.append("s1", {"type": "run_started", "run_id": "r1", "event_id": "e1",
                                   "payload": {"a": 1, "b": [1, 2]}})
    store.append("s1", {"type": "user_message"})
    before = backend.state()
    again = store.append("s1", {"type": "run_started", "run_id": "r1", "event_id": "e1",
                                "payload": {"b": [1, 2], "a": 1}})
    assert again == original
    assert store.last_seq("s1") == 2
    assert backend.state() == before


def test_resend_with_another_timestamp_returns_the_stored_timestamp(store):
    original = store.append("s1", {"type": "user_message", "event_id": "e1", "timestamp": "2026-01-01T00:00:00Z"})
    again = store.append("s1", {"type": "user_message", "event_id": "e1", "timestamp": "2026-05-05T05:05:05Z"})
    assert again == original
    assert store.last_seq("s1") == 1


def test_resend_of_a_whole_batch_returns_the_stored_events(store, backend):
    batch = [{"type": "user_message", "event_id": f"e{n}", "payload": {"n": n}} for n in range(3)]
    first = store.append_many("s1", batch)
    before = backend.state()
    assert store.append_many("s1", batch) == first
    assert store.last_seq("s1") == 3
    assert backend.state() == before


def test_batch_mixing_a_resend_and_new_events_stores_only_the_new(store):
    stored = store.append("s1", {"type": "user_message", "event_id": "old"})
    result = store.append_many("s1", [{"type": "user_message", "event_id": "new1"},
                                      {"type": "user_message", "event_id": "old"},
                                      {"type": "user_message", "event_id": "new2"}])
    assert result[1] == stored
    assert [result[0]["seq"], result[2]["seq"]] == [2, 3]
    assert seqs(store.get_events_by_session("s1")) == [1, 2, 3]


def test_same_event_id_in_another_session_is_a_different_event(store):
    assert store.append("s1", {"type": "user_message", "event_id": "e1"})["seq"] == 1
    other = store.append("s2", {"type": "user_message", "event_id": "e1", "payload": {"other": True}})
    assert (other["session_id"], other["seq"]) == ("s2", 1)


@pytest.mark.parametrize(("change",), [
    ({"payload": {"text": "changed"}},),
    ({"payload": {}},),
    ({"type": "assistant_message"},),
    ({"run_id": "r9"},),
    ({"source": "someone-else"},),
])
def test_conflicting_resend_raises_and_writes_nothing(store, backend, change):
    original = {"type": "user_message", "event_id": "e1", "payload": {"text": "hi"}}
    store.append("s1", original)
    before = backend.state()
    with pytest.raises(EventIdConflict):
        store.append("s1", {**original, **change})
    assert store.last_seq("s1") == 1
    assert backend.state() == before
    assert store.get_events_by_session("s1")[0]["payload"] == {"text": "hi"}


def test_conflicting_resend_of_a_run_event_without_its_run_id_is_a_conflict(store, backend):
    store.append("s1", {"type": "tool_call", "run_id": "r1", "event_id": "e1"})
    before = backend.state()
    with pytest.raises(EventIdConflict):
        store.append("s1", {"type": "tool_call", "event_id": "e1"})
    assert backend.state() == before


# -- optimistic concurrency ------------------------------------------------------------------------

@pytest.mark.parametrize("expected", [1, 2, 4, 10])
def test_seq_expectation_that_is_not_next_is_a_conflict(store, backend, expected):
    store.append("s1", {"type": "user_message"})
    store.append("s1", {"type": "user_message"})
    before = backend.state()
    with pytest.raises(SeqConflict):
        store.append("s1", {"type": "user_message", "seq": expected})
    assert store.last_seq("s1") == 2
    assert backend.state() == before


def test_correct_seq_expectation_is_accepted(store):
    store.append("s1", {"type": "user_message"})
    assert store.append("s1", {"type": "user_message", "seq": 2})["seq"] == 2
    assert store.append("s2", {"type": "user_message", "seq": 1})["seq"] == 1


def test_seq_expectation_in_a_new_session_must_be_one(store, backend):
    with pytest.raises(SeqConflict):
        store.append("fresh", {"type": "user_message", "seq": 2})
    assert store.last_seq("fresh") == 0
    assert "fresh" not in store.session_ids()


def test_batch_seq_expectations_are_checked_per_position(store, backend):
    store.append("s1", {"type": "user_message"})
    before = backend.state()
    with pytest.raises(SeqConflict):
        store.append_many("s1", [{"type": "user_message", "seq": 2}, {"type": "user_message", "seq": 4}])
    assert backend.state() == before
    assert store.last_seq("s1") == 1
    accepted = store.append_many("s1", [{"type": "user_message", "seq": 2}, {"type": "user_message", "seq": 3}])
    assert seqs(accepted) == [2, 3]


# -- run ownership ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("event",), [
    ({"type": "run_started", "run_id": "r1"},),
    ({"type": "user_message", "run_id": "r1"},),
])
def test_run_owned_by_another_session_is_a_conflict(store, backend, event):
    store.append("s1", {"type": "run_created", "run_id": "r1"})
    store.append("s2", {"type": "user_message"})
    before = backend.state()
    with pytest.raises(RunSessionConflict):
        store.append("s2", event)
    assert store.last_seq("s2") == 1
    assert backend.state() == before
    assert store.get_events_by_run("s2", "r1") == []


def test_run_in_another_session_creates_no_session(store, backend):
    store.append("s1", {"type": "run_created", "run_id": "r1"})
    with pytest.raises(RunSessionConflict):
        store.append("s2", {"type": "run_started", "run_id": "r1"})
    assert store.last_seq("s2") == 0
    assert "s2" not in store.session_ids()


def test_run_stays_with_the_session_of_its_first_event(store):
    store.append("s1", {"type": "run_created", "run_id": "r1"})
    assert store.append("s1", {"type": "run_started", "run_id": "r1"})["seq"] == 2
    assert store.run_session("r1") == "s1"


# -- atomic batches ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("bad_event", "field"), [
    ({"type": "user_message", "payload": "not an object"}, "payload"),
    ({"type": "run_started"}, "run_id"),
    ({"type": "no_such_type"}, "type"),
    ({"type": "user_message", "unknown": 1}, "unknown"),
    ({"type": "user_message", "session_id": "other"}, "session_id"),
    ({"type": "user_message", "payload": {"x": float("nan")}}, "payload"),
])
def test_atomic_batch_with_one_bad_event_writes_nothing(store, backend, bad_event, field):
    store.append("s1", {"type": "user_message"})
    before = backend.state()
    batch = [{"type": "user_message", "event_id": "ok0"}, bad_event, {"type": "status", "event_id": "ok2"}]
    with pytest.raises(ValidationFailed) as caught:
        store.append_many("s1", batch)
    assert set(caught.value.details) == {1}
    assert field in caught.value.details[1]
    assert store.last_seq("s1") == 1
    assert backend.state() == before


def test_atomic_batch_errors_are_keyed_by_every_bad_index(store):
    batch = [{"type": "bogus"}, {"type": "user_message"}, {"type": "user_message", "payload": []}]
    with pytest.raises(ValidationFailed) as caught:
        store.append_many("s1", batch)
    assert set(caught.value.details) == {0, 2}


def test_atomic_batch_in_a_new_session_with_one_bad_event_creates_nothing(store, backend):
    with pytest.raises(ValidationFailed):
        store.append_many("fresh", [{"type": "user_message"}, {"type": "run_started"}])
    assert store.last_seq("fresh") == 0
    assert "fresh" not in store.session_ids()


def test_atomic_batch_with_one_conflicting_event_writes_nothing(store, backend):
    store.append("s1", {"type": "user_message", "event_id": "e1", "payload": {"v": 1}})
    before = backend.state()
    with pytest.raises(EventIdConflict):
        store.append_many("s1", [{"type": "user_message"}, {"type": "user_message", "event_id": "e1"}])
    assert store.last_seq("s1") == 1
    assert backend.state() == before


def test_atomic_batch_with_a_run_of_another_session_writes_nothing(store, backend):
    store.append("s1", {"type": "run_created", "run_id": "r1"})
    store.append("s2", {"type": "user_message"})
    before = backend.state()
    with pytest.raises(RunSessionConflict):
        store.append_many("s2", [{"type": "run_created", "run_id": "r2"}, {"type": "tool_call", "run_id": "r1"}])
    assert backend.state() == before
    assert store.run_session("r2") is None


def test_batch_with_a_repeated_event_id_is_rejected(store, backend):
    store.append("s1", {"type": "user_message"})
    before = backend.state()
    with pytest.raises(ValidationFailed) as caught:
        store.append_many("s1", [{"type": "user_message", "event_id": "dup"},
                                 {"type": "status"},
                                 {"type": "user_message", "event_id": "dup"}])
    assert set(caught.value.details) == {2}
    assert "event_id" in caught.value.details[2]
    assert store.last_seq("s1") == 1
    assert backend.state() == before


# -- single-event validation ------------------------------------------------------------------------

def test_nan_payload_float_is_rejected_and_nothing_written(store, backend):
    store.append("s1", {"type": "user_message"})
    before = backend.state()
    with pytest.raises(ValidationFailed) as caught:
        store.append("s1", {"type": "user_message", "payload": {"x": float("nan")}})
    assert isinstance(caught.value, ValueError)
    assert "payload" in caught.value.details
    assert backend.state() == before


def test_run_scoped_event_without_run_id_is_rejected_with_field_details(store, backend):
    with pytest.raises(ValidationFailed) as caught:
        store.append("s1", {"type": "run_completed"})
    assert "run_id" in caught.value.details
    assert store.last_seq("s1") == 0


def test_legacy_event_without_run_id_is_accepted(store):
    assert store.append("s1", {"type": "tool_result"})["run_id"] is None


@pytest.mark.parametrize(("session_id",), [("../escape",), (".hidden",), ("a/b",), ("",), ("a" * 129,)])
def test_invalid_session_id_is_rejected_and_creates_nothing(store, backend, session_id):
    before = backend.state()
    with pytest.raises(ValidationFailed) as caught:
        store.append(session_id, {"type": "user_message"})
    assert "session_id" in caught.value.details
    assert backend.state() == before
    assert store.session_ids() == []


def test_event_larger_than_max_event_bytes_is_rejected(backend):
    small = backend.open(max_event_bytes=1000)
    try:
        small.append("s1", {"type": "user_message"})
        before = backend.state()
        with pytest.raises(EventTooLarge) as caught:
            small.append("s1", {"type": "user_message", "payload": {"text": "x" * 1000}})
        assert isinstance(caught.value, ValueError)
        assert small.last_seq("s1") == 1
        assert backend.state() == before
    finally:
        small.close()


def test_max_event_bytes_is_the_serialised_size(backend):
    """An event of exactly the limit is stored; one byte more is rejected."""
    limit = 600
    base = {"type": "user_message", "timestamp": "2026-02-06T10:00:00Z", "session_id": "s1", "run_id": None,
            "seq": 1, "source": "api", "event_id": "e1", "payload": {"pad": ""}}
    padding = limit - len(json.dumps(base, separators=(",", ":")).encode())
    event = {key: base[key] for key in ("type", "timestamp", "source", "event_id")}
    sized = backend.open(max_event_bytes=limit)
    try:
        with pytest.raises(EventTooLarge):
            sized.append("s1", {**event, "payload": {"pad": "x" * (padding + 1)}})
        stored = sized.append("s1", {**event, "payload": {"pad": "x" * padding}})
        assert len(stored_lines(sized, "s1")[0]) == limit
        assert stored["seq"] == 1
    finally:
        sized.close()


def test_default_max_event_bytes_is_one_mib(store, backend):
    with pytest.raises(EventTooLarge):
        store.append("s1", {"type": "user_message", "payload": {"text": "x" * (1024 * 1024)}})
    assert store.last_seq("s1") == 0
    assert store.append("s1", {"type": "user_message", "payload": {"text": "x" * (1024 * 1024 - 500)}})["seq"] == 1


def test_batch_with_one_event_too_large_writes_nothing(backend):
    small = backend.open(max_event_bytes=1000)
    try:
        small.append("s1", {"type": "user_message"})
        before = backend.state()
        with pytest.raises(EventTooLarge):
            small.append_many("s1", [{"type": "user_message"}, {"type": "user_message", "payload": {"t": "x" * 2000}}])
        assert small.last_seq("s1") == 1
        assert backend.state() == before
    finally:
        small.close()


# -- segments ----------------------------------------------------------------------------------------



# -- pages, runs by id, lookups ----------------------------------------------------------------------

def test_read_page_of_an_unknown_session_is_session_not_found(store):
    with pytest.raises(SessionNotFound):
        store.read_page("nobody")


def test_read_page_says_whether_more_follow(mixed_session):
    first = mixed_session.read_page("s1", limit=4)
    assert (first.seqs, first.has_more) == ([1, 2, 3, 4], True)
    assert [json.loads(line)["seq"] for line in first.lines] == first.seqs
    rest = mixed_session.read_page("s1", since_seq=4, limit=3)
    assert (rest.seqs, rest.has_more) == ([5, 6, 7], False)
    assert mixed_session.read_page("s1", run_id="r1", since_seq=2).seqs == [4, 7]


def test_read_run_page_finds_the_run_without_its_session(mixed_session):
    page = mixed_session.read_run_page("r2")
    assert (page.session_id, page.seqs, page.has_more) == ("s1", [3, 6], False)
    assert mixed_session.read_run_page("r1", since_seq=2, limit=1).seqs == [4]
    assert mixed_session.read_run_page("r1", since_seq=7).seqs == []


@pytest.mark.parametrize(("run_id",), [("no-such-run",), ("bad/id",), ("",), ("x\x00y",)])
def test_read_run_page_of_an_unknown_run_is_run_not_found(mixed_session, run_id):
    with pytest.raises(RunNotFound):
        mixed_session.read_run_page(run_id)


@pytest.mark.parametrize(("since_seq", "limit"), [(-1, 10), (0, 0), (0, -5), (True, 10),
                                                  (2**63, 10), (2**64, 10), (0, 2**63 - 1), (0, 2**64)])
def test_page_bounds_out_of_range_are_a_validation_error(mixed_session, since_seq, limit):
    """Beyond a 64-bit integer too: what neither backend can store is the caller's error, not the storage's."""
    with pytest.raises(ValidationFailed):
        mixed_session.read_page("s1", since_seq=since_seq, limit=limit)
    with pytest.raises(ValidationFailed):
        mixed_session.get_events_by_session("s1", since_seq=since_seq, limit=limit)
    with pytest.raises(ValidationFailed):
        mixed_session.read_run_page("r1", since_seq=since_seq, limit=limit)
    with pytest.raises(ValidationFailed):
        mixed_session.get_events_by_run("s1", "r1", since_seq, limit)


def test_the_largest_page_bounds_are_served(mixed_session):
    largest_limit, largest_seq = 2**63 - 2, 2**63 - 1
    assert mixed_session.read_page("s1", limit=largest_limit).seqs == mixed_session.read_page("s1").seqs
    assert mixed_session.read_page("s1", limit=largest_limit, types=["tool_call"]).lines
    assert mixed_session.read_run_page("r1", limit=largest_limit).seqs
    assert mixed_session.read_page("s1", since_seq=largest_seq).seqs == []


def test_lookups_of_runs_and_sessions(mixed_session):
    store = mixed_session
    assert store.run_session("r1") == "s1"
    assert store.run_session("nope") is None
    assert store.run_terminal_seq("s1", "r1") == 7
    assert store.run_terminal_seq("s1", "r2") is None
    store.append("s0", {"type": "user_message"})
    assert store.session_ids() == ["s0", "s1"]


def test_appends_and_reads_answer_with_the_same_bytes(store):
    result = store.append_one("s1", {"type": "user_message", "payload": {"text": "héllo ✓"}})
    assert result.created == 1
    assert result.lines == stored_lines(store, "s1")
    again = store.append_one("s1", {**{k: result.events[0][k] for k in ("type", "event_id", "payload")}})
    assert (again.created, again.events) == (0, result.events)


# -- waiting for appends --------------------------------------------------------------------------------

def test_wait_for_events_returns_at_once_when_already_past(mixed_session):
    started = time.monotonic()
    assert mixed_session.wait_for_events("s1", 3, 10.0) == 7
    assert time.monotonic() - started < 5.0


def test_wait_for_events_times_out_with_the_last_seq(mixed_session):
    assert mixed_session.wait_for_events("s1", 7, 0.2) == 7
    assert mixed_session.wait_for_events("nobody", 0, 0.1) == 0


def test_wait_for_events_wakes_on_an_append_through_another_store(backend, store):
    """Another store on the same storage stands for another process (or host)."""
    other = backend.open()
    store.append("s1", {"type": "user_message"})
    woken: list[int] = []
    waiter = threading.Thread(target=lambda: woken.append(store.wait_for_events("s1", 1, 30.0)))
    waiter.start()
    other.append("s1", {"type": "user_message"})
    waiter.join(timeout=30.0)
    assert woken == [2]
