"""Recovery at open: the log is the truth, the index is caught up with it, repaired or rebuilt.

Every test damages real files the way a crash (or an operator) would, then reopens the
store on the same data dir and checks what a reader and the next writer see.
"""
from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eventsvc import EventStore, create_app
from eventsvc.errors import RunNotFound, RunSessionConflict, StorageError, StorageFull
from eventsvc.ops.audit import plan_audit, run_audit
from eventsvc.store.files import segments

INDEX_FILES = ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm")


@pytest.fixture
def open_store(data_dir: Path) -> Iterator[Callable[..., EventStore]]:
    """Open (and at teardown close) stores on the test's data dir; each call is a fresh open."""
    opened: list[EventStore] = []

    def _open(**options) -> EventStore:
        store = EventStore(data_dir, **options)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


def segment_path(data_dir: Path, session_id: str, base: int = 1) -> Path:
    return data_dir / "segments" / session_id / segments.segment_name(base)


def message(n: int, **fields) -> dict:
    return {"type": "user_message", "payload": {"n": n}, **fields}


def hand_line(session_id: str, seq: int, event_id: str, *, run_id: str | None = None,
              type: str = "user_message", payload: dict | None = None) -> tuple[dict, bytes]:
    """A valid stored envelope and its log line, written the way the store writes them."""
    envelope = {"type": type, "timestamp": "2024-05-01T12:00:00Z", "session_id": session_id,
                "run_id": run_id, "seq": seq, "source": "hand", "event_id": event_id,
                "payload": payload if payload is not None else {"by": "hand"}}
    return envelope, json.dumps(envelope, separators=(",", ":")).encode() + b"\n"


def line_ends(path: Path) -> list[int]:
    """Byte offsets just past each line of a segment."""
    data = path.read_bytes()
    ends, cursor = [], 0
    while (newline := data.find(b"\n", cursor)) >= 0:
        cursor = newline + 1
        ends.append(cursor)
    return ends


def all_events(store: EventStore, session_id: str) -> list[dict]:
    return store.get_events_by_session(session_id, limit=10_000)


def seqs(events: list[dict]) -> list[int]:
    return [event["seq"] for event in events]


# -- torn last line -------------------------------------------------------------------------

TORN_TAILS = [
    ("half_a_line", b'{"type":"user_message","timestamp":"2024-05-01T12:00:00Z","session_id":"s1","run_id":null,"se'),
    ("whole_object_without_newline",
     b'{"type":"user_message","timestamp":"2024-05-01T12:00:00Z","session_id":"s1","run_id":null,"seq":6,'
     b'"source":"api","event_id":"e6","payload":{}}'),
    ("one_byte", b"{"),
    ("zeros_after_a_lost_write", b"\x00" * 300),
]


@pytest.mark.parametrize(("case", "tail"), TORN_TAILS, ids=[case for case, _ in TORN_TAILS])
def test_torn_last_line_is_cut_and_kept(open_store, data_dir, case, tail):
    store = open_store()
    written = [store.append("s1", message(n)) for n in range(5)]
    store.close()
    segment = segment_path(data_dir, "s1")
    intact = segment.read_bytes()
    with open(segment, "ab") as file:
        file.write(tail)

    store = open_store()

    assert segment.read_bytes() == intact
    aside = segment.with_name(f"{segment.name}.torn-{len(intact)}")
    assert aside.read_bytes() == tail
    assert all_events(store, "s1") == written
    assert store.last_seq("s1") == 5
    following = store.append("s1", message(6))
    assert following["seq"] == 6
    data = segment.read_bytes()
    assert data.startswith(intact) and data.endswith(b"\n") and data.count(b"\n") == 6
    assert seqs(all_events(store, "s1")) == [1, 2, 3, 4, 5, 6]


def test_torn_tail_appearing_while_open_is_cut_before_the_next_append(open_store, data_dir):
    store = open_store()
    for n in range(3):
        store.append("s1", message(n))
    segment = segment_path(data_dir, "s1")
    intact = segment.read_bytes()
    with open(segment, "ab") as file:  # another process died in the middle of its write
        file.write(b'{"type":"user_mess')

    stored = store.append("s1", message(3))

    assert stored["seq"] == 4
    assert segment.with_name(f"{segment.name}.torn-{len(intact)}").read_bytes() == b'{"type":"user_mess'
    assert segment.read_bytes().startswith(intact)
    assert seqs(all_events(store, "s1")) == [1, 2, 3, 4]
    assert json.loads(segment.read_bytes().splitlines()[-1]) == stored


