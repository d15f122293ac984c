"""Appends decided from what a process last wrote: a stale or partial view never changes an outcome.

Each PostgresStore keeps the state its last append left each session in, and writes from it in
one statement that only succeeds if the session row is still that state. Two stores on one
database are two processes (or hosts) whose views go stale as the other appends; the files
backend, given the same events, is the oracle for every seq and summary.
"""
from __future__ import annotations

import pytest

from eventsvc.errors import EventIdConflict, RunSessionConflict, SeqConflict
from eventsvc.store import open_store


def psql(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture
def two_stores(pg_url):
    stores = open_store(pg_url), open_store(pg_url)
    yield stores
    for store in stores:
        store.close()


@pytest.fixture
def oracle(tmp_path):
    store = open_store(tmp_path / "data")
    yield store
    store.close()


def _event(n: int, event_type: str, run_id: str | None = None) -> dict:
    return {"type": event_type, "run_id": run_id, "event_id": f"e{n}", "timestamp": f"2026-01-02T03:04:{n:02d}Z",
            "payload": {"n": n}}


def test_stores_taking_turns_on_one_session_agree_with_the_files_backend(two_stores, oracle):
    a, b = two_stores
    turns = [(a, [_event(1, "run_started", "r1")]), (b, [_event(2, "tool_call", "r1")]),  # b never saw r1
             (b, [_event(3, "tool_policy_blocked", "r1"), _event(4, "run_started", "r2")]),
             (a, [_event(5, "tool_call", "r2"), _event(6, "run_completed", "r1")]),  # a's view is two appends old
             (a, [_event(7, "user_message")]), (b, [_event(8, "run_failed", "r2"), _event(9, "session_closed")])]
    for store, events in turns:
        stored = store.append_many("s1", events)
        assert stored == oracle.append_many("s1", events)
    for store in (a, b):
        assert store.get_session("s1") == oracle.get_session("s1")
        assert [store.get_run(run_id) for run_id in ("r1", "r2")] == [oracle.get_run(run_id) for run_id in ("r1", "r2")]
        assert store.read_page("s1").lines == oracle.read_page("s1").lines


def test_a_resend_is_idempotent_whichever_store_wrote_it(two_stores):
    a, b = two_stores
    first = a.append("s1", _event(1, "user_message"))
    second = b.append("s1", _event(2, "user_message"))
    again = a.append_one("s1", _event(1, "user_message"))  # a's view is stale
    assert (again.events[0], again.created) == (first, 0)
    again = b.append_one("s1", _event(2, "user_message"))  # b's view is current but never read e2 back
    assert (again.events[0], again.created) == (second, 0)
    with pytest.raises(EventIdConflict):
        b.append("s1", {**_event(1, "user_message"), "payload": {"n": "other"}})
    assert a.last_seq("s1") == 2


def test_an_expected_seq_is_checked_against_the_stored_seq(two_stores):
    a, b = two_stores
    a.append("s1", _event(1, "user_message"))
    b.append_many("s1", [_event(2, "user_message"), _event(3, "user_message")])
    assert a.append("s1", {**_event(4, "user_message"), "seq": 4})["seq"] == 4  # a knew seq 1 only
    with pytest.raises(SeqConflict) as raised:
        b.append("s1", {**_event(5, "user_message"), "seq": 4})
    assert raised.value.details["next_seq"] == 5


def test_a_run_claimed_through_another_store_is_refused(two_stores):
    a, b = two_stores
    a.append("s1", _event(1, "user_message"))
    b.append("s2", _event(2, "run_started", "r1"))
    with pytest.raises(RunSessionConflict) as raised:
        a.append("s1", _event(3, "tool_call", "r1"))  # a takes r1 for new until the insert says otherwise
    assert raised.value.details == {"run_id": "r1", "session_id": "s2"}
    assert a.last_seq("s1") == 1 and a.append("s1", _event(4, "user_message"))["seq"] == 2


def test_a_session_whose_rows_are_gone_starts_over_at_seq_1(two_stores, pg_url):
    a, _ = two_stores
    a.append_many("s1", [_event(1, "run_started", "r1"), _event(2, "tool_call", "r1")])
    psql(pg_url, "TRUNCATE event, run, session")
    assert a.append("s1", _event(3, "tool_call", "r1"))["seq"] == 1
    assert a.get_session("s1")["event_count"] == 1 and a.get_run("r1")["event_count"] == 1
