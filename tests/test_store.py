"""The files backend's own promises: log lines on disk, the SQLite index and its plans, segments.

What every backend promises (seqs, idempotency, conflicts, atomic batches, pages) is in test_contract.py."""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventsvc import EventStore
from test_contract import read_all_by_paging, seqs


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


# -- the data folder ----------------------------------------------------------------------------

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

def test_reads_return_envelopes_exactly_as_the_log_lines(mixed_session, data_dir):
    store = mixed_session
    store.append("s1", {"type": "user_message", "payload": {"text": "héllo ✓", "z": 1, "a": [1.5, None]}})
    lines = log_lines(data_dir, "s1")
    events = store.get_events_by_session("s1")
    assert [json.loads(line) for line in lines] == events
    assert [list(json.loads(line)) for line in lines] == [list(event) for event in events]
    assert store.get_events_by_run("s1", "r1") == [json.loads(lines[n - 1]) for n in (2, 4, 7)]


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

# -- optimistic concurrency ------------------------------------------------------------------------

# -- run ownership ---------------------------------------------------------------------------------

# -- atomic batches ----------------------------------------------------------------------------------

# -- single-event validation ------------------------------------------------------------------------

# -- segments ----------------------------------------------------------------------------------------

@pytest.fixture
def rolling_store(data_dir) -> Iterator[EventStore]:
    rolling = EventStore(data_dir, segment_bytes=700)
    yield rolling
    rolling.close()


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
    from eventsvc.store.files.index import unpacked

    assert unpacked((None, None, None, None)) == []
    assert unpacked(("1,2,5", "1,1,1", "0,10,40", "10,30,7")) == [(1, 1, 0, 10), (2, 1, 10, 30), (5, 1, 40, 7)]
    assert unpacked(("5,1,2", "3,1,1", "0,0,10", "7,10,30")) == [(1, 1, 0, 10), (2, 1, 10, 30), (5, 3, 0, 7)]


def fill(store: EventStore, count: int) -> list[dict]:
    return [store.append("s1", {"type": "tool_call", "run_id": "r1" if n % 2 else None,
                                "payload": {"n": n, "pad": "p" * 40}}) for n in range(count)]

