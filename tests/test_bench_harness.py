"""The bench's baselines do the work they claim: a ratio is only as honest as what it divides by.

No timing here (figures are measured by `make bench`, never asserted in a test); these check
that each baseline writes, indexes and answers what eventsvc does, and that the table keeps
the columns the performance issue names.
"""
from __future__ import annotations

import json
import sqlite3
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import bench_append  # noqa: E402
import common  # noqa: E402
import run as bench_run  # noqa: E402

from eventsvc import EventStore  # noqa: E402
from eventsvc.errors import RunSessionConflict  # noqa: E402


def test_the_plain_baseline_writes_and_indexes_every_event(tmp_path):
    plain = bench_append.PlainLog(tmp_path)
    try:
        singles = [common.input_event("r-1", n) for n in range(3)]
        for event in singles:
            plain.append(event)
        plain.append_many(common.run_events("r-2"))
    finally:
        plain.close()
    log = (tmp_path / "log.jsonl").read_bytes()
    with sqlite3.connect(tmp_path / "index.sqlite3") as db:
        rows = db.execute('SELECT seq, run_id, "offset", length FROM event ORDER BY seq').fetchall()
    assert [row[0] for row in rows] == list(range(1, 104))
    assert log.count(b"\n") == 103
    for seq, run_id, offset, length in rows:
        envelope = json.loads(log[offset:offset + length])
        assert (envelope["seq"], envelope["run_id"]) == (seq, run_id)


def test_baseline_lines_are_as_large_as_the_stores(tmp_path):
    store = EventStore(tmp_path / "data", fsync=False)
    try:
        events = common.run_events("r-1")
        store.append_many("s-1", events)
        [segment] = (tmp_path / "data" / "segments" / "s-1").glob("*.jsonl")
        ours = [len(line) for line in segment.read_bytes().splitlines(keepends=True)]
    finally:
        store.close()
    theirs = [len(common.line_of(common.stored_envelope(event, "s-1", seq))) for seq, event in enumerate(events, 1)]
    assert abs(statistics.mean(ours) - statistics.mean(theirs)) <= 8
    assert 250 <= statistics.mean(ours) <= 350  # the issue's "300-byte line"


def test_the_minimal_app_answers_eventsvcs_routes():
    from minimal_app import app

    client = app.test_client()
    page = client.get("/api/runs/r-000001-01/events?limit=100")
    assert page.status_code == 200 and len(page.get_json()["events"]) == 100
    event = common.input_event("r-1", 3)
    posted = client.post("/api/sessions/s-1/events", json=event)
    assert posted.status_code == 201 and posted.get_json() == event


def test_the_results_table_has_the_issues_columns():
    row = common.Row("1 durable single append (events/s)", "2,000/s", "3,000/s", 2 / 3, "≥ 0.8", False)
    header, rule, line = bench_run.table([row]).splitlines()
    assert header == "| figure | eventsvc | baseline | ratio | target | met? |"
    assert line == "| 1 durable single append (events/s) | 2,000/s | 3,000/s | 0.67 | ≥ 0.8 | **no** |"


def test_the_store_without_summary_upkeep_still_claims_runs_and_indexes_every_event(tmp_path):
    """The upkeep rows divide by this store: it must do the pre-summary commit's work, and no more."""
    upkeep = bench_append.Upkeep(tmp_path)
    store = upkeep.stores["without"]
    try:
        store.append_many("s-1", common.run_events("r-1"))
        store.append("s-1", common.input_event("r-1", 5))
        store.append("s-2", common.input_event(None, 3))
        assert [event["seq"] for event in store.get_events_by_run("s-1", "r-1", limit=1000)] == list(range(1, 102))
        assert store.last_seq("s-1") == 101 and store.run_session("r-1") == "s-1"
        with pytest.raises(RunSessionConflict):
            store.append("s-2", common.input_event("r-1", 6))
        # No summary was kept: the claim's placeholder and the bare checkpoint are all there is.
        assert store.get_run("r-1")["event_count"] == 0 and store.get_session("s-1")["event_count"] == 0
        kept = upkeep.stores["with"]
        kept.append_many("s-1", common.run_events("r-1"))
        assert kept.get_run("r-1")["event_count"] == 100 and kept.get_session("s-1")["event_count"] == 100
    finally:
        upkeep.close()
