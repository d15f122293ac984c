"""The in-process EventStore contract: seqs, reads, idempotency, conflicts, atomic batches, segments."""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from eventsvc import EventStore
from eventsvc.errors import (EventIdConflict, EventTooLarge, RunSessionConflict, SeqConflict,
                             ValidationFailed)
from eventsvc.schemas import ENVELOPE_KEYS, parse_timestamp

KEYS = ["type", "timestamp", "session_id", "run_id", "seq", "source", "event_id", "payload"]


def files_snapshot(data_dir: Path) -> dict[str, bytes]:
    """Every file under segments/, by relative path, with its bytes."""
    root = data_dir / "segments"
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def segment_paths(data_dir: Path, session_id: str) -> list[Path]:
    return sorted((data_dir / "segments" / session_id).glob("*.jsonl"))


def log_lines(data_dir: Path, session_id: str) -> list[bytes]:
    """Every line of a session's log, in segment order, without newlines."""
    lines: list[bytes] = []
    for path in segment_paths(data_dir, session_id):
        data = path.read_bytes()
        assert data.endswith(b"\n")
        lines.extend(data.split(b"\n")[:-1])
    return lines


def seqs(events: list[dict]) -> list[int]:
    return [event["seq"] for event in events]


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


@pytest.fixture
def mixed_session(store: EventStore) -> EventStore:
    """s1: a legacy event, two runs interleaved, legacy events carrying and lacking a run_id."""
    for event in [
        {"type": "user_message", "payload": {"text": "hi"}},           # 1
        {"type": "run_started", "run_id": "r1"},                        # 2
        {"type": "run_started", "run_id": "r2"},                        # 3
        {"type": "tool_call", "run_id": "r1", "payload": {"n": 1}},     # 4
        {"type": "assistant_message", "payload": {"text": "ok"}},       # 5
        {"type": "verify_pass", "run_id": "r2"},                        # 6
        {"type": "run_completed", "run_id": "r1"},                      # 7
    ]:
        store.append("s1", event)
    return store


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


def test_events_survive_closing_and_reopening_the_store(data_dir):
    first = EventStore(data_dir)
    written = [first.append("s1", {"type": "user_message", "payload": {"n": n}}) for n in range(3)]
    first.close()
    second = EventStore(data_dir)
    try:
        assert second.get_events_by_session("s1") == written
        assert second.append("s1", {"type": "status"})["seq"] == 4
    finally:
        second.close()


def test_store_creates_its_data_dir(tmp_path):
    data_dir = tmp_path / "deep" / "er" / "data"
    created = EventStore(data_dir)
    try:
        created.append("s1", {"type": "user_message"})
        assert (data_dir / "index.sqlite3").is_file()
        assert segment_paths(data_dir, "s1") == [data_dir / "segments" / "s1" / f"{1:020d}.jsonl"]
    finally:
        created.close()


# -- the envelope as stored ----------------------------------------------------------------------

def test_stored_envelope_has_the_eight_keys_in_order(store, data_dir):
    appended = store.append("s1", {"payload": {"b": 1, "a": 2}, "type": "user_message", "source": "x"})
    assert list(appended) == KEYS
    assert list(ENVELOPE_KEYS) == KEYS
    assert list(store.get_events_by_session("s1")[0]) == KEYS
    assert list(json.loads(log_lines(data_dir, "s1")[0])) == KEYS


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


def test_input_timestamp_with_offset_is_stored_in_utc(store, data_dir):
    event = store.append("s1", {"type": "user_message", "timestamp": "2026-02-06T12:00:00+02:00"})
    assert event["timestamp"] == "2026-02-06T10:00:00Z"
    assert json.loads(log_lines(data_dir, "s1")[0])["timestamp"] == "2026-02-06T10:00:00Z"


