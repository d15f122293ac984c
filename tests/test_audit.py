"""`eventsvc audit`: each kind of damage to a real data folder is found, by code and place.

Every test builds a data folder with the service's own EventStore (segment_bytes=1, so each
append rolls and seals the segment before it), damages it in one way, and runs the installed
`eventsvc` script as a subprocess. The folder ``build`` makes, by session and segment:

    s1  00000000000000000001.jsonl  seqs  1-5   user_message, r1 created, started, tool_call, tool_result
        00000000000000000006.jsonl  seqs  6-9   r1 verify_start, verify_pass, run_completed, user_message
        00000000000000000010.jsonl  seqs 10-14  r2 created, started, waiting_input, resumed, cancelled
        00000000000000000015.jsonl  seqs 15-22  (active, unsealed) user_message, r4 created, started,
                                                tool_policy_warn, user_message, message_delta,
                                                r4 run_completed, assistant_message
    s2  00000000000000000001.jsonl  seqs  1-4   (active) user_message, r3 created, started, completed
"""
from __future__ import annotations

import json
import os
import pty
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from eventsvc.store import EventStore
from eventsvc.store.files import seals

EVENTSVC = Path(sys.executable).with_name("eventsvc")


def ev(type_: str, run_id: str | None = None, **payload) -> dict:
    return {"type": type_, "run_id": run_id, "payload": payload}


S1_BATCHES = [
    [ev("user_message", text="hello"), ev("run_created", "r1"), ev("run_started", "r1"),
     ev("tool_call", "r1", name="search"), ev("tool_result", "r1", ok=True)],
    [ev("verify_start", "r1"), ev("verify_pass", "r1"), ev("run_completed", "r1"), ev("user_message", text="thanks")],
    [ev("run_created", "r2"), ev("run_started", "r2"), ev("run_waiting_input", "r2"), ev("run_resumed", "r2"),
     ev("run_cancelled", "r2")],
    [ev("user_message", text="again"), ev("run_created", "r4"), ev("run_started", "r4"),
     ev("tool_policy_warn", "r4", rule="net"), ev("user_message", text="one"), ev("message_delta", delta="two"),
     ev("run_completed", "r4"), ev("assistant_message", text="done")],
]
S2_BATCHES = [[ev("user_message", text="hi"), ev("run_created", "r3"), ev("run_started", "r3"),
               ev("run_completed", "r3")]]
ACTIVE = 15  # s1's active segment


def append(store: EventStore, session_id: str, batches: list[list[dict]]) -> None:
    """Append each batch with one append_many; event ids ``<session>-e<n>`` (n = the seq it gets)."""
    n = store.last_seq(session_id)
    for batch in batches:
        events = [{**event, "event_id": f"{session_id}-e{n + k}"} for k, event in enumerate(batch, 1)]
        n += len(batch)
        for event in events:
            if event["run_id"] is None:
                del event["run_id"]
        store.append_many(session_id, events)


def build(data_dir: Path) -> Path:
    store = EventStore(data_dir, segment_bytes=1, fsync=False)
    try:
        append(store, "s1", S1_BATCHES)
        append(store, "s2", S2_BATCHES)
    finally:
        store.close()
    return data_dir


@pytest.fixture
def folder(data_dir: Path) -> Path:
    return build(data_dir)


def segment(data_dir: Path, base: int, session_id: str = "s1") -> Path:
    return data_dir / "segments" / session_id / f"{base:020d}.jsonl"


def seal_file(data_dir: Path, base: int, session_id: str = "s1") -> Path:
    return seals.seal_path(data_dir / "segments" / session_id, base)


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def edit_line(path: Path, number: int, change) -> None:
    """Rewrite line ``number`` (1-based) through ``change(envelope)``, compact as the store writes it."""
    lines = read_lines(path)
    envelope = json.loads(lines[number - 1])
    change(envelope)
    lines[number - 1] = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
    write_lines(path, lines)


