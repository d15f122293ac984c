"""Summaries and listings from outside: a real gunicorn, the client, the CLI, the audit, SIGKILL."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from conftest import Server
from eventsvc import EventStore
from eventsvc.client import EventClient, NotFound, ValidationFailed
from test_crash import Writer, writers  # noqa: F401 - the fixture that stops the writers
from test_summaries import log_summaries, stored_summaries

EVENTSVC = Path(sys.executable).with_name("eventsvc")
WINDOW_PLUS = 10_500  # past one type-filter window (10,000 rows)


def run_cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EVENTSVC), *map(str, args)], capture_output=True, text=True, timeout=60)


def fill(data_dir: Path) -> None:
    """Three sessions, five runs in assorted states, and one long session where tool_call is rare."""
    store = EventStore(data_dir, fsync=False)
    try:
        store.append_many("s1", [{"type": "run_created", "run_id": "r1"}, {"type": "run_started", "run_id": "r1"},
                                 {"type": "run_created", "run_id": "r2"}])
        store.append_many("s2", [{"type": "run_created", "run_id": "r3"}, {"type": "run_started", "run_id": "r3"},
                                 {"type": "run_waiting_input", "run_id": "r3"}])
        store.append("s1", {"type": "run_completed", "run_id": "r1"})
        store.append_many("long", [{"type": "tool_call" if n % 4000 == 7 else "user_message",
                                    "run_id": "r5" if n % 2 else None} for n in range(WINDOW_PLUS)])
        store.append("s2", {"type": "run_created", "run_id": "r4"})
    finally:
        store.close()


def get(server: Server, path: str, **params: object) -> requests.Response:
    return requests.get(server.url + path, params=params, timeout=30)


def walk(server: Server, path: str, key: str, **params: object) -> list[dict]:
    items, cursor = [], None
    while True:
        body = get(server, path, **params, **({"cursor": cursor} if cursor else {})).json()
        items += body[key]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


@pytest.mark.slow
def test_listings_summaries_and_filters_over_http(serve, data_dir):
    fill(data_dir)
    server = serve(data_dir)
    ids = lambda items, key: [item[key] for item in items]  # noqa: E731
    assert ids(get(server, "/api/sessions").json()["sessions"], "session_id") == ["s2", "long", "s1"]
    assert ids(walk(server, "/api/sessions", "sessions", limit=1), "session_id") == ["s2", "long", "s1"]
    assert ids(walk(server, "/api/runs", "runs", limit=2), "run_id") == ["r4", "r5", "r1", "r3", "r2"]
    assert ids(walk(server, "/api/runs", "runs", limit=1, status="created,waiting_input"),
               "run_id") == ["r4", "r3", "r2"]
    assert ids(get(server, "/api/runs", status="running,completed", session_id="s1").json()["runs"],
               "run_id") == ["r1"]
    assert get(server, "/api/runs", session_id="nobody").json() == {"runs": [], "next_cursor": None}
    body = get(server, "/api/sessions/s1/runs", limit=1).json()
    assert (body["session_id"], ids(body["runs"], "run_id")) == ("s1", ["r1"])
    assert ids(walk(server, "/api/sessions/s1/runs", "runs", limit=1), "run_id") == ["r1", "r2"]
    run = get(server, "/api/runs/r3").json()
    assert (run["status"], run["session_id"], run["event_count"]) == ("waiting_input", "s2", 3)
    assert get(server, "/api/sessions/s2").json()["active_runs"] == 2

    for path in ("/api/runs/nobody", "/api/sessions/nobody", "/api/sessions/nobody/runs"):
        response = get(server, path)
        assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found"), path
    sessions_cursor = get(server, "/api/sessions", limit=1).json()["next_cursor"]
    for path, params in [("/api/runs", {"status": "bogus"}), ("/api/runs", {"status": "running,nope"}),
                         ("/api/runs", {"cursor": "not-a-cursor"}), ("/api/runs", {"cursor": sessions_cursor}),
                         ("/api/sessions", {"cursor": "czo"}), ("/api/sessions", {"limit": 0}),
                         ("/api/runs", {"limit": 1001}), ("/api/sessions/s1/runs", {"cursor": "x"}),
                         ("/api/sessions/s1/events", {"types": "nope"}), ("/api/runs/r1/events", {"types": ""}),
                         ("/api/sessions/s1/events/stream", {"types": "Tool_call"}),
                         ("/api/runs/r1/events/stream", {"types": "nope"}),
                         ("/api/sessions/s1/events", {"types": "nope", "wait": 1})]:
        response = get(server, path, **params)
        assert (response.status_code, response.json()["error"]["code"]) == (422, "validation_error"), (path, params)

    # A filter that matches little: pages past a whole window, each match exactly once.
    for path, expected in [("/api/sessions/long/events", [8, 4008, 8008]), ("/api/runs/r5/events", [8, 4008, 8008])]:
        seen, since, pages = [], 0, 0
        while True:
            page = get(server, path, since_seq=since, limit=1, types="tool_call,error").json()
            pages += 1
            seen += [event["seq"] for event in page["events"]]
            assert all(event["type"] == "tool_call" for event in page["events"])
            assert page["next_since_seq"] >= since
            since = page["next_since_seq"]
            if not page["has_more"]:
                break
        assert seen == expected, path
        assert since >= 10_000
    long_poll = get(server, "/api/sessions/long/events", since_seq=8008, types="tool_call", wait=0.2).json()
    assert long_poll["events"] == [] and long_poll["next_since_seq"] == WINDOW_PLUS

    stream = requests.get(server.url + "/api/runs/r3/events/stream",
                          params={"types": "run_waiting_input,run_completed", "until_seq": 4},
                          headers={"Accept": "text/event-stream"}, timeout=30)
    assert stream.status_code == 200
    assert [line for line in stream.text.splitlines() if line.startswith("event:")] == [
        "event: run_waiting_input", "event: end"]


@pytest.mark.slow
def test_client_reads_summaries_listings_and_filtered_events(serve, data_dir):
    fill(data_dir)
    server = serve(data_dir)
    with EventClient(server.url) as client:
        assert client.session("s1")["run_count"] == 2
        assert client.run("r1")["status"] == "completed"
        with pytest.raises(NotFound):
            client.run("nobody")
        with pytest.raises(NotFound):
            client.session("nobody")
        assert [s["session_id"] for s in client.sessions(limit=1)] == ["s2", "long", "s1"]
        assert [r["run_id"] for r in client.runs(limit=1)] == ["r4", "r5", "r1", "r3", "r2"]
        assert [r["run_id"] for r in client.runs(status=["created", "completed"], limit=1)] == ["r4", "r1", "r2"]
        assert [r["run_id"] for r in client.runs(status="created", session_id="s1")] == ["r2"]
        with pytest.raises(ValidationFailed):
            list(client.runs(status="bogus"))
        assert [e["seq"] for e in client.session_events("long", types=["tool_call"], limit=1)] == [8, 4008, 8008]
        assert [e["seq"] for e in client.run_events("r5", types="tool_call")] == [8, 4008, 8008]
        assert [e["type"] for e in client.follow(run_id="r1", types=["run_completed"])] == ["run_completed"]
        followed = client.follow(session_id="long", types=["tool_call"], until_seq=WINDOW_PLUS)
        assert [e["seq"] for e in followed] == [8, 4008, 8008]


def test_cli_lists_sessions_and_runs_as_a_table_and_as_json(data_dir):
    fill(data_dir)
    table = run_cli("sessions", "--data-dir", data_dir)
    assert table.returncode == 0, table.stderr
    rows = table.stdout.splitlines()
    assert rows[0].split() == ["SESSION", "EVENTS", "RUNS", "ACTIVE", "CLOSED", "CREATED", "UPDATED"]
    assert [row.split()[0] for row in rows[1:]] == ["s2", "long", "s1"]
    document = json.loads(run_cli("sessions", "--data-dir", data_dir, "--format", "json").stdout)
    assert [s["session_id"] for s in document["sessions"]] == ["s2", "long", "s1"]
    assert document["sessions"][2]["run_count"] == 2

    runs = run_cli("runs", "--data-dir", data_dir, "--status", "created", "--status", "waiting_input,running")
    assert runs.returncode == 0, runs.stderr
    assert [row.split()[:3] for row in runs.stdout.splitlines()[1:]] == [
        ["r4", "s2", "created"], ["r3", "s2", "waiting_input"], ["r2", "s1", "created"]]
    document = json.loads(run_cli("runs", "--data-dir", data_dir, "--session", "s1", "--format", "json").stdout)
    assert [(r["run_id"], r["status"]) for r in document["runs"]] == [("r1", "completed"), ("r2", "created")]
    limited = json.loads(run_cli("runs", "--data-dir", data_dir, "--limit", "2", "--format", "json").stdout)
    assert len(limited["runs"]) == 2

    bad = run_cli("runs", "--data-dir", data_dir, "--status", "bogus")
    assert bad.returncode == 2 and bad.stdout == "" and len(bad.stderr.splitlines()) == 1
    assert "bogus" in bad.stderr


def test_audit_reports_a_summary_row_edited_by_hand(data_dir):
    fill(data_dir)
    clean = run_cli("audit", "--index", "--format", "json", data_dir)
    assert clean.returncode == 0, clean.stdout
    with sqlite3.connect(data_dir / "index.sqlite3") as db:
        db.execute("UPDATE run SET status = 'failed', counts = '{\"tool_call\":9}' WHERE run_id = 'r3'")
        db.execute("UPDATE session SET active_runs = 7 WHERE session_id = 's1'")
    db.close()
    edited = run_cli("audit", "--index", "--format", "json", data_dir)
    assert edited.returncode == 1
    document = json.loads(edited.stdout)
    findings = [f for f in document["findings"] if f["code"] == "INDEX_WRONG_SUMMARY"]
    assert {code: n for code, n in document["summary"]["findings"].items()
            if document["summary"]["findings"] and code.startswith("INDEX_")} == {"INDEX_WRONG_SUMMARY": 2}
    messages = " | ".join(f["message"] for f in findings)
    assert "run 'r3'" in messages and "status 'failed'" in messages and "counts" in messages
    assert "session 's1'" in messages and "active_runs 7" in messages
    assert all(f["severity"] == "error" for f in findings)
    reindexed = run_cli("reindex", "--data-dir", data_dir)
    assert reindexed.returncode == 0, reindexed.stderr
    assert run_cli("audit", "--index", data_dir).returncode == 0


def test_audit_reports_listing_numbers_edited_by_hand(data_dir):
    fill(data_dir)
    with sqlite3.connect(data_dir / "index.sqlite3") as db:
        sessions = [row[0] for row in db.execute("SELECT session_id FROM session ORDER BY touched")]
        db.execute("UPDATE session SET touched = (SELECT touched FROM session WHERE session_id = ?)"
                   " WHERE session_id = ?", (sessions[-1], sessions[0]))
        run_id, session_touched = db.execute("SELECT r.run_id, s.touched FROM run r JOIN session s"
                                             " USING (session_id) ORDER BY r.touched LIMIT 1").fetchone()
        db.execute("UPDATE run SET touched = ? WHERE run_id = ?", (session_touched + 1000, run_id))
    db.close()
    edited = run_cli("audit", "--index", "--format", "json", data_dir)
    assert edited.returncode == 1
    messages = [f["message"] for f in json.loads(edited.stdout)["findings"] if f["code"] == "INDEX_WRONG_SUMMARY"]
    assert any("2 session rows share the listing number" in message for message in messages), messages
    assert any(f"run {run_id!r} has the listing number" in message for message in messages), messages
    assert run_cli("reindex", "--data-dir", data_dir).returncode == 0
    assert run_cli("audit", "--index", data_dir).returncode == 0


@pytest.mark.slow
def test_summaries_survive_sigkill_mid_stream_and_a_deleted_index(writers, data_dir):
    for round_, acks in enumerate([5, 60]):
        writer = Writer(data_dir, f"w{round_}", 2)
        writers.append(writer)
        writer.wait_for(acks)
        writer.kill()
        store = EventStore(data_dir)
        try:
            before = stored_summaries(store, data_dir)
            assert before == log_summaries(data_dir)
        finally:
            store.close()
    assert before[1], "the writers appended run events before the kills"
    for path in data_dir.glob("index.sqlite3*"):
        path.unlink()
    store = EventStore(data_dir)
    try:
        assert stored_summaries(store, data_dir) == before
    finally:
        store.close()