def test_a_resend_of_a_line_another_process_wrote_but_never_indexed_is_not_stored_twice(open_store, data_dir):
    """Another writer died between its segment write and its index commit; its client re-sends."""
    store = open_store()
    for n in range(3):
        store.append("s1", message(n))
    envelope, line = hand_line("s1", 4, "e-orphan", run_id="r-orphan", payload={"n": 3})
    with open(segment_path(data_dir, "s1"), "ab") as file:
        file.write(line)

    result = store.append_one("s1", {"type": "user_message", "run_id": "r-orphan", "event_id": "e-orphan",
                                     "source": "hand", "payload": {"n": 3}})

    assert result.created == 0
    assert result.events == [envelope]
    assert seqs(all_events(store, "s1")) == [1, 2, 3, 4]
    assert store.append("s1", message(4, run_id="r-orphan"))["seq"] == 5
    with pytest.raises(RunSessionConflict):
        store.append("s2", message(5, run_id="r-orphan"))


def test_a_second_tear_at_the_same_offset_keeps_both_torn_tails(open_store, data_dir):
    """Each crash's torn bytes stay available for inspection; a later tear must not overwrite them."""
    store = open_store()
    for n in range(2):
        store.append("s1", message(n))
    store.close()
    segment = segment_path(data_dir, "s1")
    end = segment.stat().st_size
    for tail in (b'{"first":"tear', b'{"second":"tear'):
        with open(segment, "ab") as file:
            file.write(tail)
        open_store().close()
        assert segment.stat().st_size == end

    kept = sorted(path.read_bytes() for path in segment.parent.glob(f"{segment.name}.torn-*"))
    assert kept == [b'{"first":"tear', b'{"second":"tear']


# -- log ahead of the index ------------------------------------------------------------------

def test_complete_lines_missing_from_the_index_are_indexed_at_reopen(open_store, data_dir):
    """The state a crash between the segment write and the index commit leaves behind."""
    store = open_store()
    for n in range(3):
        store.append("s1", message(n))
    in_run = [store.append("s1", message(n, run_id="r1")) for n in range(3, 6)]
    written = all_events(store, "s1")
    store.close()
    ends = line_ends(segment_path(data_dir, "s1"))
    with sqlite3.connect(data_dir / "index.sqlite3") as db:
        db.execute("DELETE FROM event WHERE session_id = 's1' AND seq > 3")
        db.execute("DELETE FROM run WHERE run_id = 'r1'")
        db.execute("UPDATE session SET last_seq = 3, end_offset = ? WHERE session_id = 's1'", (ends[2],))
    db.close()

    store = open_store()

    assert store.last_seq("s1") == 6
    assert all_events(store, "s1") == written
    assert store.get_events_by_run("s1", "r1") == in_run
    assert store.run_session("r1") == "s1"
    assert store.append("s1", message(6))["seq"] == 7
    with pytest.raises(RunSessionConflict):
        store.append("s2", message(7, run_id="r1"))


def test_valid_lines_written_by_hand_are_indexed_at_reopen(open_store, data_dir):
    store = open_store()
    written = [store.append("s1", message(n)) for n in range(3)]
    store.close()
    by_hand = [hand_line("s1", 4, "hand-4"), hand_line("s1", 5, "hand-5", run_id="r-hand", type="run_started")]
    with open(segment_path(data_dir, "s1"), "ab") as file:
        for _, line in by_hand:
            file.write(line)
    fresh_session = segment_path(data_dir, "s-new")
    fresh_session.parent.mkdir()
    fresh_session.write_bytes(hand_line("s-new", 1, "new-1")[1] + hand_line("s-new", 2, "new-2")[1])

    store = open_store()

    assert all_events(store, "s1") == written + [envelope for envelope, _ in by_hand]
    assert store.get_events_by_run("s1", "r-hand") == [by_hand[1][0]]
    assert store.read_run_page("r-hand").seqs == [5]
    assert seqs(all_events(store, "s-new")) == [1, 2]
    assert store.append("s1", message(9))["seq"] == 6
    assert store.append("s-new", message(9))["seq"] == 3
    # The hand-written event_id is now known: a re-send is answered from the log, not stored again.
    assert store.append("s1", {"type": "user_message", "event_id": "hand-4", "source": "hand",
                               "payload": {"by": "hand"}}) == by_hand[0][0]
    assert store.last_seq("s1") == 6


# -- a missing or corrupt index -----------------------------------------------------------------

