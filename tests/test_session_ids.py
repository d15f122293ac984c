"""Any valid session id is safe: no id can name, take or block a file the store keeps for itself.

The id alphabet allows ``index``, ``store``, ``locks``, ``segments``, ``index.sqlite3``, ...; a
session once reused the store's own lock files that way and hung every append. These tests draw
ids from the whole alphabet, with every name the store creates mixed in, and run each append in
a thread with a deadline, so a hang fails the test instead of stalling the suite.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventsvc import EventStore
from eventsvc.store.files.index import INDEX_FILE
from eventsvc.store.files.locks import LOCK_FILES, LOCKS_DIR
from eventsvc.store.files.segments import SEGMENTS_DIR

from conftest import ROOT, STORE_NAMES, any_valid_id


def within(seconds: float, work, *args):
    """Run ``work`` in a thread; fail (not hang) if it has not returned in time."""
    result: dict = {}

    def target() -> None:
        try:
            result["value"] = work(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{work.__name__}{args!r} did not return within {seconds}s"
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.mark.parametrize("session_id", STORE_NAMES)
def test_a_session_named_like_a_store_file_appends_and_reads(data_dir, session_id):
    store = EventStore(data_dir)
    try:
        stored = within(10, store.append, session_id, {"type": "user_message"})
        assert stored["seq"] == 1
        assert within(10, store.append, "other", {"type": "user_message"})["seq"] == 1
        assert within(10, store.reindex).events == 2
        assert [e["seq"] for e in store.get_events_by_session(session_id)] == [1]
    finally:
        store.close()
    reopened = within(10, EventStore, data_dir)  # a new store opens beside it
    reopened.close()


def test_no_session_id_names_a_file_outside_its_own_folder(data_dir):
    store = EventStore(data_dir)
    for session_id in STORE_NAMES:
        store.append(session_id, {"type": "status"})
    store.close()
    assert sorted(os.listdir(data_dir / LOCKS_DIR)) == sorted(LOCK_FILES)
    top = set(os.listdir(data_dir)) - {INDEX_FILE + "-wal", INDEX_FILE + "-shm"}
    assert top == {LOCKS_DIR, SEGMENTS_DIR, INDEX_FILE}
    assert sorted(os.listdir(data_dir / SEGMENTS_DIR)) == STORE_NAMES


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(session_ids=st.lists(any_valid_id, min_size=1, max_size=4, unique=True))
def test_any_valid_ids_append_without_blocking_each_other(tmp_path_factory, session_ids):
    data_dir = tmp_path_factory.mktemp("ids") / "data"
    store = EventStore(data_dir)
    try:
        for round_number in (1, 2):
            for session_id in session_ids:
                assert within(10, store.append, session_id, {"type": "status"})["seq"] == round_number
        assert within(10, store.reindex).events == 2 * len(session_ids)
    finally:
        store.close()
    assert sorted(os.listdir(data_dir / LOCKS_DIR)) == sorted(LOCK_FILES)


def test_rejected_appends_to_new_sessions_leave_no_file_behind(data_dir):
    """A 409 for 500 new ids changes nothing on disk: no lock file, no folder per id."""
    store = EventStore(data_dir)
    store.append("owner", {"type": "run_created", "run_id": "r1"})
    before = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if "sqlite3" not in p.name)
    for number in range(500):
        with pytest.raises(Exception) as raised:
            store.append(f"new-{number}", {"type": "run_started", "run_id": "r1"} if number % 2
                         else {"type": "status", "seq": 7})
        assert raised.value.code in ("run_session_conflict", "seq_conflict")
    after = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if "sqlite3" not in p.name)
    store.close()
    assert after == before


WRITER = """
import sys, threading, time
from eventsvc import EventStore
store = EventStore(sys.argv[1], fsync=False)
deadline = time.monotonic() + float(sys.argv[3])

def write():
    while time.monotonic() < deadline:
        store.append(sys.argv[2], {"type": "status"})

threads = [threading.Thread(target=write) for _ in range(4)]
[thread.start() for thread in threads]
[thread.join() for thread in threads]
"""


def test_reindex_gets_the_store_lock_under_steady_appends(data_dir):
    """Writers in two processes, four threads each, append without pause; `reindex --wait 5` still gets in."""
    EventStore(data_dir).close()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(data_dir), f"w{number}", "15"], cwd=ROOT)
               for number in range(2)]
    try:
        _wait_for_events(data_dir, at_least=200)
        done = subprocess.run([sys.executable, "-m", "eventsvc.cli", "reindex", "--data-dir", str(data_dir),
                               "--wait", "5"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert writers[0].poll() is None and writers[1].poll() is None, "the writers stopped before the reindex"
    finally:
        for writer in writers:
            writer.wait(timeout=60)
    store = EventStore(data_dir)
    for number in range(2):
        seqs = [e["seq"] for e in _all_events(store, f"w{number}")]
        assert seqs == list(range(1, len(seqs) + 1))
    store.close()


def _wait_for_events(data_dir: Path, *, at_least: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        store = EventStore(data_dir)
        try:
            if store.last_seq("w0") >= at_least and store.last_seq("w1") >= at_least:
                return
        finally:
            store.close()
        time.sleep(0.05)
    raise AssertionError("the writers never got going")


def _all_events(store: EventStore, session_id: str) -> list[dict]:
    events, since = [], 0
    while True:
        page = store.get_events_by_session(session_id, since_seq=since, limit=1000)
        if not page:
            return events
        events += page
        since = page[-1]["seq"]
