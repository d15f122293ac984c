"""Run and session summaries in process: status and verify rules, counts, recomputation, listings."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventsvc import EventStore
from eventsvc.errors import RunSessionConflict, SessionNotFound, ValidationFailed
from eventsvc.store import rules
from eventsvc.store.files.index import SessionState
from eventsvc.summaries import SessionSummary, fold

TS = "2026-12-01T10:00:%02dZ"


@pytest.fixture
def store(backend):
    """The store tests here run on every backend (see test_contract.py)."""
    return backend.open()


def run_events(types: list[str], run_id: str = "r1", start: int = 0) -> list[dict]:
    return [{"type": t, "run_id": run_id, "timestamp": TS % n} for n, t in enumerate(types, start)]


def log_summaries(data_dir: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """Every session's and run's summary recomputed from the segment files alone."""
    sessions, runs = {}, {}
    for session_dir in sorted((data_dir / "segments").iterdir()):
        session, session_runs = SessionSummary(session_dir.name), {}
        for segment in sorted(session_dir.glob("*.jsonl")):
            for line in segment.read_bytes().splitlines():
                event = json.loads(line)
                fold(session, session_runs, [(event["seq"], event["run_id"], event["type"], event["timestamp"])])
        sessions[session.session_id] = session.as_dict()
        runs.update({run_id: run.as_dict() for run_id, run in session_runs.items()})
    return sessions, runs


def stored_summaries(store: EventStore, data_dir: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    sessions, runs = log_summaries(data_dir)
    return ({sid: store.get_session(sid) for sid in sessions}, {rid: store.get_run(rid) for rid in runs})


# -- status, verify, counts ------------------------------------------------------------------------

@pytest.mark.parametrize(("types", "status"), [
    ([], "unknown"),
    (["tool_call"], "unknown"),
    (["run_created"], "created"),
    (["run_created", "run_started"], "running"),
    (["run_created", "run_started", "run_waiting_input"], "waiting_input"),
    (["run_created", "run_started", "run_waiting_input", "run_resumed"], "running"),
    (["run_created", "run_started", "run_completed"], "completed"),
    (["run_created", "run_started", "run_failed"], "failed"),
    (["run_created", "run_cancelled"], "cancelled"),
    (["run_created", "run_started", "run_waiting_input", "run_cancelled"], "cancelled"),
    # out of order: each lifecycle event sets the status it names, in seq order
    (["run_started"], "running"),
    (["run_started", "run_created"], "created"),
    (["run_waiting_input", "run_created", "run_resumed"], "running"),
    (["run_completed"], "completed"),
    # after terminal: nothing changes the status any more
    (["run_created", "run_started", "run_completed", "run_started"], "completed"),
    (["run_created", "run_started", "run_failed", "run_resumed", "run_completed"], "failed"),
    (["run_created", "run_cancelled", "run_created", "tool_call"], "cancelled"),
])
def test_status_follows_the_lifecycle_events_in_seq_order(store, types, status):
    store.append_many("s1", [{"type": "user_message"}, *run_events(["tool_call", *types])])
    run = store.get_run("r1")
    assert run["status"] == status
    assert store.get_session("s1")["active_runs"] == (0 if status in ("completed", "failed", "cancelled") else 1)


@pytest.mark.parametrize(("types", "verify"), [
    (["run_created"], None),
    (["verify_start"], "running"),
    (["verify_start", "verify_pass"], "passed"),
    (["verify_start", "verify_fail"], "failed"),
    (["verify_start", "verify_fail", "verify_start"], "running"),
    (["verify_pass", "verify_fail", "verify_pass"], "passed"),
    (["run_created", "run_started", "run_completed", "verify_fail"], "failed"),
])
def test_verify_is_the_latest_verify_event(store, types, verify):
    for event in run_events(types):  # one append per event: the summary is kept across commits
        store.append("s1", event)
    assert store.get_run("r1")["verify"] == verify


def test_run_summary_keys_timestamps_counts_and_policy(store):
    types = ["tool_call", "run_created", "run_started", "tool_policy_blocked", "tool_policy_warn",
             "tool_policy_blocked", "run_created", "run_completed", "run_failed", "tool_call"]
    store.append("s1", {"type": "user_message", "timestamp": "2026-12-01T09:00:00Z"})
    store.append_many("s1", run_events(types[:4]))
    store.append_many("s1", run_events(types[4:], start=4))
    run = store.get_run("r1")
    assert list(run) == ["run_id", "session_id", "status", "verify", "first_seq", "last_seq", "event_count",
                         "created_at", "started_at", "ended_at", "updated_at", "policy", "counts"]
    assert run == {
        "run_id": "r1", "session_id": "s1", "status": "completed", "verify": None, "first_seq": 2,
        "last_seq": 11, "event_count": 10, "created_at": TS % 1, "started_at": TS % 2, "ended_at": TS % 7,
        "updated_at": TS % 9, "policy": {"blocked": 2, "warned": 1},
        "counts": {"tool_call": 2, "run_created": 2, "run_started": 1, "tool_policy_blocked": 2,
                   "tool_policy_warn": 1, "run_completed": 1, "run_failed": 1}}


def test_session_summary_keys_and_rules(store):
    store.append("s1", {"type": "session_created", "timestamp": "2026-12-01T09:00:00Z"})
    store.append_many("s1", run_events(["run_created", "run_started"], "a"))
    store.append_many("s1", run_events(["run_created", "run_started", "run_failed"], "b"))
    store.append("s1", {"type": "tool_call", "run_id": "c", "timestamp": "2026-12-01T11:00:00Z"})
    assert store.get_session("s1")["closed"] is False
    store.append("s1", {"type": "session_closed", "timestamp": "2026-12-01T12:00:00Z"})
    store.append("s1", {"type": "user_message", "timestamp": "2026-12-01T08:00:00Z"})
    session = store.get_session("s1")
    assert session == {"session_id": "s1", "first_seq": 1, "last_seq": 9, "event_count": 9,
                       "created_at": "2026-12-01T09:00:00Z", "updated_at": "2026-12-01T08:00:00Z",
                       "run_count": 3, "active_runs": 2, "closed": True}
    assert list(session) == ["session_id", "first_seq", "last_seq", "event_count", "created_at", "updated_at",
                             "run_count", "active_runs", "closed"]


def test_unknown_and_invalid_ids_are_none(store):
    store.append("s1", {"type": "user_message"})
    assert store.get_session("nobody") is None
    assert store.get_run("nobody") is None
    assert store.get_session("../etc") is None
    assert store.get_run("") is None


# -- summaries equal a recomputation from the log ---------------------------------------------------

TYPES = ["run_created", "run_started", "run_waiting_input", "run_resumed", "run_completed", "run_failed",
         "run_cancelled", "verify_start", "verify_pass", "verify_fail", "tool_policy_blocked", "tool_policy_warn",
         "tool_call", "session_closed", "user_message"]
RUN_SCOPED = set(TYPES[:12])

_event = st.tuples(st.sampled_from(["s1", "s2", "s3"]), st.sampled_from([None, "a", "b", "c", "d", "e"]),
                   st.sampled_from(TYPES), st.integers(0, 59))
_appends = st.lists(st.lists(_event, min_size=1, max_size=4), min_size=1, max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(appends=_appends)
def test_summaries_equal_a_recomputation_from_the_log(tmp_path_factory, appends):
    data_dir = tmp_path_factory.mktemp("prop") / "data"
    store = EventStore(data_dir, fsync=False)
    last_append: dict[str, int] = {}  # session or run -> the last append that added to it
    try:
        for number, batch in enumerate(appends):
            session_id = batch[0][0]  # a batch goes to one session; a run belongs to one session
            events = []
            for _, name, type_, second in batch:
                if type_ in RUN_SCOPED and name is None:
                    name = "solo"
                run_id = None if name is None else f"{session_id}-{name}"
                events.append({"type": type_, "run_id": run_id, "timestamp": f"2026-12-01T10:00:{second:02d}Z"})
                last_append[run_id or session_id] = last_append[session_id] = number
            if len(events) == 1:
                store.append(session_id, events[0])
            else:
                store.append_many(session_id, events)
        expected = log_summaries(data_dir)
        assert stored_summaries(store, data_dir) == expected
        listed = store.list_sessions(1000).items
        assert sorted(s["session_id"] for s in listed) == sorted(expected[0])
        assert walk(store.list_sessions, limit=2) == listed  # pages: each once, none skipped, same order
        assert [s["session_id"] for s in listed] == sorted(expected[0], key=last_append.get, reverse=True)
        every_run = store.list_runs(limit=1000).items
        assert sorted(r["run_id"] for r in every_run) == sorted(expected[1])
        assert walk(store.list_runs, limit=3) == every_run
        assert [r["run_id"] for r in every_run] == sorted(
            expected[1], key=lambda run_id: (last_append[run_id], expected[1][run_id]["last_seq"]), reverse=True)
        live = ["created", "running", "waiting_input", "unknown"]
        assert walk(store.list_runs, statuses=live, limit=2) == [r for r in every_run if r["status"] in live]
        assert walk(store.list_runs, session_id="s1", limit=2) == [r for r in every_run if r["session_id"] == "s1"]
        store.reindex()
        assert stored_summaries(store, data_dir) == expected
    finally:
        store.close()


def test_a_deleted_index_is_rebuilt_with_the_same_summaries(data_dir):
    store = EventStore(data_dir)
    store.append_many("s1", run_events(["run_created", "run_started", "verify_start", "tool_policy_warn"]))
    store.append_many("s2", run_events(["run_created", "run_cancelled"], "r2"))
    before = stored_summaries(store, data_dir)
    store.close()
    for path in data_dir.glob("index.sqlite3*"):
        path.unlink()
    reopened = EventStore(data_dir)
    try:
        assert stored_summaries(reopened, data_dir) == before == log_summaries(data_dir)
    finally:
        reopened.close()


def test_a_log_shorter_than_the_index_recomputes_the_summaries(data_dir):
    store = EventStore(data_dir, fsync=False)
    store.append_many("s1", run_events(["run_created", "run_started"]))
    store.append("s1", {"type": "run_completed", "run_id": "r1"})
    store.append("s1", {"type": "tool_call", "run_id": "r2"})
    store.close()
    segment = next((data_dir / "segments" / "s1").glob("*.jsonl"))
    lines = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(b"".join(lines[:2]))  # the log lost its last two lines (fsync was off)
    reopened = EventStore(data_dir)
    try:
        assert reopened.get_run("r1")["status"] == "running"
        assert reopened.get_run("r2") is None
        assert stored_summaries(reopened, data_dir) == log_summaries(data_dir)
        assert reopened.get_session("s1")["active_runs"] == 1
    finally:
        reopened.close()


def test_a_run_claimed_between_the_read_and_the_commit_is_refused_and_nothing_is_indexed(data_dir):
    """The commit folds into summaries read before it; a run another session claims in between is caught."""
    store = EventStore(data_dir, fsync=False)
    try:
        store.append("s1", {"type": "user_message"})
        index = store._index
        known = index.before_append("s1", ["e-late"], ["r-raced"])
        assert known.run_owners == {}
        store.append("s2", {"type": "run_created", "run_id": "r-raced"})  # claimed meanwhile
        state = known.state
        late = SessionState("s1", state.last_seq + 1, state.segment, state.end_offset + 100)
        rows = [("s1", late.last_seq, "r-raced", "run_created", "e-late", TS % 1, state.segment, state.end_offset,
                 100)]
        with pytest.raises(RunSessionConflict):
            index.commit_append(late, rows, known, marked=False)
        assert store.last_seq("s1") == 1 and store.get_session("s1")["event_count"] == 1
        assert store.get_run("r-raced")["session_id"] == "s2" and store.get_run("r-raced")["event_count"] == 1
        assert stored_summaries(store, data_dir) == log_summaries(data_dir)
    finally:
        store.close()


def test_single_counting_events_keep_the_summaries_and_the_recency_order(data_dir):
    """A counting-only event to the newest session's newest run is added in SQL alone; any other
    single append folds and renumbers: both leave what a recomputation from the log gives."""
    store = EventStore(data_dir, fsync=False)
    ids = lambda items, key: [item[key] for item in items]  # noqa: E731
    try:
        store.append("s1", {"type": "run_created", "run_id": "r1"})
        for type_ in ["tool_call", "tool_result", "tool_call", "assistant_message"]:
            store.append("s1", {"type": type_, "run_id": "r1"})  # the newest run: counted in SQL
        store.append("s1", {"type": "user_message"})  # no run: the session's summary only
        store.append("s1", {"type": "tool_call", "run_id": "r2"})  # a new run
        store.append("s1", {"type": "tool_call", "run_id": "r1"})  # an older run of the newest session
        assert ids(store.list_runs().items, "run_id") == ["r1", "r2"]
        store.append("s2", {"type": "run_created", "run_id": "r3"})
        store.append("s1", {"type": "tool_result", "run_id": "r1"})  # the session was overtaken
        assert ids(store.list_sessions().items, "session_id") == ["s1", "s2"]
        assert ids(store.list_runs().items, "run_id") == ["r1", "r3", "r2"]
        store.append("s1", {"type": "tool_call", "run_id": "r1"})
        store.append("s1", {"type": "tool_policy_warn", "run_id": "r1"})  # stateful: folded
        store.append("s1", {"type": "tool_call", "run_id": "r1"})
        store.append("s2", {"type": "tool_call", "run_id": "r3"})
        assert ids(walk(store.list_runs, limit=1), "run_id") == ["r3", "r1", "r2"]
        assert ids(walk(store.list_runs, session_id="s1", limit=1), "run_id") == ["r1", "r2"]
        assert ids(walk(store.list_runs, statuses=["created", "unknown"], limit=1), "run_id") == ["r3", "r1", "r2"]
        assert ids(walk(store.list_runs, statuses=["unknown"], limit=1), "run_id") == ["r2"]
        assert ids(walk(store.list_sessions, limit=1), "session_id") == ["s2", "s1"]
        assert stored_summaries(store, data_dir) == log_summaries(data_dir)
        assert store.get_run("r1")["counts"] == {"run_created": 1, "tool_call": 5, "tool_result": 2,
                                                 "assistant_message": 1, "tool_policy_warn": 1}
    finally:
        store.close()


def test_a_session_overtaken_between_the_read_and_the_commit_moves_first_again(data_dir):
    """The read before a commit may see its session as the newest; one appended to in between makes
    the commit renumber, so the listings still put the last append first."""
    store = EventStore(data_dir, fsync=False)
    try:
        store.append("s1", {"type": "run_created", "run_id": "r1"})
        store.append("s1", {"type": "tool_call", "run_id": "r1"})
        index = store._index
        commit = index.commit_append

        def overtaken(*args, **kwargs):
            del index.commit_append
            store.append("s2", {"type": "run_created", "run_id": "r2"})
            return commit(*args, **kwargs)

        index.commit_append = overtaken
        store.append("s1", {"type": "tool_call", "run_id": "r1"})
        assert "commit_append" not in vars(index)
        assert [s["session_id"] for s in store.list_sessions().items] == ["s1", "s2"]
        assert [r["run_id"] for r in store.list_runs().items] == ["r1", "r2"]
        assert stored_summaries(store, data_dir) == log_summaries(data_dir)
    finally:
        store.close()


# -- listings ----------------------------------------------------------------------------------------

def walk(list_page, **kwargs) -> list[dict]:
    items, cursor = [], None
    while True:
        page = list_page(cursor=cursor, **kwargs)
        items += page.items
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


def test_sessions_are_listed_most_recently_appended_to_first(store):
    for name in ["a", "b", "c", "d", "e"]:
        store.append(name, {"type": "user_message"})
    store.append("b", {"type": "user_message"})
    expected = ["b", "e", "d", "c", "a"]
    assert [s["session_id"] for s in store.list_sessions(100).items] == expected
    assert [s["session_id"] for s in walk(store.list_sessions, limit=2)] == expected


def test_runs_are_listed_newest_first_with_filters_and_cursors(store):
    store.append_many("s1", run_events(["run_created", "run_started"], "r1") + run_events(["run_created"], "r2"))
    store.append_many("s2", run_events(["run_created", "run_started"], "r3"))
    store.append("s1", {"type": "run_completed", "run_id": "r1"})
    store.append("s2", {"type": "run_created", "run_id": "r4"})
    ids = lambda items: [r["run_id"] for r in items]  # noqa: E731
    assert ids(store.list_runs().items) == ["r4", "r1", "r3", "r2"]
    assert ids(walk(store.list_runs, limit=1)) == ["r4", "r1", "r3", "r2"]
    assert ids(walk(store.list_runs, statuses=["running", "created"], limit=1)) == ["r4", "r3", "r2"]
    assert ids(store.list_runs(statuses=["completed"]).items) == ["r1"]
    assert ids(walk(store.list_runs, session_id="s1", limit=1)) == ["r1", "r2"]
    assert ids(store.list_runs(session_id="s2", statuses=["running"]).items) == ["r3"]
    assert ids(store.list_runs(session_id="nobody").items) == []
    assert ids(walk(store.list_session_runs, session_id="s1", limit=1)) == ["r1", "r2"]
    with pytest.raises(SessionNotFound):
        store.list_session_runs("nobody")


@pytest.mark.parametrize(("call",), [
    (lambda s: s.list_sessions(0),), (lambda s: s.list_sessions(1001),), (lambda s: s.list_sessions(10, "nope"),),
    (lambda s: s.list_runs(statuses=["bogus"]),), (lambda s: s.list_runs(statuses=[]),),
    (lambda s: s.list_runs(session_id="bad id"),), (lambda s: s.list_runs(cursor=s.list_sessions(1).next_cursor),),
    (lambda s: s.list_runs(cursor="cjowMTo1"),),
    (lambda s: s.read_page("s1", types=["nope"]),), (lambda s: s.get_events_by_session("s1", types=[]),),
])
def test_bad_listing_and_filter_arguments_are_refused(store, call):
    store.append_many("s1", [{"type": "user_message"}, {"type": "user_message"}])
    store.append("s2", {"type": "user_message"})
    with pytest.raises(ValidationFailed):
        call(store)


# -- type filters ------------------------------------------------------------------------------------

def test_a_filtered_walk_sees_every_match_once_across_windows(store, monkeypatch):
    monkeypatch.setattr(rules, "TYPE_FILTER_WINDOW", 50)
    events = [{"type": "tool_call" if n % 97 == 0 else "user_message", "run_id": "r1" if n % 3 else None}
              for n in range(400)]
    store.append_many("s1", events)
    matches = [seq for seq, e in enumerate(events, 1) if e["type"] == "tool_call"]
    for run_id in (None, "r1"):
        expected = [seq for seq in matches if run_id is None or events[seq - 1]["run_id"] == run_id]
        seen, since, pages = [], 0, 0
        while True:
            page = store.read_page("s1", run_id=run_id, since_seq=since, limit=2, types=["tool_call"])
            pages += 1
            assert page.next_since_seq >= max(page.seqs, default=since) >= since
            seen += page.seqs
            since = page.next_since_seq
            if not page.has_more:
                break
        assert seen == expected
        assert pages > len(expected)  # windows with no match answered with an empty page that moved on
        assert [e["seq"] for e in store.get_events_by_session("s1", types="tool_call")] == matches


def test_reindex_lists_sessions_in_the_order_their_logs_were_last_written(data_dir):
    store = EventStore(data_dir)
    for name in ["b", "a", "c"]:
        store.append(name, {"type": "user_message"})
    store.append("a", {"type": "user_message"})
    before = [s["session_id"] for s in store.list_sessions().items]
    for age, name in enumerate(reversed(before)):  # mtimes a filesystem's clock granularity cannot blur
        segment = next((data_dir / "segments" / name).glob("*.jsonl"))
        os.utime(segment, (1_700_000_000 + age, 1_700_000_000 + age))
    store.reindex()
    try:
        assert [s["session_id"] for s in store.list_sessions().items] == before == ["a", "c", "b"]
    finally:
        store.close()