def build_history(store: EventStore) -> tuple[list[str], list[str]]:
    """Three sessions over several segments, with runs that start mid-segment."""
    sessions, runs = ["alpha", "beta", "gamma"], []
    for n in range(45):
        session_id = sessions[n % 3]
        run_id = f"run-{session_id}-{n // 15}" if n % 5 else None
        if run_id and run_id not in runs:
            runs.append(run_id)
        if n % 7 == 0:
            store.append_many(session_id, [message(n, run_id=run_id), message(n, run_id=run_id, source="batch")])
        else:
            store.append(session_id, message(n, run_id=run_id))
    return sessions, runs


def snapshot(store: EventStore, sessions: list[str], runs: list[str]) -> dict:
    view: dict = {}
    for session_id in sessions:
        view[session_id] = (store.last_seq(session_id), all_events(store, session_id),
                            store.get_events_by_session(session_id, since_seq=4, limit=3))
    for run_id in runs:
        owner = store.run_session(run_id)
        page = store.read_run_page(run_id, since_seq=2, limit=4)
        view[run_id] = (owner, store.get_events_by_run(owner, run_id, limit=10_000),
                        store.get_events_by_run(owner, run_id, since_seq=6, limit=2), page.seqs, page.lines)
    return view


def delete_index(data_dir: Path) -> None:
    for name in INDEX_FILES:
        (data_dir / name).unlink(missing_ok=True)


GARBAGE = bytes(range(256)) * 32


def garble_index(data_dir: Path) -> None:
    delete_index(data_dir)
    (data_dir / "index.sqlite3").write_bytes(GARBAGE)


def garble_index_after_its_header(data_dir: Path) -> None:
    """A real SQLite header followed by garbage pages."""
    path = data_dir / "index.sqlite3"
    header = path.read_bytes()[:100]
    delete_index(data_dir)
    path.write_bytes(header + GARBAGE)


def stamp_foreign_schema_version(data_dir: Path) -> None:
    """An index some other program (or a future version) wrote: not ours to read."""
    with sqlite3.connect(data_dir / "index.sqlite3") as db:
        db.execute("PRAGMA user_version = 99")
    db.close()


@pytest.mark.parametrize(("damage",), [(delete_index,), (garble_index,), (garble_index_after_its_header,),
                                       (stamp_foreign_schema_version,)],
                         ids=["deleted", "garbage", "garbage_after_header", "foreign_schema_version"])
def test_missing_or_corrupt_index_is_rebuilt_with_identical_reads(open_store, data_dir, damage):
    store = open_store(segment_bytes=700)
    sessions, runs = build_history(store)
    before = snapshot(store, sessions, runs)
    assert len(list((data_dir / "segments" / "alpha").glob("*.jsonl"))) > 2
    store.close()
    damage(data_dir)

    store = open_store(segment_bytes=700)

    assert snapshot(store, sessions, runs) == before
    foreign_run = next(run_id for run_id in runs if before[run_id][0] != "beta")
    with pytest.raises(RunSessionConflict):
        store.append("beta", message(99, run_id=foreign_run))
    last = before["alpha"][0]
    assert store.append("alpha", message(100))["seq"] == last + 1
    first = before["alpha"][1][0]
    assert store.append("alpha", {key: first[key] for key in ("type", "run_id", "source", "event_id", "payload")}) == first
    assert store.last_seq("alpha") == last + 1


@pytest.mark.parametrize(("damage",), [(garble_index,), (garble_index_after_its_header,)],
                         ids=["garbage", "garbage_after_header"])
def test_corrupt_index_is_moved_aside(open_store, data_dir, damage):
    store = open_store()
    store.append("s1", message(1))
    store.close()
    damage(data_dir)
    corrupt = (data_dir / "index.sqlite3").read_bytes()

    store = open_store()

    aside = list(data_dir.glob("index.sqlite3.corrupt-*"))
    assert [path.read_bytes() for path in aside] == [corrupt]
    assert seqs(all_events(store, "s1")) == [1]


def test_an_index_from_an_older_version_is_moved_aside_as_such_and_rebuilt(open_store, data_dir, caplog):
    store = open_store()
    store.append("s1", message(1, run_id="r1"))
    store.close()
    with sqlite3.connect(data_dir / "index.sqlite3") as db:
        db.execute("PRAGMA user_version = 2")  # summaries, before runs had their own numbers
    db.close()

    store = open_store()

    assert [path.name.split(".")[-1].split("-")[0] for path in data_dir.glob("index.sqlite3.v2-*")] == ["v2"]
    assert not list(data_dir.glob("index.sqlite3.corrupt-*"))
    assert "from an older eventsvc" in caplog.text and "unusable" not in caplog.text
    assert seqs(all_events(store, "s1")) == [1]
    assert store.get_run("r1")["event_count"] == 1


