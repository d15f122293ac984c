"""What the offline tools say, tried as a new user would (issue 11 items 7, 11, 13, 14).

CSV cells a spreadsheet would run are neutralised; an unknown session or run is an error, an
unknown event type a warning; and long work shows progress counted in bytes, on a terminal only.
"""
from __future__ import annotations

import csv
import io
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from eventsvc import EventStore
from eventsvc.store.files import segments

EVENTSVC = Path(sys.executable).with_name("eventsvc")
FORMULAS = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "=cmd|' /C calc'!A0"]


def run(*args: object, stderr_tty: bool = False) -> tuple[int, bytes, bytes]:
    """``eventsvc ARGS`` with stdout piped; stderr a pseudo-terminal when asked (read as it is written)."""
    if not stderr_tty:
        done = subprocess.run([str(EVENTSVC), *map(str, args)], capture_output=True, timeout=120)
        return done.returncode, done.stdout, done.stderr
    controller, terminal = pty.openpty()
    shown = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal side is closed and everything was read
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        done = subprocess.run([str(EVENTSVC), *map(str, args)], stdout=subprocess.PIPE, stderr=terminal,
                              timeout=120)
    finally:
        os.close(terminal)
        reader.join(timeout=30)
        os.close(controller)
    return done.returncode, done.stdout, bytes(shown)


@pytest.fixture
def filled(data_dir: Path) -> Path:
    store = EventStore(data_dir, segment_bytes=2000)
    try:
        for number, source in enumerate([*FORMULAS, "api"]):
            store.append("s1", {"type": "user_message", "source": source, "payload": {"n": number}})
        store.append("s1", {"type": "run_created", "run_id": "r1"})
        for _ in range(30):
            store.append("s2", {"type": "user_message", "payload": {"text": "x" * 200}})
    finally:
        store.close()
    return data_dir


def log_bytes(data_dir: Path, *session_ids: str) -> int:
    root = data_dir / "segments"
    return sum(segments.file_size(root / s / segments.segment_name(b))
               for s in session_ids or [p.name for p in root.iterdir()] for b in segments.list_bases(root / s))


def test_csv_cells_a_spreadsheet_would_take_for_formulas_start_with_a_quote(filled):
    code, out, _ = run("export", "--data-dir", filled, "--session", "s1", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out.decode("utf-8"), newline="")))
    assert code == 0
    assert [row["source"] for row in rows[:len(FORMULAS) + 1]] == ["'" + text for text in FORMULAS] + ["api"]
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for cell in row.values())


def test_export_of_an_unknown_run_exits_2_and_says_so(filled, tmp_path):
    target = tmp_path / "out.jsonl"
    code, out, err = run("export", "--data-dir", filled, "--session", "s1", "--run", "no-such-run",
                         "--output", target)
    assert (code, err.count(b"\n")) == (2, 1)
    assert b"run 'no-such-run' not found in session 's1'" in err
    assert not target.exists()


def test_export_of_a_known_run_before_since_seq_is_not_unknown(filled):
    code, out, err = run("export", "--data-dir", filled, "--session", "s1", "--run", "r1", "--since-seq", "100")
    assert (code, out, err) == (0, b"", b"")


def test_export_of_an_unknown_session_exits_2_and_says_so(filled):
    code, out, err = run("export", "--data-dir", filled, "--session", "nobody")
    assert (code, out, err.count(b"\n")) == (2, b"", 1)
    assert b"session 'nobody' not found" in err


def test_export_with_an_unknown_type_warns_on_stderr(filled):
    code, out, err = run("export", "--data-dir", filled, "--session", "s1", "--type", "no_such_type",
                         "--type", "user_message")
    assert code == 0
    assert err == b"eventsvc: warning: --type 'no_such_type' is not a known event type: no event will match it\n"
    assert out.count(b"\n") == len(FORMULAS) + 1


def test_seal_of_an_unknown_session_exits_2_and_seals_nothing(filled):
    before = sorted(p.name for p in (filled / "segments" / "s1").iterdir())
    code, out, err = run("seal", "--data-dir", filled, "--session", "s1", "--session", "nobody")
    assert (code, err.count(b"\n")) == (2, 1)
    assert b"no such session" in err and b"'nobody'" in err
    assert sorted(p.name for p in (filled / "segments" / "s1").iterdir()) == before


@pytest.mark.parametrize(("command", "label"), [
    (("reindex",), b"reindex"),
    (("audit",), b"audit"),
    (("stats",), b"stats"),
    (("export", "--session", "s2"), b"export"),
])
def test_long_work_shows_progress_in_bytes_on_a_terminal(filled, command, label):
    total = log_bytes(filled, "s2") if command[0] == "export" else log_bytes(filled)
    args = (command[0], "--data-dir", filled, *command[1:]) if command[0] != "audit" else ("audit", filled)
    code, out, shown = run(*args, stderr_tty=True)
    assert code == 0, shown
    assert label + b" (bytes)" in shown and f"{total}/{total}".encode() in shown and b"100%" in shown
    assert b"(bytes)" not in out


@pytest.mark.parametrize("command", [("audit", "--format", "json"), ("stats", "--format", "json")])
def test_no_progress_beside_json_output_even_on_a_terminal(filled, command):
    args = (*command, filled) if command[0] == "audit" else (*command, "--data-dir", filled)
    code, out, shown = run(*args, stderr_tty=True)
    assert code == 0
    assert shown == b""


@pytest.mark.parametrize("command", [("reindex",), ("audit",), ("stats",), ("export", "--session", "s2")])
def test_no_progress_when_stderr_is_piped(filled, command):
    args = (command[0], "--data-dir", filled, *command[1:]) if command[0] != "audit" else ("audit", filled)
    code, _, err = run(*args)
    assert code == 0
    assert b"(bytes)" not in err and b"%" not in err
