"""`eventsvc reindex`, `seal`, --help and bad data folders, run as the installed script."""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eventsvc import EventStore
from eventsvc.cli import main

EVENTSVC = Path(sys.executable).with_name("eventsvc")


def run_eventsvc(*args: object, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(EVENTSVC), *map(str, args)], capture_output=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[bytes]) -> None:
    assert result.returncode == 2, result
    assert b"Traceback" not in result.stderr
    assert result.stderr.startswith(b"eventsvc: ") and result.stderr.count(b"\n") == 1, result.stderr


@pytest.fixture
def appended(data_dir: Path) -> dict[str, dict[str, list[str]]]:
    """Three sessions over several sealed segments, two runs each; returns each session's run ids."""
    store = EventStore(data_dir, fsync=False, segment_bytes=1200)
    runs: dict[str, list[str]] = {}
    try:
        for session_id in ("alpha", "beta", "gamma"):
            runs[session_id] = []
            store.append(session_id, {"type": "session_created", "payload": {"name": session_id}})
            for r in range(2):
                run_id = f"{session_id}-run-{r}"
                runs[session_id].append(run_id)
                store.append(session_id, {"type": "run_created", "run_id": run_id, "payload": {}})
                for n in range(4):
                    store.append_many(session_id, [
                        {"type": "tool_call", "run_id": run_id, "payload": {"n": n, "text": "é" * n}},
                        {"type": "user_message", "payload": {"n": n}},
                    ])
    finally:
        store.close()
    return runs


def query_results(data_dir: Path, runs: dict[str, list[str]]) -> dict:
    store = EventStore(data_dir, fsync=False)
    try:
        return {session_id: {"session": store.get_events_by_session(session_id, limit=100_000),
                             "since 7": store.get_events_by_session(session_id, since_seq=7, limit=100_000),
                             "runs": {run_id: store.get_events_by_run(session_id, run_id, limit=100_000)
                                      for run_id in run_ids}}
                for session_id, run_ids in runs.items()}
    finally:
        store.close()


def test_reindex_after_deleting_the_index_restores_identical_query_results(data_dir, appended):
    before = query_results(data_dir, appended)
    events = sum(len(results["session"]) for results in before.values())
    assert events > 0 and all(results["runs"][run] for results in before.values() for run in results["runs"])
    for suffix in ("", "-wal", "-shm"):
        (data_dir / f"index.sqlite3{suffix}").unlink(missing_ok=True)

    result = run_eventsvc("reindex", "--data-dir", data_dir)

    assert result.returncode == 0, result.stderr.decode()
    assert re.fullmatch(rf"indexed {events} events in 3 sessions in \d+\.\d+s\n", result.stdout.decode())
    # Read the rebuilt file before any store opens it: opening a store would also catch up an empty index.
    with sqlite3.connect(data_dir / "index.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM event").fetchone()[0] == events
        assert db.execute("SELECT count(*) FROM session").fetchone()[0] == 3
    assert query_results(data_dir, appended) == before


def test_reindex_refuses_while_another_process_holds_the_store_lock(data_dir, appended):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from eventsvc.store.files.locks import Locks
        with Locks(Path({str(data_dir / "locks")!r})).store(exclusive=True):
            print("locked", flush=True)
            sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        busy = run_eventsvc("reindex", "--data-dir", data_dir, "--wait", "0.5", timeout=30)
    finally:
        holder.stdin.close()  # the holder's read returns, it releases the lock and exits
        holder.wait(timeout=30)
    assert_one_line_error(busy)
    assert b"lock" in busy.stderr
    assert busy.stdout == b""
    # Once the lock is free, the same command succeeds: the refusal was the lock's doing.
    assert run_eventsvc("reindex", "--data-dir", data_dir, "--wait", "0.5").returncode == 0


