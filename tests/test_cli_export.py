"""`eventsvc export`, run as the installed script on data written by the service's own store."""
from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eventsvc import EventStore, create_app
from eventsvc.schemas import ENVELOPE_KEYS

EVENTSVC = Path(sys.executable).with_name("eventsvc")


def run_eventsvc(*args: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(EVENTSVC), *map(str, args)], capture_output=True, timeout=60)


def export(data_dir: Path, *args: object) -> subprocess.CompletedProcess[bytes]:
    result = run_eventsvc("export", "--data-dir", data_dir, *args)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    return result


def lines_of(output: bytes) -> list[bytes]:
    assert output.endswith(b"\n") or output == b""
    return output.split(b"\n")[:-1]


def segment_files(data_dir: Path, session_id: str) -> list[Path]:
    return sorted((data_dir / "segments" / session_id).glob("*.jsonl"))


PAYLOADS = [
    {},
    {"text": 'comma, "quotes"\nand a newline', "unicode": "é ✓ 日本"},
    {"nested": {"list": [1, 2.5, -3e-07, True, False, None], "empty": {}}, "big": 12345678901234567890},
    {"tab\tkey": "\\backslash", "zero": 0},
]


@pytest.fixture
def appended(data_dir: Path) -> dict[str, list[dict]]:
    """Session s1 spans several sealed segments and holds two runs and session-level events; s2 is another."""
    store = EventStore(data_dir, fsync=False, segment_bytes=1500)
    try:
        s1 = [store.append("s1", {"type": "session_created", "payload": PAYLOADS[1]})]
        for run in ("r1", "r2"):
            s1.append(store.append("s1", {"type": "run_created", "run_id": run, "payload": {}}, default_source="worker"))
            for n in range(6):
                s1 += store.append_many("s1", [
                    {"type": "tool_call", "run_id": run, "payload": PAYLOADS[n % 4]},
                    {"type": "tool_result", "run_id": run, "payload": {"n": n}},
                ])
                s1.append(store.append("s1", {"type": "user_message", "payload": PAYLOADS[(n + 1) % 4]}))
            s1.append(store.append("s1", {"type": "run_completed", "run_id": run, "payload": {}}))
        s2 = [store.append("s2", {"type": "user_message", "payload": {"other": "session"}})]
    finally:
        store.close()
    assert len(segment_files(data_dir, "s1")) >= 4
    return {"s1": s1, "s2": s2}


def test_jsonl_export_is_the_stored_lines_byte_for_byte(data_dir, appended):
    output = export(data_dir, "--session", "s1").stdout
    assert output == b"".join(path.read_bytes() for path in segment_files(data_dir, "s1"))
    assert [json.loads(line) for line in lines_of(output)] == appended["s1"]


def test_jsonl_export_equals_the_http_read_of_the_session(data_dir, appended):
    lines = lines_of(export(data_dir, "--session", "s1").stdout)
    client = create_app({"DATA_DIR": str(data_dir)}).test_client()
    read, since_seq, has_more = 0, 0, True
    while has_more:
        response = client.get(f"/api/sessions/s1/events?since_seq={since_seq}&limit=7")
        assert response.status_code == 200
        body = response.get_json()
        raw = response.data
        spliced = raw[raw.index(b'"events":[') + len(b'"events":['):raw.rindex(b'],"next_since_seq":')]
        # Each event of the HTTP page is the exported line at the same position, byte for byte.
        assert spliced == b",".join(lines[read:read + len(body["events"])])
        assert [event["seq"] for event in body["events"]] == [json.loads(line)["seq"] for line in
                                                              lines[read:read + len(body["events"])]]
        read += len(body["events"])
        since_seq, has_more = body["next_since_seq"], body["has_more"]
    assert read == len(lines) == len(appended["s1"])


@pytest.mark.parametrize(("args", "keep"), [
    (("--run", "r1"), lambda e: e["run_id"] == "r1"),
    (("--run", "r2"), lambda e: e["run_id"] == "r2"),
    (("--type", "user_message"), lambda e: e["type"] == "user_message"),
    (("--type", "run_created", "--type", "run_completed"), lambda e: e["type"] in ("run_created", "run_completed")),
    (("--run", "r2", "--type", "tool_result", "--since-seq", "30"),
     lambda e: e["run_id"] == "r2" and e["type"] == "tool_result" and e["seq"] > 30),
])
def test_filters_select_exactly_the_matching_events(data_dir, appended, args, keep):
    expected = [event for event in appended["s1"] if keep(event)]
    lines = lines_of(export(data_dir, "--session", "s1", *args).stdout)
    assert [json.loads(line) for line in lines] == expected
    everything = lines_of(export(data_dir, "--session", "s1").stdout)
    assert set(lines) <= set(everything)


def test_since_seq_is_exclusive_across_segment_boundaries(data_dir, appended):
    bases = [int(path.stem) for path in segment_files(data_dir, "s1")]
    last = appended["s1"][-1]["seq"]
    around_each_boundary = {base + delta for base in bases[1:] for delta in (-2, -1, 0)}
    for since_seq in sorted({0, 1, *around_each_boundary, last - 1, last, last + 5}):
        lines = lines_of(export(data_dir, "--session", "s1", "--since-seq", since_seq).stdout)
        assert [json.loads(line)["seq"] for line in lines] == list(range(since_seq + 1, last + 1)), since_seq


