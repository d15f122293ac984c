"""`eventsvc copy SRC DST`: files -> PostgreSQL -> files, byte-identical lines, resumable, refusing divergence."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eventsvc.errors import SeqConflict
from eventsvc.ops.copy import copy_store
from eventsvc.store import open_store

ROOT = Path(__file__).resolve().parent.parent


def segment_lines(data_dir: Path) -> dict[str, list[bytes]]:
    """Every session's log lines, in segment order, as the files backend wrote them."""
    sessions = {}
    for folder in sorted((data_dir / "segments").iterdir()):
        lines: list[bytes] = []
        for path in sorted(folder.glob("*.jsonl")):
            lines.extend(path.read_bytes().splitlines())
        sessions[folder.name] = lines
    return sessions


def eventsvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eventsvc.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.fixture
def original(tmp_path: Path) -> Path:
    data_dir = tmp_path / "original"
    store = open_store(data_dir, segment_bytes=2000)  # several segments per session
    try:
        for n in range(3):
            store.append_many(f"s{n}", [{"type": "run_started", "run_id": f"r{n}"},
                                        *({"type": "tool_call", "run_id": f"r{n}", "payload": {"k": k, "t": "é\u2028"}}
                                          for k in range(12)),
                                        {"type": "user_message", "payload": {"x": 1.5e-7, "big": 2**70}}])
            store.append(f"s{n}", {"type": "run_completed", "run_id": f"r{n}", "source": "agent"})
    finally:
        store.close()
    return data_dir


def test_files_to_postgres_to_files_round_trip_is_byte_identical(original, pg_url, tmp_path):
    there = eventsvc("copy", str(original), pg_url)
    assert there.returncode == 0, there.stderr
    assert "3 sessions, 45 events, 45 copied now; verified" in there.stdout
    back = tmp_path / "back"
    returned = eventsvc("copy", pg_url, str(back))
    assert returned.returncode == 0, returned.stderr
    assert segment_lines(back) == segment_lines(original)


def test_copy_again_is_idempotent_and_resumes(original, pg_url):
    source = open_store(original)
    target = open_store(pg_url)
    try:
        partial = open_store(pg_url)
        partial.append_many("s1", _inputs(source.get_events_by_session("s1", limit=5)))  # an interrupted copy
        partial.close()
        first = copy_store(source, target)
        assert (first.events, first.created, first.problems) == (45, 40, [])
        again = copy_store(source, target)
        assert (again.events, again.created, again.problems) == (45, 0, [])
    finally:
        source.close()
        target.close()


def test_copy_into_a_session_that_diverges_stops_with_a_seq_conflict(original, pg_url):
    source = open_store(original)
    target = open_store(pg_url)
    try:
        target.append("s0", {"type": "user_message", "payload": {"someone": "else"}})
        with pytest.raises(SeqConflict, match="session 's0' in the target: seq_conflict: expected seq 1"):
            copy_store(source, target)
        assert target.last_seq("s0") == 1
    finally:
        source.close()
        target.close()


def _inputs(envelopes):
    from eventsvc.ops.copy import as_input

    return [as_input(envelope) for envelope in envelopes]