# -- index ahead of the log ---------------------------------------------------------------------

def test_index_ahead_of_the_log_drops_the_lost_rows(open_store, data_dir):
    store = open_store()
    kept = [store.append("s1", message(n, run_id="r-kept" if n == 2 else None)) for n in range(7)]
    lost = [store.append("s1", message(n, run_id="r-lost")) for n in range(7, 10)]
    store.close()
    segment = segment_path(data_dir, "s1")
    os.truncate(segment, line_ends(segment)[6])

    store = open_store()

    assert store.last_seq("s1") == 7
    assert all_events(store, "s1") == kept
    assert store.run_session("r-lost") is None
    with pytest.raises(RunNotFound):
        store.read_run_page("r-lost")
    assert store.get_events_by_run("s1", "r-kept") == [kept[2]]
    again = store.append("s1", {key: lost[0][key] for key in ("type", "run_id", "event_id", "payload", "source")})
    assert again["seq"] == 8 and again["event_id"] == lost[0]["event_id"]
    assert store.run_session("r-lost") == "s1"
    assert seqs(all_events(store, "s1")) == list(range(1, 9))


def test_a_repair_keeps_the_sessions_and_runs_places_in_the_listings(open_store, data_dir):
    """Dropping rows the log lost appends nothing: the session does not become the newest, and its
    runs are re-ordered by the events they kept, within the numbers they held."""
    store = open_store()
    store.append("s1", message(0, run_id="r-early"))
    store.append("s1", message(1, run_id="r-late"))
    store.append("s1", message(2, run_id="r-early"))  # r-early is s1's newest run
    store.append("s2", message(3, run_id="r-other"))  # s2 the newest session
    store.close()
    segment = segment_path(data_dir, "s1")
    os.truncate(segment, line_ends(segment)[1])  # r-early's last event is lost

    store = open_store()

    assert store.get_run("r-early")["last_seq"] == 1
    assert [s["session_id"] for s in store.list_sessions().items] == ["s2", "s1"]
    assert [r["run_id"] for r in store.list_runs().items] == ["r-other", "r-late", "r-early"]
    assert [r["run_id"] for r in store.list_runs(session_id="s1").items] == ["r-late", "r-early"]
    findings = []
    run_audit(plan_audit([data_dir]), check_index=True, on_finding=findings.append)
    assert not [f for f in findings if f.code.startswith("INDEX_")], findings  # the numbers still hold
    store.append("s1", message(4, run_id="r-early"))  # an append still moves both to the top
    assert [s["session_id"] for s in store.list_sessions().items] == ["s1", "s2"]
    assert [r["run_id"] for r in store.list_runs().items] == ["r-early", "r-other", "r-late"]


def test_log_cut_inside_a_line_drops_the_rows_and_keeps_the_partial_line(open_store, data_dir):
    store = open_store()
    kept = [store.append("s1", message(n)) for n in range(4)]
    store.append("s1", message(4))
    store.close()
    segment = segment_path(data_dir, "s1")
    ends = line_ends(segment)
    partial = segment.read_bytes()[ends[3]:ends[3] + 20]
    os.truncate(segment, ends[3] + 20)

    store = open_store()

    assert all_events(store, "s1") == kept
    assert segment.stat().st_size == ends[3]
    assert segment.with_name(f"{segment.name}.torn-{ends[3]}").read_bytes() == partial
    assert store.append("s1", message(5))["seq"] == 5


def test_index_ahead_of_a_whole_lost_segment(open_store, data_dir):
    store = open_store(segment_bytes=1)  # one event per segment
    kept = [store.append("s1", message(n)) for n in range(3)]
    store.append("s1", message(3))
    store.close()
    segment_path(data_dir, "s1", 4).unlink()

    store = open_store(segment_bytes=1)

    assert all_events(store, "s1") == kept
    assert store.append("s1", message(4))["seq"] == 4
    assert segment_path(data_dir, "s1", 4).exists()


# -- a crash during a roll -------------------------------------------------------------------------

