"""The PostgreSQL backend's own promises: its schema, the version check, selection, outages, many writers."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from eventsvc import create_app
from eventsvc.errors import RunSessionConflict, SchemaMismatch
from eventsvc.store import open_store
from eventsvc.store.postgres.schema import LATEST
from postgres_db import create_database, drop_database

ROOT = Path(__file__).resolve().parent.parent


def psql(url: str, sql: str, *params) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params or None)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def pg_store(pg_url):
    store = open_store(pg_url)
    yield store
    store.close()


def test_schema_keys_events_by_session_and_seq_with_the_run_index(pg_url):
    indexes = dict(psql(pg_url, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'event'"))
    assert "(session_id, run_id, seq)" in indexes["idx_session_event_run_seq"]
    assert "UNIQUE" in indexes["event_session_event_id_key"] and "(session_id, event_id)" in \
        indexes["event_session_event_id_key"]
    assert "(session_id, seq)" in indexes["event_pkey"]
    assert "(run_id)" in dict(psql(pg_url, "SELECT indexname, indexdef FROM pg_indexes "
                                           "WHERE tablename = 'run'"))["run_pkey"]


def test_stored_text_is_the_files_backend_line(pg_store, pg_url, tmp_path):
    """Same input, same bytes: an export of either backend is identical for the same events."""
    files = open_store(tmp_path / "data")
    try:
        batch = [{"type": "run_started", "run_id": "r1", "event_id": "e1", "timestamp": "2026-01-02T03:04:05Z",
                  "payload": {"z": 1, "a": "héllo ✓ \u2028", "n": [1.5, None, True]}},
                 {"type": "user_message", "event_id": "e2", "timestamp": "2026-01-02T03:04:06.5+01:00",
                  "source": "agent", "payload": {"text": "\"quoted\" \\ \u0000"}}]
        files.append_many("s1", batch)
        pg_store.append_many("s1", batch)
        lines = files.read_page("s1").lines
        assert pg_store.read_page("s1").lines == lines
        assert [row[0].encode() for row in psql(pg_url, "SELECT envelope FROM event ORDER BY seq")] == lines
    finally:
        files.close()


def test_the_pool_hands_out_the_connection_returned_last(pg_url):
    from eventsvc.store.postgres.connect import Options, open_pool

    pool = open_pool(pg_url, Options(pool_size=3))
    try:
        taken = [pool.getconn(timeout=10) for _ in range(3)]
        pids = [conn.execute("SELECT pg_backend_pid()").fetchone()[0] for conn in taken]
        for conn in taken:
            pool.putconn(conn)
        for _ in range(3):
            with pool.connection() as conn:
                assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pids[-1]
    finally:
        pool.close()


def test_a_database_without_the_schema_is_refused_naming_the_upgrade_command(pg_database):
    url = create_database(upgraded=False)
    try:
        with pytest.raises(SchemaMismatch, match=r"eventsvc db upgrade URL"):
            open_store(url)
        with pytest.raises(SchemaMismatch, match=r"eventsvc db upgrade URL"):
            create_app({"DATABASE_URL": url})
        done = subprocess.run([sys.executable, "-m", "eventsvc.cli", "db", "upgrade", url],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert done.returncode == 0, done.stderr
        assert f"none -> {LATEST}" in done.stdout
        again = subprocess.run([sys.executable, "-m", "eventsvc.cli", "db", "upgrade", url],
                               capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert (again.returncode, "already current" in again.stdout) == (0, True)
        open_store(url).close()
        psql(url, "DELETE FROM eventsvc_schema_version")
        psql(url, "INSERT INTO eventsvc_schema_version (version) VALUES (0)")
        with pytest.raises(SchemaMismatch, match=rf"older than {LATEST}: run `eventsvc db upgrade URL`"):
            open_store(url)
        psql(url, "INSERT INTO eventsvc_schema_version (version) VALUES (99)")
        with pytest.raises(SchemaMismatch, match="newer"):
            open_store(url)
    finally:
        drop_database(url)


def test_database_url_selects_postgres_in_create_app(pg_url, tmp_path):
    app = create_app({"DATABASE_URL": pg_url, "DATA_DIR": str(tmp_path / "unused")})
    client = app.test_client()
    created = client.post("/api/sessions/s1/events", json={"type": "user_message", "payload": {"n": 1}})
    assert created.status_code == 201
    assert client.get("/api/sessions/s1/events").get_json()["events"] == [created.get_json()]
    assert psql(pg_url, "SELECT session_id, last_seq FROM session") == [("s1", 1)]
    assert not (tmp_path / "unused").exists()
    app.extensions["eventsvc.store"].close()


def test_unreachable_server_is_a_503_and_nothing_else(pg_database, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    app = create_app({"DATABASE_URL": f"postgresql://postgres:hunter2@127.0.0.1:{port}/none",
                      "DB_CONNECT_TIMEOUT": 1.0})
    client = app.test_client()
    answer = client.post("/api/sessions/s1/events", json={"type": "user_message"})
    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "storage_unavailable"
    assert "hunter2" not in answer.get_data(True)  # the password never reaches a client
    assert client.get("/api/sessions/s1/events").status_code == 503
    app.extensions["eventsvc.store"].close()


def test_a_new_waiter_stuck_on_a_busy_pool_holds_up_no_other_waiters_wake_up(pg_url):
    """A waiter reads its session's last seq from the pool; when the pool is busy, that read waits,
    and while it does, a waiter on another session is still woken by an append on another host."""
    import time

    reader = open_store(pg_url, pool_size=1, connect_timeout=4)
    writer = open_store(pg_url)
    try:
        writer.append("woken", {"type": "user_message"})
        woke: list[float] = []
        waiting = threading.Thread(target=lambda: (reader.wait_for_events("woken", 1, 20),
                                                   woke.append(time.monotonic())))
        waiting.start()
        time.sleep(1.0)  # listening, and waiting
        slow = threading.Thread(target=lambda: reader._pooled.run(lambda conn: conn.execute("SELECT pg_sleep(3)")))
        slow.start()  # holds the reader's only pooled connection
        time.sleep(0.3)
        stuck = threading.Thread(target=lambda: reader.wait_for_events("other", 0, 5))
        stuck.start()  # waits for the pool to read "other"'s last seq
        time.sleep(0.3)
        appended = time.monotonic()
        writer.append("woken", {"type": "user_message"})
        waiting.join(20)
        assert woke and woke[0] - appended < 1.5, "the waiter on 'woken' waited for the pool's slow statement"
        slow.join(10)
        stuck.join(10)
    finally:
        reader.close()
        writer.close()


def test_two_sessions_racing_for_one_run_leave_it_with_one(pg_url):
    stores = [open_store(pg_url) for _ in range(2)]
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def claim(store, session_id: str) -> None:
        barrier.wait()
        try:
            store.append(session_id, {"type": "run_started", "run_id": "contested"})
            outcomes.append(session_id)
        except RunSessionConflict:
            outcomes.append("conflict")

    try:
        for _ in range(5):
            psql(pg_url, "TRUNCATE event, run, session")
            outcomes.clear()
            threads = [threading.Thread(target=claim, args=(store, f"s{n}")) for n, store in enumerate(stores)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            owner = stores[0].run_session("contested")
            assert sorted(outcomes) == sorted([owner, "conflict"])
            assert psql(pg_url, "SELECT session_id, count(*) FROM event GROUP BY 1") == [(owner, 1)]
    finally:
        for store in stores:
            store.close()


WRITER = """
import sys
from eventsvc.store import open_store
from eventsvc.store.postgres.schema import LATEST
url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = open_store(url)
n = 0
while n < count:
    size = 1 + n % 3  # singles and batches
    events = [{"type": "tool_call", "event_id": f"{name}-{k}", "payload": {"k": k}} for k in range(n, min(count, n + size))]
    store.append_many("shared", events)
    n += len(events)
