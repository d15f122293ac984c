"""Several writers on one data dir at once: real processes and threads, real files and SQLite.

Each child process opens its own EventStore (as a gunicorn worker does), waits for the
parent's "go" so that all start together, and prints one JSON line per acknowledged event.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventsvc import EventStore
from eventsvc.errors import RunSessionConflict, StoreBusy
from eventsvc.store.files import segments

ROOT = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT = 60.0
BATCH_SIZES = (1, 1, 2, 1, 3)  # single appends and atomic batches, interleaved

APPENDER = r"""
import json, sys
from eventsvc import EventStore
data_dir, session_id, name, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sizes = (1, 1, 2, 1, 3)
store = EventStore(data_dir)
print("ready", flush=True)
sys.stdin.readline()
n = 0
for call in range(count):
    if n >= count:
        break
    size = min(sizes[call % len(sizes)], count - n)
    events = [{"type": "user_message", "event_id": f"{name}-{n + k}", "payload": {"writer": name, "n": n + k}}
              for k in range(size)]
    stored = store.append_many(session_id, events) if size > 1 else [store.append(session_id, events[0])]
    for event in stored:
        print(json.dumps({"seq": event["seq"], "event_id": event["event_id"]}), flush=True)
    n += size
store.close()
"""

RESENDER = r"""
import json, sys
from eventsvc import EventStore
data_dir, session_id, start, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store = EventStore(data_dir)
print("ready", flush=True)
sys.stdin.readline()
for k in range(count):
    n = (start + k) % count
    stored = store.append(session_id, {"type": "tool_call", "run_id": "r-dup", "event_id": f"dup-{n}",
                                       "source": "agent", "payload": {"n": n}})
    print(json.dumps(stored), flush=True)
store.close()
"""

RACER = r"""
import json, sys
from eventsvc import EventStore
from eventsvc.errors import RunSessionConflict, StoreBusy
data_dir, session_id = sys.argv[1], sys.argv[2]
store = EventStore(data_dir)
print("ready", flush=True)
while True:
    run_id = sys.stdin.readline().strip()
    if not run_id:
        break
    event = {"type": "run_created", "run_id": run_id, "event_id": f"{session_id}-{run_id}", "payload": {}}
    try:
        stored = store.append(session_id, event)
        print(json.dumps({"won": True, "seq": stored["seq"]}), flush=True)
    except RunSessionConflict as exc:
        print(json.dumps({"won": False, "owner": exc.details["session_id"]}), flush=True)
store.close()
"""


@pytest.fixture
def spawn() -> Iterator:
    """Start child Python processes; any still running at teardown are killed by PID."""
    children: list[subprocess.Popen] = []

    def _spawn(script: str, *args: object) -> subprocess.Popen:
        child = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=ROOT, bufsize=0,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        children.append(child)
        return child

    yield _spawn
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)


def read_line(child: subprocess.Popen, timeout: float = CHILD_TIMEOUT) -> bytes:
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    assert ready, f"child {child.pid} said nothing for {timeout}s"
    line = child.stdout.readline()
    assert line, f"child {child.pid} exited early: {child.stderr.read().decode(errors='replace')}"
    return line


def release(children: list[subprocess.Popen]) -> None:
    """Wait until every child has opened its store, then let them all go at once."""
    for child in children:
        assert read_line(child) == b"ready\n"
    for child in children:
        child.stdin.write(b"go\n")


def results(child: subprocess.Popen) -> list[dict]:
    out, err = child.communicate(timeout=CHILD_TIMEOUT)
    assert child.returncode == 0, err.decode(errors="replace")
    return [json.loads(line) for line in out.splitlines()]


def log_lines(data_dir: Path, session_id: str) -> list[dict]:
    """The session's log as written, segment by segment: the truth the index is derived from."""
    session_dir = data_dir / "segments" / session_id
    lines: list[dict] = []
    for base in segments.list_bases(session_dir):
        data = (session_dir / segments.segment_name(base)).read_bytes()
        assert data == b"" or data.endswith(b"\n")
        lines.extend(json.loads(line) for line in data.splitlines())
    return lines