def test_reads_return_envelopes_exactly_as_the_log_lines(mixed_session, data_dir):
    store = mixed_session
    store.append("s1", {"type": "user_message", "payload": {"text": "héllo ✓", "z": 1, "a": [1.5, None]}})
    lines = log_lines(data_dir, "s1")
    events = store.get_events_by_session("s1")
    assert [json.loads(line) for line in lines] == events
    assert [list(json.loads(line)) for line in lines] == [list(event) for event in events]
    assert store.get_events_by_run("s1", "r1") == [json.loads(lines[n - 1]) for n in (2, 4, 7)]


def test_log_lines_are_compact_utf8_json(store, data_dir):
    store.append("s1", {"type": "user_message", "payload": {"text": "héllo ✓", "list": [1, 2]}})
    line = log_lines(data_dir, "s1")[0]
    text = line.decode("utf-8")
    assert text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


def test_reads_come_from_the_log_bytes(store, data_dir):
    """Rewriting a payload in the segment (same length) shows in reads: SQLite holds no copy."""
    store.append("s1", {"type": "user_message", "payload": {"text": "aaaa"}})
    [path] = segment_paths(data_dir, "s1")
    path.write_bytes(path.read_bytes().replace(b'"aaaa"', b'"bbbb"'))
    assert store.get_events_by_session("s1")[0]["payload"] == {"text": "bbbb"}


def test_index_rows_point_at_the_lines_of_the_log(mixed_session, data_dir):
    connection = sqlite3.connect(data_dir / "index.sqlite3")
    try:
        [table] = connection.execute(
            "SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND name = 'idx_session_event_run_seq'"
        ).fetchone()
        rows = connection.execute(
            f'SELECT session_id, seq, run_id, type, event_id, timestamp, segment, "offset", length'
            f' FROM "{table}" WHERE session_id = ? ORDER BY seq', ("s1",)).fetchall()
    finally:
        connection.close()
    assert [row[1] for row in rows] == list(range(1, 8))
    for session_id, seq, run_id, type_, event_id, timestamp, segment, offset, length in rows:
        data = (data_dir / "segments" / session_id / f"{segment:020d}.jsonl").read_bytes()
        line = data[offset:offset + length]
        assert line.endswith(b"\n")
        envelope = json.loads(line)
        assert (envelope["seq"], envelope["run_id"], envelope["type"], envelope["event_id"],
                envelope["timestamp"]) == (seq, run_id, type_, event_id, timestamp)


def test_index_declares_its_unique_keys_and_run_index(store, data_dir):
    store.append("s1", {"type": "user_message"})
    connection = sqlite3.connect(data_dir / "index.sqlite3")
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        [table] = connection.execute(
            "SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND name = 'idx_session_event_run_seq'"
        ).fetchone()
        indexes = {}
        for _, name, unique, *_ in connection.execute(f'PRAGMA index_list("{table}")'):
            columns = [row[2] for row in connection.execute(f'PRAGMA index_info("{name}")')]
            indexes[name] = (bool(unique), columns)
    finally:
        connection.close()
    assert indexes["idx_session_event_run_seq"][1][:3] == ["session_id", "run_id", "seq"]
    unique_keys = {tuple(columns) for unique, columns in indexes.values() if unique}
    assert ("session_id", "seq") in unique_keys
    assert ("session_id", "event_id") in unique_keys


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


def _table_scans(plan: str) -> list[str]:
    """Steps that read a table or index whole (scanning the page's own subquery result is fine)."""
    return [step for step in plan.split(" | ")
            if step.startswith("SCAN") and not step.startswith(("SCAN (subquery", "SCAN p"))]


def test_run_query_plan_uses_idx_session_event_run_seq(mixed_session):
    plan = mixed_session.query_plan("s1", "r1")
    assert "COVERING INDEX idx_session_event_run_seq" in plan
    assert _table_scans(plan) == []