def test_seal_writes_a_seal_of_the_active_segment_matching_its_prefix(data_dir, appended):
    session_dir = data_dir / "segments" / "beta"
    bases = sorted(int(path.stem) for path in session_dir.glob("*.jsonl"))
    assert len(bases) >= 2
    active = session_dir / f"{bases[-1]:020d}.jsonl"
    seal_file = session_dir / f"{bases[-1]:020d}.seal.json"
    previous_seal = session_dir / f"{bases[-2]:020d}.seal.json"
    assert not seal_file.exists() and previous_seal.exists()
    content = active.read_bytes()

    result = run_eventsvc("seal", "--data-dir", data_dir, "--session", "beta")

    assert result.returncode == 0, result.stderr.decode()
    assert f"sealed {active.name}".encode() in result.stdout
    seal = json.loads(seal_file.read_text())
    lines = content.splitlines()
    assert seal == {"segment": active.name, "bytes": len(content), "events": len(lines),
                    "first_seq": bases[-1], "last_seq": json.loads(lines[-1])["seq"],
                    "sha256": hashlib.sha256(content).hexdigest(),
                    "prev": hashlib.sha256(previous_seal.read_bytes()).hexdigest()}

    # Later appends grow the segment past the seal; the sealed prefix still matches.
    store = EventStore(data_dir, fsync=False, segment_bytes=1_000_000)
    try:
        store.append("beta", {"type": "user_message", "payload": {"after": "seal"}})
    finally:
        store.close()
    grown = active.read_bytes()
    assert len(grown) > seal["bytes"]
    assert hashlib.sha256(grown[:seal["bytes"]]).hexdigest() == seal["sha256"]
    assert hashlib.sha256(grown).hexdigest() != seal["sha256"]


def test_seal_touches_only_the_named_session(data_dir, appended):
    before = {path.name: path.read_bytes() for path in (data_dir / "segments" / "alpha").iterdir()}
    assert run_eventsvc("seal", "--data-dir", data_dir, "--session", "gamma").returncode == 0
    assert {path.name: path.read_bytes() for path in (data_dir / "segments" / "alpha").iterdir()} == before


@pytest.mark.parametrize(("command",), [((),), *(((name,),) for name in sorted(main.commands))])
def test_every_command_has_help(command):
    result = run_eventsvc(*command, "--help")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.startswith(f"Usage: eventsvc {' '.join(command)}".rstrip().encode())


DATA_DIR_COMMANDS = sorted(name for name, command in main.commands.items()
                           if any(param.name == "data_dir" for param in command.params))
REQUIRED_ARGS = {"export": ("--session", "alpha")}


def test_the_data_folder_commands_are_the_expected_ones():
    assert {"reindex", "seal", "export", "stats"} <= set(DATA_DIR_COMMANDS)


@pytest.mark.parametrize(("name",), [(name,) for name in DATA_DIR_COMMANDS])
@pytest.mark.parametrize(("folder",), [("missing",), ("empty",), ("a-file",)])
def test_a_folder_that_is_not_a_data_folder_exits_2_with_one_line(tmp_path, name, folder):
    data_dir = tmp_path / folder
    if folder == "empty":
        data_dir.mkdir()
    elif folder == "a-file":
        data_dir.write_text("not a folder\n")
    result = run_eventsvc(name, "--data-dir", data_dir, *REQUIRED_ARGS.get(name, ()))
    assert result.returncode == 2
    assert b"Traceback" not in result.stderr
    if folder != "a-file":  # click's own usage error for a file names the option on its last line
        assert_one_line_error(result)
        assert str(data_dir).encode() in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ([] if folder == "missing" else [folder])
    if folder == "empty":
        assert list(data_dir.iterdir()) == []


@pytest.mark.parametrize(("args", "names"), [
    (("export",), "--session"),
    (("nope",), "nope"),
    (("audit", "--format", "xml"), "--format"),
    (("stats", "--data-dir", "/etc/hostname"), "--data-dir"),
    (("tail", "--since-seq", "-1", "--session", "s"), "--since-seq"),
])
def test_usage_errors_are_one_line_with_exit_code_2(args, names):
    result = run_eventsvc(*args)
    assert_one_line_error(result)
    assert names in result.stderr.decode()