def audit(*args: str | Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "EVENTSVC_DATA_DIR"}
    return subprocess.run([str(EVENTSVC), "audit", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=120)


def audit_json(*args: str | Path) -> tuple[int, list[tuple[str, int, str]], dict]:
    """(exit code, findings as (path, line, code) without information, the whole document)."""
    done = audit(*args, "--format", "json")
    assert done.stderr == ""
    document = json.loads(done.stdout)
    found = [(f["path"], f["line"], f["code"]) for f in document["findings"] if f["severity"] != "info"]
    return done.returncode, found, document


def message(document: dict, code: str) -> str:
    """The message of the first finding with ``code``."""
    return next(f["message"] for f in document["findings"] if f["code"] == code)


def only(code: str, path: Path, line: int) -> list[tuple[str, int, str]]:
    return [(str(path), line, code)]


# -- a clean folder ---------------------------------------------------------------------------------

def test_a_clean_folder_audits_clean(folder):
    code, found, document = audit_json(folder)
    assert (code, found) == (0, [])
    summary = document["summary"]
    assert (summary["sessions"], summary["segments"], summary["events"], summary["runs"]) == (2, 5, 26, 4)
    assert summary["errors"] == summary["warnings"] == 0
    # The active segments are not sealed yet: information, not a finding that fails.
    assert [(f["path"], f["line"], f["code"]) for f in document["findings"]] == [
        (str(segment(folder, ACTIVE)), 1, "UNSEALED_TAIL"), (str(segment(folder, 1, "s2")), 1, "UNSEALED_TAIL")]


def test_text_output_is_one_line_per_finding_then_a_summary(folder):
    edit_line(segment(folder, ACTIVE), 3, lambda env: env.update(session_id="s2"))
    done = audit(folder)
    lines = done.stdout.splitlines()
    assert done.returncode == 1
    assert f"{segment(folder, ACTIVE)}:3: SESSION_MISMATCH: session_id 's2' is not the folder's 's1'" in lines
    assert all(re.fullmatch(r"\S+:\d+: [A-Z_]+: .+", line) for line in lines[:lines.index("")])
    assert "audited 2 sessions, 5 segments, 26 events, 4 runs" in done.stdout
    assert re.search(r"^  SESSION_MISMATCH +1  error$", done.stdout, re.MULTILINE)
    assert done.stderr == ""  # no progress bar: stderr is not a terminal


def test_the_audit_changes_nothing_it_reads(folder):
    before = {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}
    assert audit(folder, "--index").returncode == 0
    after = {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}
    assert after == before


def test_the_data_dir_option_is_the_default_path(folder):
    code, found, document = audit_json("--data-dir", folder)
    assert (code, found, document["summary"]["sessions"]) == (0, [], 2)


# -- errors: one damage, one finding ------------------------------------------------------------------

@pytest.mark.parametrize(("damage",), [
    (lambda line: line.replace(b"{", b"[", 1),),                           # an edited byte
    (lambda line: line[:-9],),                                             # cut short, newline kept
    (lambda line: line.replace(b'"payload":{', b'"payload":{"x":NaN,'),),  # NaN is not JSON
    (lambda line: line.replace(b'"one"', b'"\xffne"'),),                   # not UTF-8
    (lambda line: b"",),                                                   # an empty line
])
def test_a_line_that_is_not_json(folder, damage):
    path = segment(folder, ACTIVE)
    lines = read_lines(path)
    lines[4] = damage(lines[4])
    write_lines(path, lines)
    assert audit_json(folder)[:2] == (1, only("INVALID_JSON", path, 5))


@pytest.mark.parametrize(("line", "change"), [
    (8, lambda env: env.update(type="bogus_type")),
    (8, lambda env: env.update(payload=["not", "an", "object"])),
    (4, lambda env: env.update(run_id=None)),                     # tool_policy_warn is run-scoped
    (5, lambda env: env.update(event_id="has space")),
    (5, lambda env: env.update(run_id="bad/id")),
    (5, lambda env: env.update(timestamp="2026-02-30T10:00:00Z")),
    (5, lambda env: env.update(timestamp="2026-02-06T10:00:00")),  # no offset
    (5, lambda env: env.update(source="")),
    (5, lambda env: env.update(seq=True)),
    (5, lambda env: env.update(extra="key")),
    (5, lambda env: env.pop("source")),
])
def test_a_line_that_is_not_a_valid_envelope(folder, line, change):
    path = segment(folder, ACTIVE)
    edit_line(path, line, change)
    code, found, document = audit_json(folder)
    assert (code, found) == (1, only("INVALID_ENVELOPE", path, line))
    assert message(document, "INVALID_ENVELOPE")  # marshmallow's own words, e.g. "type: unknown event type ..."


def test_an_invalid_envelope_names_the_field_in_the_schemas_words(folder):
    path = segment(folder, ACTIVE)
    edit_line(path, 8, lambda env: env.update(type="bogus_type"))
    done = audit(folder)
    assert f"{path}:8: INVALID_ENVELOPE: type: unknown event type 'bogus_type'" in done.stdout


def test_a_session_id_that_is_not_its_folders(folder):
    path = segment(folder, ACTIVE)
    edit_line(path, 5, lambda env: env.update(session_id="s2"))
    assert audit_json(folder)[:2] == (1, only("SESSION_MISMATCH", path, 5))


def test_a_renamed_segment(folder):
    path = segment(folder, ACTIVE)
    renamed = segment(folder, ACTIVE + 1)
    path.rename(renamed)
    code, found, document = audit_json(folder)
    assert (code, found) == (1, only("SEGMENT_NAME_MISMATCH", renamed, 1))
    assert "named for seq 16, but its line 1 has seq 15" in message(document, "SEGMENT_NAME_MISMATCH")


def test_a_jsonl_file_without_a_segment_name(folder):
    stray = folder / "segments" / "s1" / "backup.jsonl"
    shutil.copy(segment(folder, ACTIVE), stray)
    assert audit_json(folder)[:2] == (1, only("SEGMENT_NAME_MISMATCH", stray, 0))


def test_a_dropped_line_is_a_gap_naming_the_missing_seqs(folder):
    path = segment(folder, ACTIVE)
    lines = read_lines(path)
    del lines[4:6]  # seqs 19 and 20
    write_lines(path, lines)
    code, found, document = audit_json(folder)
    assert (code, found) == (1, only("SEQ_GAP", path, 5))
    assert message(document, "SEQ_GAP") == "seqs 19-20 are missing before seq 21"


def test_a_deleted_middle_segment_is_a_gap_and_an_orphan_seal(folder):
    segment(folder, 6).unlink()
    code, found, document = audit_json(folder)
    assert code == 1
    assert sorted(found) == sorted([
        (str(seal_file(folder, 6)), 0, "SEAL_ORPHAN"),
        (str(seal_file(folder, 10)), 0, "SEAL_CHAIN_BROKEN"),  # its prev is seal 6's digest, not seal 1's
        (str(segment(folder, 10)), 1, "SEQ_GAP"),
        (str(segment(folder, 1)), 5, "RUN_NOT_TERMINATED")])  # r1's run_completed was in segment 6
    assert message(document, "SEQ_GAP") == "seqs 6-9 are missing before seq 10"
    assert "whose segment is missing" in message(document, "SEAL_CHAIN_BROKEN")


def test_a_duplicated_line_repeats_its_seq_and_event_id(folder):
    path = segment(folder, ACTIVE)
    lines = read_lines(path)
    lines.insert(5, lines[4])
    write_lines(path, lines)
    code, found, _ = audit_json(folder)
    assert code == 1
    assert sorted(found) == [(str(path), 6, "DUPLICATE_EVENT_ID"), (str(path), 6, "SEQ_REPEAT")]


def test_two_swapped_lines_are_out_of_order(folder):
    path = segment(folder, ACTIVE)
    lines = read_lines(path)
    lines[4], lines[5] = lines[5], lines[4]
    write_lines(path, lines)
    code, found, document = audit_json(folder)
    assert (code, found) == (1, only("SEQ_ORDER", path, 6))
    assert message(document, "SEQ_ORDER").startswith("seq 19 comes after seq 20")


def test_an_event_id_used_twice_in_a_session(folder):
    path = segment(folder, ACTIVE)
    first = json.loads(read_lines(path)[4])["event_id"]
    edit_line(path, 6, lambda env: env.update(event_id=first))
    code, found, document = audit_json(folder)
    assert (code, found) == (1, only("DUPLICATE_EVENT_ID", path, 6))
    assert "by seq 19" in message(document, "DUPLICATE_EVENT_ID")


def test_a_run_used_in_two_sessions(folder):
    path = segment(folder, 1, "s2")
    for number in (2, 3, 4):
        edit_line(path, number, lambda env: env.update(run_id="r1"))  # r1 belongs to s1
    code, found, document = audit_json(folder)
    assert (code, found) == (1, only("RUN_IN_TWO_SESSIONS", path, 2))
    assert message(document, "RUN_IN_TWO_SESSIONS") == "run 'r1' is also used in session 's1'"


def test_a_torn_last_line_names_its_byte_offset(folder):
    path = segment(folder, ACTIVE)
    data = path.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[:last_start + 30])
    code, found, document = audit_json(folder)
    assert (code, found) == (1, only("TORN_WRITE", path, 8))
    assert f"at byte {last_start}: 30 bytes with no newline" in message(document, "TORN_WRITE")


