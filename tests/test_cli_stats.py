"""`eventsvc stats`, run as the installed script on data written by the service's own store."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from eventsvc import EventStore

EVENTSVC = Path(sys.executable).with_name("eventsvc")


def run_eventsvc(*args: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(EVENTSVC), *map(str, args)], capture_output=True, timeout=60)


def stats_json(data_dir: Path) -> dict:
    result = run_eventsvc("stats", "--data-dir", data_dir, "--format", "json")
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


@pytest.fixture
def appended(data_dir: Path) -> dict[str, list[dict]]:
    """Twelve sessions of different sizes: event counts and byte sizes rank them differently."""
    store = EventStore(data_dir, fsync=False, segment_bytes=2000)
    by_session: dict[str, list[dict]] = {}
    try:
        for n in range(12):
            session_id = f"session-{n:02d}"
            events = [store.append(session_id, {"type": "session_created", "payload": {}})]
            for m in range(n):
                events.append(store.append(session_id, {"type": "user_message", "payload": {"m": m}}))
            if n % 3 == 0:
                for run in (f"run-{n}-a", f"run-{n}-b"):
                    events.append(store.append(session_id, {"type": "run_created", "run_id": run, "payload": {}}))
                    events.append(store.append(session_id, {"type": "tool_call", "run_id": run, "payload": {}}))
            by_session[session_id] = events
        # Few events, many bytes.
        by_session["bulky"] = [store.append("bulky", {"type": "state_update", "payload": {"blob": "x" * 3000}})
                               for _ in range(2)]
    finally:
        store.close()
    return by_session


def expected_ranking(data_dir: Path, appended: dict[str, list[dict]], key: str) -> list[dict]:
    sessions = []
    for session_id, events in appended.items():
        files = list((data_dir / "segments" / session_id).glob("*.jsonl"))
        sessions.append({"session_id": session_id, "events": len(events),
                         "runs": len({e["run_id"] for e in events if e["run_id"]}),
                         "bytes": sum(path.stat().st_size for path in files), "segments": len(files)})
    return sorted(sessions, key=lambda s: (-s[key], s["session_id"]))[:10]


def test_counts_match_what_was_appended(data_dir, appended):
    stats = stats_json(data_dir)
    events = [event for session in appended.values() for event in session]
    files = list((data_dir / "segments").glob("*/*.jsonl"))
    assert stats["sessions"] == len(appended) == 13
    assert stats["events"] == len(events)
    assert stats["runs"] == len({e["run_id"] for e in events if e["run_id"]}) == 8
    assert stats["segments"] == len(files) > len(appended)
    assert stats["bytes"] == sum(path.stat().st_size for path in files)
    assert stats["event_types"] == dict(Counter(e["type"] for e in events))
    assert list(stats["event_types"].values()) == sorted(stats["event_types"].values(), reverse=True)
    assert stats["unreadable_lines"] == 0


def test_the_ten_largest_sessions_by_events_and_by_bytes(data_dir, appended):
    stats = stats_json(data_dir)
    assert stats["largest_by_events"] == expected_ranking(data_dir, appended, "events")
    assert stats["largest_by_bytes"] == expected_ranking(data_dir, appended, "bytes")
    assert stats["largest_by_bytes"][0]["session_id"] == "bulky"
    assert "bulky" not in [s["session_id"] for s in stats["largest_by_events"]]


def test_text_format_shows_the_same_figures(data_dir, appended):
    document = stats_json(data_dir)
    result = run_eventsvc("stats", "--data-dir", data_dir)
    assert result.returncode == 0 and result.stderr == b""
    text = result.stdout.decode()
    for name in ("sessions", "segments", "events", "runs", "bytes"):
        assert re.search(rf"^{name} +{document[name]}$", text, re.MULTILINE), name
    for name, count in document["event_types"].items():
        assert re.search(rf"^  {name} +{count}$", text, re.MULTILINE), name
    by_events = text.split("largest sessions by events:\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in by_events] == [s["session_id"] for s in document["largest_by_events"]]


def test_stats_reads_only_the_segments(data_dir, appended):
    before = stats_json(data_dir)
    for suffix in ("", "-wal", "-shm"):
        (data_dir / f"index.sqlite3{suffix}").unlink(missing_ok=True)
    assert stats_json(data_dir) == before
    assert not (data_dir / "index.sqlite3").exists()


def test_a_torn_last_line_is_counted_as_unreadable_not_as_an_event(data_dir, appended):
    before = stats_json(data_dir)
    active = sorted((data_dir / "segments" / "session-05").glob("*.jsonl"))[-1]
    with open(active, "ab") as file:
        file.write(b'{"type":"user_mes')
    after = stats_json(data_dir)
    assert after["events"] == before["events"]
    assert after["unreadable_lines"] == 1
    assert after["bytes"] == before["bytes"] + len(b'{"type":"user_mes')


def test_an_empty_data_folder_has_zero_of_everything(tmp_path):
    (tmp_path / "data" / "segments").mkdir(parents=True)
    stats = stats_json(tmp_path / "data")
    assert stats == {"sessions": 0, "segments": 0, "events": 0, "runs": 0, "bytes": 0, "unreadable_lines": 0,
                     "largest_by_events": [], "largest_by_bytes": [], "event_types": {}, "skipped": []}