def assert_contiguous_with(data_dir: Path, session_id: str, acked: list[dict]) -> None:
    """Seqs 1..N with no gap or repeat, each event_id once, every acknowledged event at its seq."""
    store = EventStore(data_dir)
    try:
        events = store.get_events_by_session(session_id, limit=10_000)
        last_seq = store.last_seq(session_id)
    finally:
        store.close()
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert last_seq == len(events)
    event_ids = [event["event_id"] for event in events]
    assert len(set(event_ids)) == len(event_ids)
    by_id = {event["event_id"]: event for event in events}
    for ack in acked:
        assert by_id[ack["event_id"]]["seq"] == ack["seq"]
    assert log_lines(data_dir, session_id) == events


@pytest.mark.slow
def test_processes_appending_to_one_session_get_contiguous_seqs(spawn, data_dir):
    EventStore(data_dir).close()
    writers, per_writer = 4, 40
    children = [spawn(APPENDER, data_dir, "shared", f"w{n}", per_writer) for n in range(writers)]
    release(children)
    acked = [ack for child in children for ack in results(child)]

    assert len(acked) == writers * per_writer
    assert sorted(ack["seq"] for ack in acked) == list(range(1, writers * per_writer + 1))
    assert_contiguous_with(data_dir, "shared", acked)


def test_threads_appending_to_one_session_get_contiguous_seqs(data_dir):
    stores = [EventStore(data_dir), EventStore(data_dir)]  # two stores in one process, as two workers
    threads_count, per_thread = 8, 30
    start = threading.Barrier(threads_count, timeout=30)
    acked: list[dict] = []
    failures: list[BaseException] = []
    guard = threading.Lock()

    def write(name: str, store: EventStore) -> None:
        try:
            start.wait()
            n = 0
            for call in range(per_thread):
                if n >= per_thread:
                    break
                size = min(BATCH_SIZES[call % len(BATCH_SIZES)], per_thread - n)
                events = [{"type": "user_message", "event_id": f"{name}-{n + k}", "payload": {"n": n + k}}
                          for k in range(size)]
                stored = store.append_many("shared", events)
                with guard:
                    acked.extend({"seq": event["seq"], "event_id": event["event_id"]} for event in stored)
                n += size
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    workers = [threading.Thread(target=write, args=(f"t{n}", stores[n % 2])) for n in range(threads_count)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=CHILD_TIMEOUT)
            assert not worker.is_alive()
    finally:
        for store in stores:
            store.close()

    assert failures == []
    assert sorted(ack["seq"] for ack in acked) == list(range(1, threads_count * per_thread + 1))
    assert_contiguous_with(data_dir, "shared", acked)


@pytest.mark.slow
def test_concurrent_resend_of_one_event_id_stores_it_once(spawn, data_dir):
    EventStore(data_dir).close()
    senders, distinct = 6, 10
    children = [spawn(RESENDER, data_dir, "dup", n, distinct) for n in range(senders)]
    release(children)
    answers = [results(child) for child in children]

    stored_by_id: dict[str, list[dict]] = {}
    for answer in answers:
        assert len(answer) == distinct
        for envelope in answer:
            stored_by_id.setdefault(envelope["event_id"], []).append(envelope)
    assert sorted(stored_by_id) == sorted(f"dup-{n}" for n in range(distinct))
    for event_id, envelopes in stored_by_id.items():
        assert all(envelope == envelopes[0] for envelope in envelopes), event_id
    assert sorted(envelopes[0]["seq"] for envelopes in stored_by_id.values()) == list(range(1, distinct + 1))
    acked = [{"seq": envelope["seq"], "event_id": envelope["event_id"]}
             for envelopes in stored_by_id.values() for envelope in envelopes]
    assert_contiguous_with(data_dir, "dup", acked)
    assert len(log_lines(data_dir, "dup")) == distinct


