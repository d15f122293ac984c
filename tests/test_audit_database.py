"""`eventsvc audit --database`: damage made with SQL is found, with the file audit's codes.

Where a constraint of the schema refuses a kind of damage, the test first shows the refusal,
then drops the constraint, as a restored dump or a hand-made table might lack it, and audits.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from eventsvc.ops import audit_database, audit_sql
from eventsvc.ops.audit_database import audit_database as audit
from eventsvc.store import open_store

EVENTSVC = Path(sys.executable).with_name("eventsvc")


def fill(url: str) -> None:
    """Three sessions, two finished runs each, and one event outside any run: a clean audit."""
    store = open_store(url)
    try:
        for n in range(3):
            session_id = f"s{n}"
            store.append(session_id, {"type": "session_created", "payload": {}})
            for r in range(2):
                run_id = f"r{n}-{r}"
                store.append_many(session_id, [
                    {"type": "run_created", "run_id": run_id}, {"type": "run_started", "run_id": run_id},
                    {"type": "tool_call", "run_id": run_id, "payload": {"k": r}},
                    {"type": "run_completed", "run_id": run_id}])
    finally:
        store.close()


@pytest.fixture
def url(pg_url: str) -> str:
    """A database holding three clean sessions of 9 events (seqs 1-9; r<n>-0 at 2-5, r<n>-1 at 6-9)."""
    fill(pg_url)
    return pg_url


def damage(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def audit_json(url: str, **env: str) -> tuple[int, dict]:
    environment = {key: value for key, value in os.environ.items() if key != "EVENTSVC_DATABASE_URL"} | env
    result = subprocess.run([str(EVENTSVC), "audit", "--database", url, "--format", "json"], capture_output=True,
                            timeout=120, env=environment)
    assert b"Traceback" not in result.stderr
    document = json.loads(result.stdout)
    assert document["exit_code"] == result.returncode
    return result.returncode, document


def findings(document: dict) -> list[tuple[str, int, str, str]]:
    """(path's last two parts, line, code, message) of each finding; the path's start names the server."""
    return [("/".join(f["path"].split("/")[-2:]), f["line"], f["code"], f["message"]) for f in document["findings"]]


def codes(document: dict) -> set[str]:
    return {finding["code"] for finding in document["findings"]}


def event_row(url: str, session_id: str, seq: int) -> dict:
    with psycopg.connect(url) as conn:
        cursor = conn.execute("SELECT * FROM event WHERE session_id = %s AND seq = %s", (session_id, seq))
        return dict(zip([column.name for column in cursor.description], cursor.fetchone()))


def test_a_clean_database_audits_clean_with_exit_code_0(url):
    exit_code, document = audit_json(url)
    assert exit_code == 0
    assert document["findings"] == []
    summary = document["summary"]
    assert (summary["sessions"], summary["segments"], summary["events"], summary["runs"]) == (3, 0, 27, 6)
    assert summary["errors"] == summary["warnings"] == 0
    with psycopg.connect(url) as conn:
        assert summary["bytes"] == conn.execute("SELECT sum(octet_length(envelope) + 1) FROM event").fetchone()[0]


def test_an_empty_database_audits_clean(pg_url):
    exit_code, document = audit_json(pg_url)
    assert (exit_code, document["findings"], document["summary"]["sessions"]) == (0, [], 0)


def test_a_seq_moved_up_leaves_a_gap_named_by_its_first_and_last_missing_seq(url):
    damage(url, "UPDATE event SET seq = 12 WHERE session_id = 's1' AND seq = 9",
           "UPDATE session SET last_seq = 12 WHERE session_id = 's1'")
    exit_code, document = audit_json(url)
    assert exit_code == 1
    assert ("event/s1", 12, "SEQ_GAP", "seqs 9-11 are missing before seq 12") in findings(document)
    # The moved row's seq column no longer agrees with its envelope.
    assert ("event/s1", 12, "INDEX_WRONG_BYTES", "the row for seq 12 has seq 12 (the envelope's is 9)") \
        in findings(document)


def test_seqs_missing_at_the_end_are_a_gap_up_to_the_session_rows_last_seq(url):
    damage(url, "DELETE FROM event WHERE session_id = 's2' AND seq >= 8")
    exit_code, document = audit_json(url)
    assert exit_code == 1
    assert ("event/s2", 7, "SEQ_GAP", "seqs 8-9 are missing after seq 7: the session row's last_seq is 9") \
        in findings(document)
    assert any(f[:3] == ("session/s2", 0, "INDEX_WRONG_SUMMARY") and "last_seq 9 (the events' is 7)" in f[3]
               for f in findings(document))


def test_a_repeated_seq_is_refused_by_the_primary_key_and_found_without_it(url):
    copy = ("INSERT INTO event (session_id, seq, run_id, type, event_id, \"timestamp\", envelope) "
            "SELECT session_id, seq, run_id, type, 'another-id', \"timestamp\", envelope FROM event "
            "WHERE session_id = 's0' AND seq = 4")
    with pytest.raises(psycopg.errors.UniqueViolation):
        damage(url, copy)
    damage(url, "ALTER TABLE event DROP CONSTRAINT event_pkey", copy)
    exit_code, document = audit_json(url)
    assert exit_code == 1
    assert ("event/s0", 4, "SEQ_REPEAT", "seq 4 is already held by another row of the session") in findings(document)
    assert "SEQ_GAP" not in codes(document)


def test_a_duplicate_event_id_is_refused_by_the_unique_key_and_found_without_it(url):
    first = event_row(url, "s1", 3)
    duplicate = ("INSERT INTO event (session_id, seq, run_id, type, event_id, \"timestamp\", envelope) "
                 "SELECT session_id, 10, run_id, type, event_id, \"timestamp\", envelope FROM event "
                 "WHERE session_id = 's1' AND seq = 3")
    with pytest.raises(psycopg.errors.UniqueViolation):
        damage(url, duplicate)
    damage(url, "ALTER TABLE event DROP CONSTRAINT event_session_event_id_key", duplicate,
           "UPDATE session SET last_seq = 10 WHERE session_id = 's1'")
    exit_code, document = audit_json(url)
    assert exit_code == 1
    assert ("event/s1", 10, "DUPLICATE_EVENT_ID",
            f"event_id {first['event_id']!r} is already used in this session by seq 3") in findings(document)


def test_a_runs_event_moved_to_another_session_is_a_run_in_two_sessions(url):
    # Seq 10 of s2 becomes an event of run r0-1, which session s0 owns.
    damage(url, "UPDATE event SET session_id = 's2', seq = 10 WHERE session_id = 's0' AND seq = 7",
           "UPDATE session SET last_seq = 10 WHERE session_id = 's2'")
    exit_code, document = audit_json(url)
    assert exit_code == 1
    assert ("event/s2", 10, "RUN_IN_TWO_SESSIONS",
            "run 'r0-1' belongs to session 's0' (its run row), but seq 10 of this session names it") \
        in findings(document)
    assert ("event/s2", 10, "SESSION_MISMATCH", "session_id 's0' in the envelope is not its row's 's2'") \
        in findings(document)
    assert ("event/s0", 8, "SEQ_GAP", "seq 7 is missing before seq 8") in findings(document)
    # The moved run's own summary is not compared: its rows are already reported as disagreeing.
    assert not any(f[0] == "run/r0-1" for f in findings(document))


def test_a_run_row_that_names_another_session_than_its_events_is_a_run_in_two_sessions(url):
    damage(url, "UPDATE run SET session_id = 's1' WHERE run_id = 'r0-0'")
    exit_code, document = audit_json(url)
    assert exit_code == 1
    assert [f for f in findings(document) if f[2] == "RUN_IN_TWO_SESSIONS"] == [
        ("event/s0", 2, "RUN_IN_TWO_SESSIONS",
         "run 'r0-0' belongs to session 's1' (its run row), but seq 2 of this session names it")]


def test_a_run_used_by_two_sessions_without_a_run_row_names_the_first_session(url):
    damage(url, "UPDATE event SET session_id = 's2', seq = 10 WHERE session_id = 's1' AND seq = 9",
           "UPDATE session SET last_seq = 10 WHERE session_id = 's2'", "DELETE FROM run WHERE run_id = 'r1-1'")
    exit_code, document = audit_json(url)
    assert exit_code == 1
    found = findings(document)
    assert ("event/s1", 6, "INDEX_MISSING_ROW", "run 'r1-1' has no row in the run table") in found
    assert ("event/s2", 10, "RUN_IN_TWO_SESSIONS", "run 'r1-1' is also used in session 's1'") in found
    assert document["summary"]["runs"] == 6  # each run id once, whatever sessions name it


@pytest.mark.parametrize(("envelope", "code", "message"), [
    ("'{\"type\": '", "INVALID_JSON", "not valid JSON: Expecting value at column 10"),
    ("'[1, 2]'", "INVALID_ENVELOPE", "not a JSON object"),
    ("replace(envelope, '\"tool_call\"', '\"tool_cal\"')", "INVALID_ENVELOPE", "type: unknown event type 'tool_cal'"),
    ("replace(envelope, '\"seq\":4', '\"seq\":-4')", "INVALID_ENVELOPE", "seq: must be an integer >= 1"),
    ("replace(envelope, '\"payload\":{\"k\":0}', '\"payload\":{\"k\":0},\"extra\":1')", "INVALID_ENVELOPE",
     "extra: unknown envelope key"),
    ("replace(envelope, '\"seq\":4', '\"seq\":5')", "INDEX_WRONG_BYTES",
     "the row for seq 4 has seq 4 (the envelope's is 5)"),
    ("replace(envelope, '\"run_id\":\"r1-0\"', '\"run_id\":\"r1-9\"')", "INDEX_WRONG_BYTES",
     "the row for seq 4 has run_id 'r1-0' (the envelope's is 'r1-9')"),
    ("replace(envelope, '\"session_id\":\"s1\"', '\"session_id\":\"s2\"')", "SESSION_MISMATCH",
     "session_id 's2' in the envelope is not its row's 's1'"),
])
def test_a_corrupt_envelope_is_found_at_its_row(url, envelope, code, message):
    damage(url, f"UPDATE event SET envelope = {envelope} WHERE session_id = 's1' AND seq = 4")
    exit_code, document = audit_json(url)
    assert exit_code == 1
    found = [f for f in findings(document) if f[2] == code]
    assert len(found) == 1 and found[0][:2] == ("event/s1", 4) and message in found[0][3], findings(document)
    # The summaries were folded from the row's columns, which still agree with them.
    assert "INDEX_WRONG_SUMMARY" not in codes(document)


@pytest.mark.parametrize(("statement", "path", "message"), [
    ("UPDATE session SET event_count = 99, closed = true WHERE session_id = 's0'", "session/s0",
     "session 's0': its summary row has event_count 99 (the events' is 9), closed True (the events' is False)"),
    ("UPDATE run SET status = 'running', ended_at = NULL WHERE run_id = 'r2-1'", "run/r2-1",
     "run 'r2-1''s summary row has status 'running' (the events' is 'completed'), ended_at None"),
    ("UPDATE run SET counts = '{\"tool_call\": 3}' WHERE run_id = 'r1-0'", "run/r1-0",
     "counts {'tool_call': 3} (the events' is {'run_created': 1, 'run_started': 1, 'tool_call': 1, "
     "'run_completed': 1})"),
    ("UPDATE run SET counts = 'not json' WHERE run_id = 'r1-0'", "run/r1-0", "counts 'not json'"),
    ("UPDATE run SET first_seq = 3 WHERE run_id = 'r0-0'", "run/r0-0", "first_seq 3 (the events' is 2)"),
])
def test_a_summary_row_that_differs_from_the_events_is_index_wrong_summary(url, statement, path, message):
    damage(url, statement)
    exit_code, document = audit_json(url)
    assert exit_code == 1
    assert [f[:3] for f in findings(document)] == [(path, 0, "INDEX_WRONG_SUMMARY")], findings(document)
    assert message in findings(document)[0][3]


@pytest.mark.parametrize(("statement", "path", "message"), [
    ("UPDATE session SET touched = (SELECT touched FROM session WHERE session_id = 's1') WHERE session_id = 's0'",
     "session/s0", "2 session rows share the listing number (touched) {s1} ('s0', 's1')"),
    ("UPDATE run SET touched = (SELECT touched FROM run WHERE run_id = 'r0-1') WHERE run_id = 'r1-1'",
     "run/r0-1", "2 run rows share the listing position (touched {r0-1}, last_seq 9) ('r0-1', 'r1-1')"),
    ("UPDATE run SET touched = 1000000 WHERE run_id = 'r0-0'", "run/r0-0",
     "run 'r0-0' has the listing number (touched) 1000000, above its session 's0''s {s0}"),
])
def test_listing_numbers_that_would_repeat_or_skip_rows_are_index_wrong_summary(url, statement, path, message):
    with psycopg.connect(url) as conn:  # the numbers before the damage, for the expected message
        numbers = dict(conn.execute("SELECT session_id, touched FROM session UNION ALL "
                                    "SELECT run_id, touched FROM run").fetchall())
    damage(url, statement)
    exit_code, document = audit_json(url)
    assert exit_code == 1
    assert [f[:3] for f in findings(document)] == [(path, 0, "INDEX_WRONG_SUMMARY")], findings(document)
    assert message.format_map(numbers) in findings(document)[0][3]


def test_session_and_run_rows_without_events_are_extra_rows(url):
    damage(url, "INSERT INTO session (session_id, last_seq) VALUES ('empty', 1)",
           "INSERT INTO run (run_id, session_id, first_seq) VALUES ('ghost', 's1', 99)")
    exit_code, document = audit_json(url)
    assert exit_code == 1
    found = findings(document)
    assert ("run/ghost", 0, "INDEX_EXTRA_ROW",
            "run 'ghost' is in the run table (session 's1'), but no event row of that session names it") in found
    assert ("session/empty", 0, "INDEX_EXTRA_ROW", "session 'empty' is in the session table, but no event row "
            "has it") in found


def test_run_lifecycle_warnings_exit_0_as_on_a_data_folder(pg_url):
    store = open_store(pg_url)
    try:
        store.append_many("s", [{"type": "run_started", "run_id": "r"}, {"type": "verify_start", "run_id": "r"}])
    finally:
        store.close()
    exit_code, document = audit_json(pg_url)
    assert exit_code == 0
    assert codes(document) == {"LIFECYCLE_BEFORE_CREATED", "VERIFY_UNFINISHED", "RUN_NOT_TERMINATED"}


def test_the_streamed_merge_holds_across_many_fetches(url, monkeypatch):
    """Cursor pages of 2 rows: sessions, their runs and their events still line up (in process)."""
    monkeypatch.setattr(audit_database, "ITERSIZE", 2)
    monkeypatch.setattr(audit_sql, "ITERSIZE", 2)
    damage(url, "UPDATE run SET warned = 5 WHERE run_id = 'r1-1'",
           "INSERT INTO session (session_id, last_seq) VALUES ('s10', 1)")
    found = []
    summary = audit(url, on_finding=found.append)
    assert [(f.path.rsplit("/", 2)[-2:], f.code) for f in found] == [
        (["event", "s10"], "SEQ_GAP"), (["run", "r1-1"], "INDEX_WRONG_SUMMARY"),
        (["session", "s10"], "INDEX_EXTRA_ROW")]
    assert (summary.sessions, summary.events, summary.runs) == (4, 27, 6)


def test_an_envelope_longer_than_the_largest_event_is_line_too_long_and_not_read(url):
    store = open_store(url)
    try:
        store.append("s1", {"type": "user_message", "payload": {"text": "x" * 3000}})
    finally:
        store.close()
    exit_code, document = audit_json(url, EVENTSVC_MAX_EVENT_BYTES="2000")
    assert exit_code == 1
    length = len(event_row(url, "s1", 10)["envelope"].encode())
    assert findings(document) == [("event/s1", 10, "LINE_TOO_LONG", f"an envelope of {length} bytes, longer than "
                                   "the largest event the service accepts (2000 bytes): not read, not parsed")]
    assert document["summary"]["events"] == 28  # its row still counts, and its summaries agree
    assert audit_json(url)[0] == 0  # under the service's default limit it is an ordinary event


def test_streamed_rows_all_arrive_in_order_when_fetches_shrink_for_large_rows(url):
    from eventsvc.store.postgres.snapshot import snapshot, stream

    sql = "SELECT g, repeat('x', CASE WHEN g BETWEEN 5 AND 30 THEN 1000 ELSE 1 END) FROM generate_series(1, 40) g"
    with snapshot(url) as conn:
        rows = list(stream(conn, "sizes", sql, itersize=8, row_bytes=lambda row: len(row[1]), fetch_bytes=2500))
    assert [row[0] for row in rows] == list(range(1, 41))