def test_csv_has_a_header_and_round_trips_every_envelope(data_dir, appended):
    output = export(data_dir, "--session", "s1", "--format", "csv").stdout
    rows = list(csv.reader(io.StringIO(output.decode("utf-8"), newline="")))
    assert rows[0] == list(ENVELOPE_KEYS)
    assert len(rows) == len(appended["s1"]) + 1
    for row, stored in zip(rows[1:], appended["s1"]):
        cells = dict(zip(rows[0], row))
        assert cells["run_id"] == (stored["run_id"] or "")
        assert json.loads(cells["payload"]) == stored["payload"]
        rebuilt = {**cells, "seq": int(cells["seq"]), "run_id": cells["run_id"] or None,
                   "payload": json.loads(cells["payload"])}
        assert rebuilt == stored


def test_csv_filters_like_jsonl(data_dir, appended):
    output = export(data_dir, "--session", "s1", "--format", "csv", "--run", "r1", "--type", "tool_call").stdout
    rows = list(csv.DictReader(io.StringIO(output.decode("utf-8"), newline="")))
    expected = [e for e in appended["s1"] if e["run_id"] == "r1" and e["type"] == "tool_call"]
    assert [row["event_id"] for row in rows] == [e["event_id"] for e in expected]


def test_cloudevents_carry_every_envelope_field_as_the_contract_names_them(data_dir, appended):
    lines = lines_of(export(data_dir, "--session", "s1", "--format", "cloudevents").stdout)
    assert len(lines) == len(appended["s1"])
    for line, stored in zip(lines, appended["s1"]):
        event = json.loads(line)
        expected = {
            "specversion": "1.0",
            "id": stored["event_id"],
            "source": "eventsvc/s1",
            "eventsource": stored["source"],
            "type": stored["type"],
            "time": stored["timestamp"],
            "datacontenttype": "application/json",
            "data": stored["payload"],
            "sequence": f"{stored['seq']:020d}",
        }
        if stored["run_id"] is not None:
            expected["subject"] = stored["run_id"]
        assert event == expected
        extensions = set(event) - {"specversion", "id", "source", "type", "time", "subject",
                                   "datacontenttype", "data"}
        assert all(re.fullmatch(r"[a-z0-9]+", name) for name in extensions)
    sequences = [json.loads(line)["sequence"] for line in lines]
    assert sequences == sorted(sequences) and all(len(s) == 20 for s in sequences)
    assert {json.loads(line)["eventsource"] for line in lines} == {"api", "worker"}


def test_output_file_holds_what_stdout_would(data_dir, appended, tmp_path):
    for output_format in ("jsonl", "csv", "cloudevents"):
        target = tmp_path / f"out.{output_format}"
        target.write_bytes(b"an older export, to be replaced\n")
        to_file = export(data_dir, "--session", "s1", "--format", output_format, "--output", target)
        assert to_file.stdout == b""
        assert target.read_bytes() == export(data_dir, "--session", "s1", "--format", output_format).stdout
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("out")) == \
        ["out.cloudevents", "out.csv", "out.jsonl"]


def test_export_works_with_the_index_deleted_and_does_not_recreate_it(data_dir, appended):
    before = export(data_dir, "--session", "s1").stdout
    for suffix in ("", "-wal", "-shm"):
        (data_dir / f"index.sqlite3{suffix}").unlink(missing_ok=True)
    after = export(data_dir, "--session", "s1", "--run", "r2").stdout
    assert [json.loads(line) for line in lines_of(after)] == [e for e in appended["s1"] if e["run_id"] == "r2"]
    assert export(data_dir, "--session", "s1").stdout == before
    assert not (data_dir / "index.sqlite3").exists()


def test_a_torn_last_line_is_left_out_and_left_alone(data_dir, appended):
    before = export(data_dir, "--session", "s1").stdout
    active = segment_files(data_dir, "s1")[-1]
    torn = active.read_bytes() + b'{"type":"user_message","timestamp":"2026-'
    active.write_bytes(torn)
    for output_format in ("jsonl", "csv", "cloudevents"):
        export(data_dir, "--session", "s1", "--format", output_format)
    assert export(data_dir, "--session", "s1").stdout == before
    assert active.read_bytes() == torn


def test_a_damaged_line_stops_the_export_with_its_location(data_dir, appended, tmp_path):
    first = segment_files(data_dir, "s1")[0]
    lines = first.read_bytes().split(b"\n")
    lines[1] = b"not json" + b" " * (len(lines[1]) - len(b"not json"))
    first.write_bytes(b"\n".join(lines))
    target = tmp_path / "out.jsonl"
    result = run_eventsvc("export", "--data-dir", data_dir, "--session", "s1", "--output", target)
    assert result.returncode == 2
    assert result.stderr.count(b"\n") == 1 and b"Traceback" not in result.stderr
    assert f"{first}:2:".encode() in result.stderr
    assert not target.exists()
    assert list(tmp_path.glob(".out.jsonl*")) == []


@pytest.mark.parametrize(("session_id",), [("nope",), ("s3",), ("../segments/s1",), ("s1/../s2",)])
def test_unknown_session_exits_2_with_one_line(data_dir, appended, session_id, tmp_path):
    target = tmp_path / "out.jsonl"
    result = run_eventsvc("export", "--data-dir", data_dir, "--session", session_id, "--output", target)
    assert result.returncode == 2
    assert result.stdout == b""
    assert result.stderr.startswith(b"eventsvc: ") and result.stderr.count(b"\n") == 1
    assert b"Traceback" not in result.stderr and session_id.encode() in result.stderr
    assert not target.exists()


def test_session_is_required_and_format_is_checked(data_dir, appended):
    for args in (("export", "--data-dir", data_dir), ("export", "--data-dir", data_dir, "--session", "s1",
                                                       "--format", "xml")):
        result = run_eventsvc(*args)
        assert result.returncode == 2 and b"Traceback" not in result.stderr and result.stdout == b""