@pytest.mark.slow
def test_two_sessions_racing_for_a_new_run_exactly_one_wins(spawn, data_dir):
    EventStore(data_dir).close()
    rounds = 30
    sessions = ("sa", "sb")
    children = dict(zip(sessions, (spawn(RACER, data_dir, session_id) for session_id in sessions)))
    for child in children.values():
        assert read_line(child) == b"ready\n"

    winners: dict[str, str] = {}
    for n in range(rounds):
        run_id = f"race-{n}"
        order = sessions if n % 2 else sessions[::-1]
        for session_id in order:
            children[session_id].stdin.write(f"{run_id}\n".encode())
        answers = {session_id: json.loads(read_line(child)) for session_id, child in children.items()}
        won = [session_id for session_id, answer in answers.items() if answer["won"]]
        assert len(won) == 1, (run_id, answers)
        winner = won[0]
        loser = next(session_id for session_id in sessions if session_id != winner)
        assert answers[loser]["owner"] == winner
        winners[run_id] = winner
    for child in children.values():
        child.stdin.close()
        assert child.wait(timeout=CHILD_TIMEOUT) == 0

    store = EventStore(data_dir)
    try:
        for run_id, winner in winners.items():
            assert store.run_session(run_id) == winner
            assert [event["event_id"] for event in store.get_events_by_run(winner, run_id)] == [f"{winner}-{run_id}"]
        for session_id in sessions:
            won = [run_id for run_id, winner in winners.items() if winner == session_id]
            events = store.get_events_by_session(session_id, limit=1000)
            assert [event["run_id"] for event in events] == won
            assert [event["seq"] for event in events] == list(range(1, len(won) + 1))
            for lost in [run_id for run_id, winner in winners.items() if winner != session_id][:3]:
                with pytest.raises(RunSessionConflict):
                    store.append(session_id, {"type": "run_started", "run_id": lost})
    finally:
        store.close()
    for session_id in sessions:
        trace = b"".join(path.read_bytes() for path in (data_dir / "segments" / session_id).glob("*")
                         if path.is_file()) if (data_dir / "segments" / session_id).exists() else b""
        for run_id, winner in winners.items():
            if winner != session_id:
                assert f"{session_id}-{run_id}\"".encode() not in trace


# -- the process-wide lock descriptors ---------------------------------------------------------------


@pytest.mark.parametrize("lock", ["index_writer", "store_shared"])
def test_a_child_forked_while_the_parent_holds_a_lock_takes_its_own(data_dir, lock):
    """flock belongs to the open file description, which a fork shares: the child must open its own.

    The parent forks inside ``held()``; the child leaves that block (it must not release, or
    miscount, what only the parent holds), then takes the same lock for itself. The index
    writer lock must wait for the parent; the shared store lock must keep a reindex out.
    """
    store = EventStore(data_dir)
    store.append("s1", {"type": "user_message"})
    locks = store._locks
    ready, signal_ready = os.pipe()
    held = locks.index_writer() if lock == "index_writer" else locks.store(exclusive=False)
    with held:
        pid = os.fork()
        if pid != 0 and lock == "index_writer":
            # The child must be seen blocked in flock on the index lock, not holding it.
            _wait_until_blocked_in_flock(pid)
            assert select.select([ready], [], [], 0)[0] == [], "the child took a lock the parent holds"
    if pid == 0:  # the child, out of the parent's block; it leaves without running pytest's teardown
        try:
            wanted = locks.index_writer() if lock == "index_writer" else locks.store(exclusive=False)
            with wanted:
                os.write(signal_ready, b"1")
                time.sleep(1.0)
        finally:
            os._exit(0)
    try:
        assert select.select([ready], [], [], 10)[0] == [ready], "the child never got the lock"
        if lock == "store_shared":
            with pytest.raises(StoreBusy):
                store.reindex(wait_seconds=0.3)
    finally:
        _reap(pid, within=5)
    assert store.reindex(wait_seconds=2).events == 1
    store.close()


def _wait_until_blocked_in_flock(pid: int, within: float = 10.0) -> None:
    """Wait until /proc/locks lists ``pid`` as waiting for a lock (a ``->`` line)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "->" in fields and str(pid) in fields:
                return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never waited for a lock")


def _reap(pid: int, *, within: float) -> None:
    """Wait for a forked child; one still running after ``within`` seconds is killed."""
    deadline = time.monotonic() + within
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return
        time.sleep(0.02)


def test_the_shared_store_lock_is_held_while_any_thread_is_inside(data_dir):
    """The last of several appending threads to leave drops it; a reindex waits until then."""
    store = EventStore(data_dir)
    store.append("s1", {"type": "user_message"})
    first, second = store._locks.store(exclusive=False), store._locks.store(exclusive=False)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    with pytest.raises(StoreBusy):
        store.reindex(wait_seconds=0.2)
    second.__exit__(None, None, None)
    assert store.reindex(wait_seconds=2).events == 1
    store.close()