def test_a_torn_line_that_recovery_kept_aside_is_information(folder):
    path = segment(folder, ACTIVE)
    data = path.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[:last_start + 30])
    EventStore(folder).close()  # recovery cuts the torn line off and keeps it beside the segment
    code, found, document = audit_json(folder)
    assert (code, found) == (0, [])
    kept = [f for f in document["findings"] if f["code"] == "TORN_KEPT"]
    assert [(f["path"], f["line"]) for f in kept] == [(f"{path}.torn-{last_start}", 0)]


def test_an_edited_byte_in_a_sealed_segment(folder):
    path = segment(folder, 6)
    path.write_bytes(path.read_bytes().replace(b'"thanks"', b'"thankS"'))
    code, found, document = audit_json(folder)
    assert (code, found) == (1, only("SEAL_MISMATCH", path, 0))
    assert "sha256" in message(document, "SEAL_MISMATCH")


def test_lines_appended_to_a_rolled_segment(folder):
    path = segment(folder, 10)
    with open(path, "ab") as file:
        file.write(read_lines(segment(folder, ACTIVE))[0] + b"\n")
    code, found, _ = audit_json(folder)
    assert code == 1
    assert (str(path), 0, "SEAL_MISMATCH") in found


def test_a_changed_seal_breaks_its_match_and_the_chain(folder):
    seal = json.loads(seal_file(folder, 6).read_text())
    seal["sha256"] = "0" * 64
    seal_file(folder, 6).write_text(json.dumps(seal, indent=2) + "\n")
    code, found, _ = audit_json(folder)
    assert code == 1
    assert sorted(found) == sorted([(str(segment(folder, 6)), 0, "SEAL_MISMATCH"),
                                    (str(seal_file(folder, 10)), 0, "SEAL_CHAIN_BROKEN")])


