"""export, stats, sessions, runs and audit with `--database URL`: the same answers as on a data
folder holding the same events, and one-line errors for a wrong choice of store."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventsvc.ops.copy import copy_store
from eventsvc.store import open_store

EVENTSVC = Path(sys.executable).with_name("eventsvc")
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nothing_here"


def run_eventsvc(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None,
                 ) -> subprocess.CompletedProcess[bytes]:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("EVENTSVC_DATABASE_URL", "EVENTSVC_DATA_DIR")}
    return subprocess.run([str(EVENTSVC), *map(str, args)], capture_output=True, timeout=120,
                          env={**environment, **(env or {})}, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess[bytes], *needles: str) -> None:
    assert result.returncode == 2, result
    assert b"Traceback" not in result.stderr
    assert result.stderr.startswith(b"eventsvc: ") and result.stderr.count(b"\n") == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr.decode(), result.stderr


def fill(data_dir: Path) -> None:
    """Three sessions: runs in every lifecycle state, events outside runs, text that JSON escapes."""
    store = open_store(data_dir)
    try:
        for n, ending in enumerate(("run_completed", "run_failed", None)):
            session_id = f"s{n}"
            store.append(session_id, {"type": "session_created", "payload": {"name": f"=cmd|{n}"}})
            for r in range(2):
                run_id = f"r{n}-{r}"
                store.append_many(session_id, [
                    {"type": "run_created", "run_id": run_id},
                    {"type": "run_started", "run_id": run_id},
                    *({"type": "tool_call", "run_id": run_id, "payload": {"k": k, "t": "é\u2028\"", "x": 1.5e-7}}
                      for k in range(4)),
                    {"type": "tool_policy_blocked", "run_id": run_id, "payload": {}},
                    {"type": "verify_start", "run_id": run_id}])
                if ending is not None:
                    store.append(session_id, {"type": ending, "run_id": run_id, "source": "agent"})
            store.append(session_id, {"type": "user_message", "payload": {"text": "-bye", "big": 2**70}})
    finally:
        store.close()


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("original") / "data"
    fill(data_dir)
    return data_dir


@pytest.fixture
def both(original: Path, pg_url: str, tmp_path: Path) -> tuple[Path, str]:
    """The same events in a data folder and a database, each written by one copy in the same order
    (so the listings, newest first, agree too)."""
    copies = tmp_path / "copy"
    source = open_store(original)
    try:
        for target in (str(copies), pg_url):
            store = open_store(target)
            try:
                assert copy_store(source, store).problems == []
            finally:
                store.close()
    finally:
        source.close()
    return copies, pg_url


def outputs(both: tuple[Path, str], *args: object) -> tuple[subprocess.CompletedProcess[bytes], ...]:
    data_dir, url = both
    return run_eventsvc(*args, "--data-dir", data_dir), run_eventsvc(*args, "--database", url)


@pytest.mark.parametrize(("args",), [
    (("sessions",),), (("sessions", "--format", "json"),), (("sessions", "--limit", "2"),),
    (("runs",),), (("runs", "--format", "json"),), (("runs", "--status", "completed,failed"),),
    (("runs", "--session", "s2", "--format", "json"),),
])
def test_sessions_and_runs_answer_the_same_on_both_backends(both, args):
    files, database = outputs(both, *args)
    assert files.returncode == database.returncode == 0, database.stderr
    assert database.stdout == files.stdout
    assert files.stdout.count(b"\n") >= 2


@pytest.mark.parametrize(("args",), [
    (("--session", "s0"),),
    (("--session", "s1", "--format", "csv"),),
    (("--session", "s2", "--format", "cloudevents"),),
    (("--session", "s0", "--run", "r0-1"),),
    (("--session", "s0", "--since-seq", "7", "--type", "tool_call", "--type", "run_completed"),),
    (("--session", "s1", "--run", "r1-0", "--type", "verify_start", "--format", "csv"),),
    (("--session", "s1", "--type", "not_a_type"),),
])
def test_export_is_byte_identical_on_both_backends(both, args):
    files, database = outputs(both, "export", *args)
    assert files.returncode == database.returncode == 0, database.stderr
    assert database.stdout == files.stdout
    assert database.stderr == files.stderr


def test_export_of_the_whole_database_is_the_original_segment_lines(both, original):
    for session_id in ("s0", "s1", "s2"):
        exported = run_eventsvc("export", "--database", both[1], "--session", session_id).stdout
        segments = sorted((original / "segments" / session_id).glob("*.jsonl"))
        assert exported == b"".join(path.read_bytes() for path in segments)


@pytest.mark.parametrize(("args", "message"), [
    (("--session", "nope"), "session 'nope' not found"),
    (("--session", "s0", "--run", "r1-0"), "run 'r1-0' not found in session 's0'"),
])
def test_export_of_an_unknown_session_or_run_is_an_error_on_both_backends(both, tmp_path, args, message):
    output = tmp_path / "out.jsonl"
    for result in outputs(both, "export", *args, "--output", output):
        assert_one_line_error(result, message)
        assert not output.exists()


def test_stats_report_the_same_figures_on_both_backends_but_segments(both):
    files, database = outputs(both, "stats", "--format", "json")
    assert files.returncode == database.returncode == 0, database.stderr
    from_files, from_database = json.loads(files.stdout), json.loads(database.stdout)
    assert from_files["segments"] == 3 and from_database["segments"] == 0
    for report in (from_files, from_database):
        report["segments"] = 0
        for ranking in ("largest_by_events", "largest_by_bytes"):
            for session in report[ranking]:
                session["segments"] = 0
    assert from_database == from_files
    assert (from_database["sessions"], from_database["events"], from_database["runs"]) == (3, 58, 6)


def test_stats_as_text_have_the_same_lines_on_both_backends(both):
    files, database = outputs(both, "stats")
    assert files.returncode == database.returncode == 0, database.stderr
    assert (database.stdout.replace(b"0 segments", b"N segments").replace(b"segments         0", b"segments N")
            == files.stdout.replace(b"1 segments", b"N segments").replace(b"segments         3", b"segments N"))


def test_audit_of_the_same_clean_events_finds_the_same_on_both_backends(both):
    files, database = outputs(both, "audit", "--format", "json")
    assert files.returncode == database.returncode == 0, database.stdout
    from_files, from_database = json.loads(files.stdout), json.loads(database.stdout)
    # One segment per session: a file finding's line is its seq, as a database finding's is.
    assert {(f["line"], f["code"], f["message"]) for f in from_database["findings"]} == {
        (f["line"], f["code"], f["message"]) for f in from_files["findings"] if f["code"] != "UNSEALED_TAIL"}
    assert {f["code"] for f in from_database["findings"]} == {"RUN_NOT_TERMINATED", "VERIFY_UNFINISHED"}
    for key in ("sessions", "events", "runs", "bytes", "errors", "warnings"):
        assert from_database["summary"][key] == from_files["summary"][key], key
    assert from_database["exit_code"] == 0


def test_audit_as_text_prints_the_summary_in_the_same_form(both):
    files, database = outputs(both, "audit")
    assert database.returncode == 0
    last = database.stdout.decode().split("\n\n")[-1].splitlines()
    assert last[0] == "audited 3 sessions, 0 segments, 58 events, 6 runs, " + \
        files.stdout.decode().split(" bytes, ")[0].rsplit(" ", 1)[1] + \
        " bytes, 0 unexpected entries: 0 errors, 8 warnings, 0 information"
    assert [line.split()[0] for line in last[1:]] == ["RUN_NOT_TERMINATED", "VERIFY_UNFINISHED"]


def test_the_database_named_by_the_environment_is_the_default(both):
    data_dir, url = both
    by_flag = run_eventsvc("sessions", "--database", url)
    by_environment = run_eventsvc("sessions", env={"EVENTSVC_DATABASE_URL": url,
                                                   "EVENTSVC_DATA_DIR": str(data_dir / "not-there")})
    assert by_environment.returncode == 0, by_environment.stderr
    assert by_environment.stdout == by_flag.stdout
    # An explicit --data-dir wins over the environment's database.
    assert run_eventsvc("stats", "--data-dir", data_dir, env={"EVENTSVC_DATABASE_URL": UNREACHABLE}).returncode == 0


COMMANDS = [("export", "--session", "s0"), ("stats",), ("sessions",), ("runs",), ("audit",)]


@pytest.mark.parametrize(("command",), [(command,) for command in COMMANDS])
def test_both_data_dir_and_database_is_a_usage_error(command, tmp_path):
    result = run_eventsvc(*command, "--data-dir", tmp_path, "--database", UNREACHABLE)
    assert_one_line_error(result, "give --data-dir or --database, not both")


@pytest.mark.parametrize(("command",), [(command,) for command in COMMANDS])
def test_neither_data_dir_nor_database_says_so_where_no_default_store_exists(command, tmp_path):
    result = run_eventsvc(*command, cwd=tmp_path)
    assert_one_line_error(result, "no store given: pass --data-dir DIR or --database URL")


@pytest.mark.parametrize(("command",), [(command,) for command in COMMANDS])
def test_an_unreachable_database_is_one_line_naming_why(command):
    result = run_eventsvc(*command, "--database", UNREACHABLE)
    assert_one_line_error(result, "the database 127.0.0.1:1/nothing_here is unavailable: ", "refused")
    assert result.stdout == b""


@pytest.mark.parametrize(("command",), [(command,) for command in COMMANDS])
def test_a_database_without_the_schema_names_the_upgrade_command(command):
    from postgres_db import create_database, drop_database

    url = create_database(upgraded=False)
    try:
        assert_one_line_error(run_eventsvc(*command, "--database", url), "eventsvc db upgrade URL")
    finally:
        drop_database(url)


@pytest.mark.parametrize(("args", "message"), [
    (("stats", "--database", "/var/lib/data"), "--database must be a postgresql:// (or postgres://) URL"),
    (("audit", "some/path", "--database", UNREACHABLE), "give PATHs or --database, not both"),
])
def test_a_wrong_database_argument_is_a_usage_error(args, message):
    assert_one_line_error(run_eventsvc(*args), message)


def test_an_environment_database_that_is_not_a_url_is_an_error():
    result = run_eventsvc("sessions", env={"EVENTSVC_DATABASE_URL": "mysql://db/x"})
    assert_one_line_error(result, "EVENTSVC_DATABASE_URL must be a postgresql://")


UNPARSABLE = "postgresql://postgres:S3CRET-PW@[::1/x?password=ALSO-SECRET"


@pytest.mark.parametrize(("command",), [(command,) for command in COMMANDS])
def test_a_url_libpq_cannot_parse_is_one_line_that_never_shows_the_password(command):
    result = run_eventsvc(*command, "--database", UNPARSABLE)
    assert_one_line_error(result, "the database URL cannot be parsed: ", "postgres:***@")
    assert b"S3CRET" not in result.stderr and b"ALSO-SECRET" not in result.stderr


def test_copy_to_a_url_libpq_cannot_parse_never_shows_the_password(tmp_path):
    fill(tmp_path / "data")
    result = run_eventsvc("copy", tmp_path / "data", UNPARSABLE)
    assert_one_line_error(result, "cannot be parsed")
    assert b"S3CRET" not in result.stderr + result.stdout


def test_a_server_on_a_url_libpq_cannot_parse_refuses_to_start_without_showing_the_password(tmp_path):
    gunicorn = EVENTSVC.with_name("gunicorn")
    result = subprocess.run([str(gunicorn), "--config", "python:eventsvc.gunicorn_conf", "wsgi:app"],
                            capture_output=True, timeout=60, cwd=Path(__file__).resolve().parent.parent,
                            env={**os.environ, "EVENTSVC_DATABASE_URL": UNPARSABLE, "EVENTSVC_BIND": "127.0.0.1:0"})
    assert result.returncode != 0
    assert b"EVENTSVC_DATABASE_URL: cannot be parsed" in result.stderr + result.stdout
    assert b"S3CRET" not in result.stderr + result.stdout


def test_copy_to_an_unreachable_database_is_one_line_naming_why(tmp_path):
    fill(tmp_path / "data")
    result = run_eventsvc("copy", tmp_path / "data", UNREACHABLE)
    assert_one_line_error(result, "the database 127.0.0.1:1/nothing_here is unavailable: ", "refused")