store.close()
"""


def test_several_processes_appending_to_one_session_get_contiguous_seqs(pg_url):
    writers, count = 4, 40
    processes = [subprocess.Popen([sys.executable, "-c", WRITER, pg_url, f"w{n}", str(count)], cwd=ROOT)
                 for n in range(writers)]
    for process in processes:
        assert process.wait(timeout=120) == 0
    rows = psql(pg_url, "SELECT seq, event_id, (envelope::json->>'seq')::bigint FROM event "
                        "WHERE session_id = 'shared' ORDER BY seq")
    assert [row[0] for row in rows] == list(range(1, writers * count + 1))
    assert all(seq == stored for seq, _, stored in rows)
    assert sorted(row[1] for row in rows) == sorted(f"w{n}-{k}" for n in range(writers) for k in range(count))
    assert psql(pg_url, "SELECT last_seq FROM session WHERE session_id = 'shared'") == [(writers * count,)]


def test_gunicorn_refuses_to_start_on_a_database_without_the_schema(pg_database, tmp_path):
    from conftest import start_server

    url = create_database(upgraded=False)
    try:
        with pytest.raises(RuntimeError, match="exited") as caught:
            start_server(tmp_path / "data", tmp_path / "gunicorn.log", workers=1,
                         env={"EVENTSVC_DATABASE_URL": url})
        assert "eventsvc db upgrade URL" in str(caught.value)
        assert "Traceback" not in (tmp_path / "gunicorn.log").read_text()  # the message alone
    finally:
        drop_database(url)


def test_upgrading_a_version_1_database_computes_the_summaries_of_its_events(pg_database, tmp_path):
    """Version 1 had no summaries: the upgrade folds every stored event, as the files backend does."""
    import json

    import psycopg

    from eventsvc.store.postgres import schema

    files = open_store(tmp_path / "data")
    url = create_database(upgraded=False)
    try:
        files.append_many("s1", [{"type": "session_created"}, {"type": "run_created", "run_id": "a"},
                                 {"type": "run_started", "run_id": "a"}, {"type": "tool_policy_blocked", "run_id": "a"},
                                 {"type": "verify_pass", "run_id": "a"}, {"type": "run_completed", "run_id": "a"}])
        files.append_many("s2", [{"type": "run_created", "run_id": "b"}, {"type": "session_closed"}])
        with psycopg.connect(url) as conn:
            conn.execute(schema.MIGRATIONS[0][1])
            conn.execute(f"CREATE TABLE {schema.VERSION_TABLE} (version integer PRIMARY KEY, "
                         "applied_at timestamptz NOT NULL DEFAULT now())")
            conn.execute(f"INSERT INTO {schema.VERSION_TABLE} (version) VALUES (1)")
            for session_id in ("s1", "s2"):
                lines = files.read_page(session_id).lines
                conn.execute("INSERT INTO session VALUES (%s, %s)", (session_id, len(lines)))
                for line in lines:
                    env = json.loads(line)
                    conn.execute("INSERT INTO event VALUES (%s, %s, %s, %s, %s, %s, %s)",
                                 (session_id, env["seq"], env["run_id"], env["type"], env["event_id"],
                                  env["timestamp"], line.decode()))
                    if env["run_id"] and not conn.execute("SELECT 1 FROM run WHERE run_id = %s",
                                                          (env["run_id"],)).fetchone():
                        conn.execute("INSERT INTO run VALUES (%s, %s, %s)", (env["run_id"], session_id, env["seq"]))
        with pytest.raises(SchemaMismatch, match="older"):
            open_store(url)
        done = subprocess.run([sys.executable, "-m", "eventsvc.cli", "db", "upgrade", url],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert f"1 -> {LATEST}" in done.stdout, done.stderr
        upgraded = open_store(url)
        try:
            for session_id in ("s1", "s2"):
                assert upgraded.get_session(session_id) == files.get_session(session_id)
            for run_id in ("a", "b"):
                assert upgraded.get_run(run_id) == files.get_run(run_id)
            assert [s["session_id"] for s in upgraded.list_sessions().items] == ["s2", "s1"]
            upgraded.append("s1", {"type": "user_message"})
            assert upgraded.get_session("s1")["event_count"] == 7
            assert upgraded.list_sessions().items[0]["session_id"] == "s1"
        finally:
            upgraded.close()
    finally:
        files.close()
        drop_database(url)