def test_a_tampered_segment_sealed_again_is_caught_by_the_chain(folder):
    """Re-sealing an edited segment makes its own seal match; the next seal still names the old one."""
    path = segment(folder, 6)
    path.write_bytes(path.read_bytes().replace(b'"thanks"', b'"tHanks"'))
    seals.write_seal(path.parent, 6, path.stat().st_size)
    assert audit_json(folder)[:2] == (1, only("SEAL_CHAIN_BROKEN", seal_file(folder, 10), 0))


def test_a_seal_that_is_not_a_seal(folder):
    seal_file(folder, 1).write_text("{not json")
    code, found, _ = audit_json(folder)
    assert code == 1
    assert sorted(found) == sorted([(str(seal_file(folder, 1)), 0, "SEAL_MISMATCH"),
                                    (str(seal_file(folder, 6)), 0, "SEAL_CHAIN_BROKEN")])


def test_a_rolled_segment_without_its_seal(folder):
    seal_file(folder, 10).unlink()
    code, found, _ = audit_json(folder)
    assert code == 1
    assert found == only("SEAL_MISSING", segment(folder, 10), 0)


def test_a_missing_seal_in_the_middle_also_breaks_the_chain(folder):
    seal_file(folder, 6).unlink()
    code, found, _ = audit_json(folder)
    assert code == 1
    assert sorted(found) == sorted([(str(segment(folder, 6)), 0, "SEAL_MISSING"),
                                    (str(seal_file(folder, 10)), 0, "SEAL_CHAIN_BROKEN")])


def test_a_sealed_prefix_of_the_active_segment_is_checked(folder):
    """`eventsvc seal` seals what the active segment holds; appends after it are the unsealed tail."""
    assert subprocess.run([str(EVENTSVC), "seal", "--data-dir", str(folder), "--session", "s1"],
                          capture_output=True, timeout=60).returncode == 0
    store = EventStore(folder, segment_bytes=1 << 20, fsync=False)
    store.append("s1", {"type": "user_message", "payload": {"text": "after the seal"}})
    store.close()
    code, found, document = audit_json(folder)
    assert (code, found) == (0, [])
    tail = [f for f in document["findings"] if f["code"] == "UNSEALED_TAIL" and "s1" in f["path"]]
    assert [(f["path"], f["line"]) for f in tail] == [(str(segment(folder, ACTIVE)), 9)]

    path = segment(folder, ACTIVE)
    path.write_bytes(path.read_bytes().replace(b'"again"', b'"AGAIN"'))
    assert audit_json(folder)[:2] == (1, only("SEAL_MISMATCH", path, 0))