def test_run_page_by_run_id_plan_uses_the_run_key_and_the_covering_index(mixed_session):
    plan = mixed_session._index.run_page_plan("r1")
    assert "SEARCH r USING PRIMARY KEY (run_id=?)" in plan
    assert "COVERING INDEX idx_session_event_run_seq" in plan
    assert _table_scans(plan) == []


# -- idempotent re-send ----------------------------------------------------------------------------

def test_idempotent_resend_returns_the_stored_event_without_a_new_seq(store, data_dir):
    original = store.append("s1", {"type": "run_started", "run_id": "r1", "event_id": "e1",
                                   "payload": {"a": 1, "b": [1, 2]}})
    store.append("s1", {"type": "user_message"})
    before = files_snapshot(data_dir)
    again = store.append("s1", {"type": "run_started", "run_id": "r1", "event_id": "e1",
                                "payload": {"b": [1, 2], "a": 1}})
    assert again == original
    assert store.last_seq("s1") == 2
    assert files_snapshot(data_dir) == before


def test_resend_with_another_timestamp_returns_the_stored_timestamp(store):
    original = store.append("s1", {"type": "user_message", "event_id": "e1", "timestamp": "2026-01-01T00:00:00Z"})
    again = store.append("s1", {"type": "user_message", "event_id": "e1", "timestamp": "2026-05-05T05:05:05Z"})
    assert again == original
    assert store.last_seq("s1") == 1


def test_resend_of_a_whole_batch_returns_the_stored_events(store, data_dir):
    batch = [{"type": "user_message", "event_id": f"e{n}", "payload": {"n": n}} for n in range(3)]
    first = store.append_many("s1", batch)
    before = files_snapshot(data_dir)
    assert store.append_many("s1", batch) == first
    assert store.last_seq("s1") == 3
    assert files_snapshot(data_dir) == before


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
def test_conflicting_resend_raises_and_writes_nothing(store, data_dir, change):
    original = {"type": "user_message", "event_id": "e1", "payload": {"text": "hi"}}
    store.append("s1", original)
    before = files_snapshot(data_dir)
    with pytest.raises(EventIdConflict):
        store.append("s1", {**original, **change})
    assert store.last_seq("s1") == 1
    assert files_snapshot(data_dir) == before
    assert store.get_events_by_session("s1")[0]["payload"] == {"text": "hi"}


def test_conflicting_resend_of_a_run_event_without_its_run_id_is_a_conflict(store, data_dir):
    store.append("s1", {"type": "tool_call", "run_id": "r1", "event_id": "e1"})
    before = files_snapshot(data_dir)
    with pytest.raises(EventIdConflict):
        store.append("s1", {"type": "tool_call", "event_id": "e1"})
    assert files_snapshot(data_dir) == before


# -- optimistic concurrency ------------------------------------------------------------------------

@pytest.mark.parametrize("expected", [1, 2, 4, 10])
def test_seq_expectation_that_is_not_next_is_a_conflict(store, data_dir, expected):
    store.append("s1", {"type": "user_message"})
    store.append("s1", {"type": "user_message"})
    before = files_snapshot(data_dir)
    with pytest.raises(SeqConflict):
        store.append("s1", {"type": "user_message", "seq": expected})
    assert store.last_seq("s1") == 2
    assert files_snapshot(data_dir) == before


def test_correct_seq_expectation_is_accepted(store):
    store.append("s1", {"type": "user_message"})
    assert store.append("s1", {"type": "user_message", "seq": 2})["seq"] == 2
    assert store.append("s2", {"type": "user_message", "seq": 1})["seq"] == 1


def test_seq_expectation_in_a_new_session_must_be_one(store, data_dir):
    with pytest.raises(SeqConflict):
        store.append("fresh", {"type": "user_message", "seq": 2})
    assert store.last_seq("fresh") == 0
    assert not (data_dir / "segments" / "fresh").exists()