@pytest.mark.parametrize(("left_behind",), [(b"",), (b'{"type":"user_mes',)], ids=["empty", "torn_only"])
def test_rolled_segment_left_by_a_crash_is_handled(open_store, data_dir, left_behind):
    store = open_store(segment_bytes=1)  # one event per segment: the next append rolls
    written = [store.append("s1", message(n)) for n in range(5)]
    store.close()
    assert segments.list_bases(data_dir / "segments" / "s1") == [1, 2, 3, 4, 5]
    rolled = segment_path(data_dir, "s1", 6)
    rolled.write_bytes(left_behind)  # the roll to seq 6 was created, then the process died

    store = open_store(segment_bytes=1)

    assert all_events(store, "s1") == written
    assert store.append("s1", message(5))["seq"] == 6
    assert rolled.read_bytes().count(b"\n") == 1
    assert json.loads(rolled.read_bytes())["seq"] == 6
    assert seqs(all_events(store, "s1")) == list(range(1, 7))
    assert store.append("s1", message(6))["seq"] == 7
    store.close()
    reopened = open_store(segment_bytes=1)
    assert seqs(all_events(reopened, "s1")) == list(range(1, 8))


def test_empty_first_segment_of_a_new_session_is_handled(open_store, data_dir):
    store = open_store()
    store.close()
    segment = segment_path(data_dir, "s1")
    segment.parent.mkdir(parents=True)
    segment.write_bytes(b"")

    store = open_store()

    assert store.last_seq("s1") == 0
    assert store.append("s1", message(0))["seq"] == 1
    assert seqs(all_events(store, "s1")) == [1]


# -- a line that cannot be indexed --------------------------------------------------------------------

def wrong_seq(session_id: str, seq: int, first: dict) -> bytes:
    return hand_line(session_id, seq + 5, "bad-seq")[1]


def not_json(session_id: str, seq: int, first: dict) -> bytes:
    return b"this is not an envelope\n"


def other_session(session_id: str, seq: int, first: dict) -> bytes:
    return hand_line("someone-else", seq, "bad-session")[1]


def repeated_event_id(session_id: str, seq: int, first: dict) -> bytes:
    return hand_line(session_id, seq, first["event_id"])[1]


def missing_key(session_id: str, seq: int, first: dict) -> bytes:
    envelope = hand_line(session_id, seq, "bad-keys")[0]
    del envelope["payload"]
    return json.dumps(envelope).encode() + b"\n"


@pytest.mark.parametrize(("bad_line",), [(wrong_seq,), (not_json,), (other_session,), (repeated_event_id,),
                                         (missing_key,)],
                         ids=["wrong_seq", "not_json", "other_session", "repeated_event_id", "missing_key"])
def test_unindexable_line_is_kept_and_its_session_refuses_appends(open_store, data_dir, bad_line):
    store = open_store()
    written = [store.append("s1", message(n)) for n in range(3)]
    other = store.append("s2", message(0))
    store.close()
    good_envelope, good = hand_line("s1", 4, "good-4")
    segment = segment_path(data_dir, "s1")
    with open(segment, "ab") as file:
        file.write(good + bad_line("s1", 5, written[0]))
    damaged = segment.read_bytes()

    store = open_store()

    assert segment.read_bytes() == damaged
    assert all_events(store, "s1") == written + [good_envelope]
    with pytest.raises(StorageError) as refused:
        store.append("s1", message(9))
    assert not isinstance(refused.value, StorageFull)
    assert refused.value.code == "storage_unavailable"
    assert segment.read_bytes() == damaged
    assert store.last_seq("s1") == 4
    assert store.append("s2", message(1))["seq"] == other["seq"] + 1

    client = create_app({"DATA_DIR": str(data_dir)}).test_client()
    response = client.post("/api/sessions/s1/events", json=message(10))
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "storage_unavailable"
    assert client.post("/api/sessions/s2/events", json=message(2)).status_code == 201
    assert segment.read_bytes() == damaged
    assert list(segment.parent.glob("*.torn-*")) == []


def test_session_takes_appends_again_once_the_bad_line_is_removed(open_store, data_dir):
    """The refusal lasts as long as the damage: an open store (a running worker) needs no restart."""
    store = open_store()
    store.append("s1", message(0))
    segment = segment_path(data_dir, "s1")
    intact = segment.read_bytes()
    with open(segment, "ab") as file:
        file.write(hand_line("s1", 9, "bad-seq")[1])
    with pytest.raises(StorageError):
        store.append("s1", message(1))

    segment.write_bytes(intact)  # the operator cuts the bad line off

    assert store.append("s1", message(2))["seq"] == 2
    assert seqs(all_events(store, "s1")) == [1, 2]