# -- warnings: the run lifecycle -------------------------------------------------------------------------

WARNINGS = [
    ("LIFECYCLE_BEFORE_CREATED", [ev("user_message"), ev("run_started", "r"), ev("run_completed", "r")], 2),
    ("LIFECYCLE_BEFORE_CREATED", [ev("tool_call", "r"), ev("run_created", "r"), ev("run_started", "r"),
                                  ev("run_failed", "r")], 1),
    ("LIFECYCLE_TRANSITION", [ev("run_created", "r"), ev("run_completed", "r")], 2),
    ("LIFECYCLE_TRANSITION", [ev("run_created", "r"), ev("run_started", "r"), ev("run_resumed", "r"),
                              ev("run_completed", "r")], 3),
    ("LIFECYCLE_TRANSITION", [ev("run_created", "r"), ev("run_started", "r"), ev("run_waiting_input", "r"),
                              ev("run_completed", "r")], 4),
    ("LIFECYCLE_AFTER_TERMINAL", [ev("run_created", "r"), ev("run_started", "r"), ev("run_completed", "r"),
                                  ev("tool_call", "r")], 4),
    ("VERIFY_UNFINISHED", [ev("run_created", "r"), ev("run_started", "r"), ev("verify_start", "r"),
                           ev("run_completed", "r")], 3),
    ("RUN_NOT_TERMINATED", [ev("run_created", "r"), ev("run_started", "r"), ev("run_waiting_input", "r")], 3),
]


@pytest.mark.parametrize(("code", "events", "line"), WARNINGS)
def test_a_lifecycle_warning_passes_unless_strict(data_dir, code, events, line):
    store = EventStore(data_dir, fsync=False)
    append(store, "w1", [events])
    store.close()
    path = segment(data_dir, 1, "w1")
    assert audit_json(data_dir)[:2] == (0, only(code, path, line))
    assert audit_json(data_dir, "--strict")[:2] == (1, only(code, path, line))


@pytest.mark.parametrize(("final",), [("run_completed",), ("run_failed",), ("run_cancelled",)])
def test_every_path_through_the_lifecycle_is_clean(data_dir, final):
    store = EventStore(data_dir, fsync=False)
    append(store, "w1", [[ev("run_created", "r"), ev("run_started", "r"), ev("run_waiting_input", "r"),
                          ev("run_resumed", "r"), ev("run_waiting_input", "r"), ev("run_resumed", "r"),
                          ev("verify_start", "r"), ev("verify_fail", "r"), ev(final, "r")],
                         [ev("run_created", "c"), ev("run_cancelled", "c")]])
    store.close()
    assert audit_json(data_dir, "--strict")[:2] == (0, [])


# -- PATH: a session folder, a segment file ---------------------------------------------------------------

def test_a_session_folder_as_path(folder):
    edit_line(segment(folder, ACTIVE), 5, lambda env: env.update(session_id="s2"))
    code, found, document = audit_json(folder / "segments" / "s1")
    assert (code, found) == (1, only("SESSION_MISMATCH", segment(folder, ACTIVE), 5))
    assert (document["summary"]["sessions"], document["summary"]["segments"]) == (1, 4)
    assert audit_json(folder / "segments" / "s2")[:2] == (0, [])


def test_a_single_segment_file_as_path(folder):
    path = segment(folder, 6)
    lines = read_lines(path)
    lines[1] = lines[1][:20]
    write_lines(path, lines)
    code, found, document = audit_json(path)
    assert code == 1
    assert sorted(found) == sorted([(str(path), 2, "INVALID_JSON"), (str(path), 0, "SEAL_MISMATCH")])
    assert (document["summary"]["segments"], document["summary"]["events"]) == (1, 4)


def test_a_clean_segment_file_audits_alone_without_lifecycle_noise(folder):
    """Runs continue across segments: one file of several is not checked for lifecycle warnings."""
    assert audit_json(segment(folder, 6), "--strict")[:2] == (0, [])  # r1 was created in segment 1