def test_batch_seq_expectations_are_checked_per_position(store, data_dir):
    store.append("s1", {"type": "user_message"})
    before = files_snapshot(data_dir)
    with pytest.raises(SeqConflict):
        store.append_many("s1", [{"type": "user_message", "seq": 2}, {"type": "user_message", "seq": 4}])
    assert files_snapshot(data_dir) == before
    assert store.last_seq("s1") == 1
    accepted = store.append_many("s1", [{"type": "user_message", "seq": 2}, {"type": "user_message", "seq": 3}])
    assert seqs(accepted) == [2, 3]


# -- run ownership ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("event",), [
    ({"type": "run_started", "run_id": "r1"},),
    ({"type": "user_message", "run_id": "r1"},),
])
def test_run_owned_by_another_session_is_a_conflict(store, data_dir, event):
    store.append("s1", {"type": "run_created", "run_id": "r1"})
    store.append("s2", {"type": "user_message"})
    before = files_snapshot(data_dir)
    with pytest.raises(RunSessionConflict):
        store.append("s2", event)
    assert store.last_seq("s2") == 1
    assert files_snapshot(data_dir) == before
    assert store.get_events_by_run("s2", "r1") == []


def test_run_in_another_session_creates_no_session(store, data_dir):
    store.append("s1", {"type": "run_created", "run_id": "r1"})
    with pytest.raises(RunSessionConflict):
        store.append("s2", {"type": "run_started", "run_id": "r1"})
    assert store.last_seq("s2") == 0
    assert not (data_dir / "segments" / "s2").exists()


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
def test_atomic_batch_with_one_bad_event_writes_nothing(store, data_dir, bad_event, field):
    store.append("s1", {"type": "user_message"})
    before = files_snapshot(data_dir)
    batch = [{"type": "user_message", "event_id": "ok0"}, bad_event, {"type": "status", "event_id": "ok2"}]
    with pytest.raises(ValidationFailed) as caught:
        store.append_many("s1", batch)
    assert set(caught.value.details) == {1}
    assert field in caught.value.details[1]
    assert store.last_seq("s1") == 1
    assert files_snapshot(data_dir) == before


def test_atomic_batch_errors_are_keyed_by_every_bad_index(store):
    batch = [{"type": "bogus"}, {"type": "user_message"}, {"type": "user_message", "payload": []}]
    with pytest.raises(ValidationFailed) as caught:
        store.append_many("s1", batch)
    assert set(caught.value.details) == {0, 2}


def test_atomic_batch_in_a_new_session_with_one_bad_event_creates_nothing(store, data_dir):
    with pytest.raises(ValidationFailed):
        store.append_many("fresh", [{"type": "user_message"}, {"type": "run_started"}])
    assert store.last_seq("fresh") == 0
    assert not (data_dir / "segments" / "fresh").exists()


def test_atomic_batch_with_one_conflicting_event_writes_nothing(store, data_dir):
    store.append("s1", {"type": "user_message", "event_id": "e1", "payload": {"v": 1}})
    before = files_snapshot(data_dir)
    with pytest.raises(EventIdConflict):
        store.append_many("s1", [{"type": "user_message"}, {"type": "user_message", "event_id": "e1"}])
    assert store.last_seq("s1") == 1
    assert files_snapshot(data_dir) == before


def test_atomic_batch_with_a_run_of_another_session_writes_nothing(store, data_dir):
    store.append("s1", {"type": "run_created", "run_id": "r1"})
    store.append("s2", {"type": "user_message"})
    before = files_snapshot(data_dir)
    with pytest.raises(RunSessionConflict):
        store.append_many("s2", [{"type": "run_created", "run_id": "r2"}, {"type": "tool_call", "run_id": "r1"}])
    assert files_snapshot(data_dir) == before
    assert store.run_session("r2") is None


def test_batch_with_a_repeated_event_id_is_rejected(store, data_dir):
    store.append("s1", {"type": "user_message"})
    before = files_snapshot(data_dir)
    with pytest.raises(ValidationFailed) as caught:
        store.append_many("s1", [{"type": "user_message", "event_id": "dup"},
                                 {"type": "status"},
                                 {"type": "user_message", "event_id": "dup"}])
    assert set(caught.value.details) == {2}
    assert "event_id" in caught.value.details[2]
    assert store.last_seq("s1") == 1
    assert files_snapshot(data_dir) == before


# -- single-event validation ------------------------------------------------------------------------

def test_nan_payload_float_is_rejected_and_nothing_written(store, data_dir):
    store.append("s1", {"type": "user_message"})
    before = files_snapshot(data_dir)
    with pytest.raises(ValidationFailed) as caught:
        store.append("s1", {"type": "user_message", "payload": {"x": float("nan")}})
    assert isinstance(caught.value, ValueError)
    assert "payload" in caught.value.details
    assert files_snapshot(data_dir) == before


def test_run_scoped_event_without_run_id_is_rejected_with_field_details(store, data_dir):
    with pytest.raises(ValidationFailed) as caught:
        store.append("s1", {"type": "run_completed"})
    assert "run_id" in caught.value.details
    assert store.last_seq("s1") == 0


def test_legacy_event_without_run_id_is_accepted(store):
    assert store.append("s1", {"type": "tool_result"})["run_id"] is None


@pytest.mark.parametrize(("session_id",), [("../escape",), (".hidden",), ("a/b",), ("",), ("a" * 129,)])
def test_invalid_session_id_is_rejected_and_creates_nothing(store, data_dir, session_id):
    with pytest.raises(ValidationFailed) as caught:
        store.append(session_id, {"type": "user_message"})
    assert "session_id" in caught.value.details
    assert files_snapshot(data_dir) == {}
    assert not (data_dir / "escape").exists()


def test_event_larger_than_max_event_bytes_is_rejected(data_dir):
    small = EventStore(data_dir, max_event_bytes=1000)
    try:
        small.append("s1", {"type": "user_message"})
        before = files_snapshot(data_dir)
        with pytest.raises(EventTooLarge) as caught:
            small.append("s1", {"type": "user_message", "payload": {"text": "x" * 1000}})
        assert isinstance(caught.value, ValueError)
        assert small.last_seq("s1") == 1
        assert files_snapshot(data_dir) == before
    finally:
        small.close()


def test_max_event_bytes_is_the_serialised_size(data_dir):
    """An event of exactly the limit is stored; one byte more is rejected."""
    limit = 600
    base = {"type": "user_message", "timestamp": "2026-02-06T10:00:00Z", "session_id": "s1", "run_id": None,
            "seq": 1, "source": "api", "event_id": "e1", "payload": {"pad": ""}}
    padding = limit - len(json.dumps(base, separators=(",", ":")).encode())
    event = {key: base[key] for key in ("type", "timestamp", "source", "event_id")}
    sized = EventStore(data_dir, max_event_bytes=limit)
    try:
        with pytest.raises(EventTooLarge):
            sized.append("s1", {**event, "payload": {"pad": "x" * (padding + 1)}})
        stored = sized.append("s1", {**event, "payload": {"pad": "x" * padding}})
        assert len(log_lines(data_dir, "s1")[0]) == limit
        assert stored["seq"] == 1
    finally:
        sized.close()


def test_default_max_event_bytes_is_one_mib(store, data_dir):
    with pytest.raises(EventTooLarge):
        store.append("s1", {"type": "user_message", "payload": {"text": "x" * (1024 * 1024)}})
    assert store.last_seq("s1") == 0
    assert store.append("s1", {"type": "user_message", "payload": {"text": "x" * (1024 * 1024 - 500)}})["seq"] == 1