def test_segment_files_of_one_session_audit_as_one_sequence(folder):
    code, found, _ = audit_json(segment(folder, 1), segment(folder, 10))
    assert (code, found) == (1, only("SEQ_GAP", segment(folder, 10), 1))


def test_a_path_that_does_not_exist_is_an_error_on_one_line(tmp_path):
    done = audit(tmp_path / "nowhere")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "nowhere" in done.stderr and "Traceback" not in done.stderr


def test_a_path_that_is_no_log_is_an_error_on_one_line(folder):
    done = audit(seal_file(folder, 1))
    assert (done.returncode, done.stderr.count("\n")) == (2, 1)
    assert "not a data folder, a session folder or a .jsonl segment file" in done.stderr


def test_a_folder_that_holds_no_log_is_an_error_on_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    done = audit(tmp_path / "empty")
    assert (done.returncode, done.stderr.count("\n")) == (2, 1)
    assert "not a data folder" in done.stderr


def test_a_misnamed_file_given_alone_is_read_with_its_own_seqs(folder):
    stray = folder / "segments" / "s1" / "backup.jsonl"
    lines = read_lines(segment(folder, 10))
    lines[0] = b"{torn"
    write_lines(stray, lines)
    code, found, _ = audit_json(stray)
    assert code == 1
    assert sorted(found) == sorted([(str(stray), 0, "SEGMENT_NAME_MISMATCH"), (str(stray), 1, "INVALID_JSON")])


def test_the_progress_bar_goes_to_stderr_when_it_is_a_terminal(folder):
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run([str(EVENTSVC), "audit", str(folder)], stdout=subprocess.PIPE, stderr=terminal,
                              timeout=120)
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)
    assert done.returncode == 0
    assert b"audit" in shown and b"100%" in shown
    assert b"audited 2 sessions" in done.stdout and b"100%" not in done.stdout


# -- the index -------------------------------------------------------------------------------------------

def index_db(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(data_dir / "index.sqlite3", isolation_level=None)


def test_the_index_of_a_clean_folder_matches(folder):
    assert audit_json(folder, "--index")[:2] == (0, [])


def test_a_deleted_index_row_is_missing(folder):
    with index_db(folder) as db:
        db.execute("DELETE FROM event WHERE session_id = 's1' AND seq = 19")
    code, found, document = audit_json(folder, "--index")
    assert (code, found) == (1, only("INDEX_MISSING_ROW", segment(folder, ACTIVE), 5))
    assert message(document, "INDEX_MISSING_ROW") == "seq 19 has no row in the index"
    assert audit_json(folder)[:2] == (0, [])  # without --index the index is not read


def test_an_index_row_with_a_wrong_offset(folder):
    with index_db(folder) as db:
        db.execute('UPDATE event SET "offset" = "offset" + 1 WHERE session_id = \'s1\' AND seq = 16')
    code, found, document = audit_json(folder, "--index")
    assert (code, found) == (1, only("INDEX_WRONG_BYTES", segment(folder, ACTIVE), 2))
    assert "offset" in message(document, "INDEX_WRONG_BYTES")


def test_an_index_row_with_no_line_behind_it(folder):
    with index_db(folder) as db:
        row = db.execute("SELECT * FROM event WHERE session_id = 's2' AND seq = 4").fetchone()
        db.execute("INSERT INTO event VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (row[0], 5, row[2], row[3], "s2-extra", row[5], row[6], row[7] + 1000, row[8]))
    code, found, document = audit_json(folder, "--index")
    assert (code, found) == (1, only("INDEX_EXTRA_ROW", folder / "index.sqlite3", 0))
    assert "session 's2': rows for seq 5" in message(document, "INDEX_EXTRA_ROW")


def test_an_index_session_with_no_folder(folder):
    shutil.rmtree(folder / "segments" / "s2")
    code, found, _ = audit_json(folder, "--index")
    assert (code, found) == (1, only("INDEX_EXTRA_ROW", folder / "index.sqlite3", 0))


def test_the_index_check_without_an_index_is_an_error_on_one_line(folder):
    (folder / "index.sqlite3").unlink()
    done = audit(folder, "--index")
    assert (done.returncode, done.stderr.count("\n")) == (2, 1)
    assert "index.sqlite3" in done.stderr