def test_batch_with_one_event_too_large_writes_nothing(data_dir):
    small = EventStore(data_dir, max_event_bytes=1000)
    try:
        small.append("s1", {"type": "user_message"})
        before = files_snapshot(data_dir)
        with pytest.raises(EventTooLarge):
            small.append_many("s1", [{"type": "user_message"}, {"type": "user_message", "payload": {"t": "x" * 2000}}])
        assert small.last_seq("s1") == 1
        assert files_snapshot(data_dir) == before
    finally:
        small.close()


# -- segments ----------------------------------------------------------------------------------------

@pytest.fixture
def rolling_store(data_dir) -> Iterator[EventStore]:
    rolling = EventStore(data_dir, segment_bytes=700)
    yield rolling
    rolling.close()


def fill(store: EventStore, count: int) -> list[dict]:
    return [store.append("s1", {"type": "tool_call", "run_id": "r1" if n % 2 else None,
                                "payload": {"n": n, "pad": "p" * 40}}) for n in range(count)]


def test_segments_roll_at_the_segment_size_and_are_named_by_first_seq(rolling_store, data_dir):
    fill(rolling_store, 40)
    paths = segment_paths(data_dir, "s1")
    assert len(paths) >= 3
    for path in paths:
        assert len(path.stem) == 20 and path.stem.isdigit()
        assert path.suffix == ".jsonl"
        first = json.loads(path.read_bytes().split(b"\n", 1)[0])
        assert first["seq"] == int(path.stem)
    assert paths[0].stem == f"{1:020d}"
    for path in paths[:-1]:
        data = path.read_bytes()
        last_line = data.rstrip(b"\n").rsplit(b"\n", 1)[-1] + b"\n"
        # Rolled once it reached the size, and not before.
        assert len(data) >= 700
        assert len(data) - len(last_line) < 700


def test_every_line_is_readable_across_segments(rolling_store, data_dir):
    written = fill(rolling_store, 40)
    lines = log_lines(data_dir, "s1")
    assert [json.loads(line) for line in lines] == written
    assert seqs(written) == list(range(1, 41))
    assert rolling_store.get_events_by_session("s1", limit=1000) == written
    assert rolling_store.get_events_by_run("s1", "r1", limit=1000) == [e for e in written if e["run_id"] == "r1"]
    assert read_all_by_paging(lambda **q: rolling_store.get_events_by_session("s1", **q), 3) == written
    assert rolling_store.get_events_by_session("s1", since_seq=17, limit=9) == written[17:26]


def test_segments_are_readable_after_reopening(rolling_store, data_dir):
    written = fill(rolling_store, 30)
    rolling_store.close()
    reopened = EventStore(data_dir, segment_bytes=700)
    try:
        assert reopened.get_events_by_session("s1", limit=1000) == written
        assert reopened.append("s1", {"type": "status"})["seq"] == 31
    finally:
        reopened.close()


def test_a_batch_lands_in_one_segment_and_the_next_append_rolls(rolling_store, data_dir):
    batch = rolling_store.append_many("s1", [{"type": "user_message", "payload": {"pad": "q" * 60}}
                                             for _ in range(20)])
    [only] = segment_paths(data_dir, "s1")
    assert only.stat().st_size > 700
    after = rolling_store.append("s1", {"type": "status"})
    assert [p.stem for p in segment_paths(data_dir, "s1")] == [f"{1:020d}", f"{after['seq']:020d}"]
    assert rolling_store.get_events_by_session("s1", limit=1000) == [*batch, after]


def test_a_packed_page_unpacks_in_seq_order_whatever_order_sqlite_concatenated_it():
    from eventsvc.store.index import unpacked

    assert unpacked((None, None, None, None)) == []
    assert unpacked(("1,2,5", "1,1,1", "0,10,40", "10,30,7")) == [(1, 1, 0, 10), (2, 1, 10, 30), (5, 1, 40, 7)]
    assert unpacked(("5,1,2", "3,1,1", "0,0,10", "7,10,30")) == [(1, 1, 0, 10), (2, 1, 10, 30), (5, 3, 0, 7)]
