"""Every CLI tool on a hostile data folder: no escapes, no hangs, no crashes, no false "clean".

Each case of the corpus (tests/hostile.py) damages a copy of a real store's folder; every tool
runs on it as a subprocess, and the test asserts its exit code (and audit's finding code), no
traceback, a sentinel folder outside unchanged, the read-only tools' folder unchanged, a bounded
peak memory (the child's rusage) and completion within a safety timeout (a hang is the failure).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from eventsvc import EventStore
from eventsvc.errors import StorageError
from hostile import CASES, GOOD, HIT, build_store, checksums

EVENTSVC = Path(sys.executable).with_name("eventsvc")
TOOLS = ("audit", "stats", "export", "reindex", "seal")
WRITERS = ("reindex", "seal")
PEAK_MB = 110  # a 48 MiB line held whole (and split) would pass this; a bounded reader stays far below
TIMEOUT = 120.0


@dataclass
class Ran:
    returncode: int
    stdout: bytes
    stderr: bytes
    peak_mb: float


# ru_maxrss keeps the peak across exec, so a child forked from this (large) test process would
# report this process's size: a small launcher spawns the tool and reports the tool's own peak.
LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def run_tool(args: list[str], timeout: float = TIMEOUT) -> Ran:
    """Run ``eventsvc ARGS``; its peak memory comes from wait4's rusage, a hang past ``timeout`` fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report"
        process = subprocess.Popen([sys.executable, "-S", "-c", LAUNCHER, str(report), str(EVENTSVC), *args],
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"eventsvc {' '.join(args)} did not finish within {timeout} s")
        returncode, peak_kib = map(int, report.read_text().split())
        out.seek(0)
        err.seek(0)
        return Ran(returncode, out.read(), err.read(), peak_kib / 1024)


def tool_args(tool: str, data: Path, export_args: tuple[str, ...] = ()) -> list[str]:
    return {"audit": ["audit", "--index", "--format", "json", str(data)],
            "stats": ["stats", "--data-dir", str(data)],
            "export": ["export", "--data-dir", str(data), "--session", HIT, *export_args],
            "reindex": ["reindex", "--data-dir", str(data)],
            "seal": ["seal", "--data-dir", str(data)]}[tool]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pristine") / "data"
    build_store(folder)
    return folder


def damaged_copy(pristine: Path, where: Path, case_name: str) -> tuple[Path, Path]:
    """A copy of the store, damaged by the case, and the case's sentinel folder outside it."""
    data, outside = where / "data", where / "outside"
    shutil.copytree(pristine, data, symlinks=True)
    outside.mkdir()
    (outside / "sentinel.txt").write_text("nothing here may change\n")
    CASES[case_name].damage(data, outside)
    return data, outside


@pytest.mark.parametrize("case_name", list(CASES))
def test_every_tool_survives_a_hostile_folder(case_name: str, pristine: Path, tmp_path: Path) -> None:
    case = CASES[case_name]
    readers, readers_outside = damaged_copy(pristine, tmp_path / "readers", case_name)
    copies = {tool: damaged_copy(pristine, tmp_path / tool, case_name) for tool in WRITERS}
    outsides = [readers_outside, *(outside for _, outside in copies.values())]
    before_outside = [checksums(outside) for outside in outsides]
    before_readers = checksums(readers)

    def run(tool: str) -> Ran:
        data = copies[tool][0] if tool in WRITERS else readers
        return run_tool(tool_args(tool, data, case.export_args))

    with ThreadPoolExecutor(max_workers=2 if case.heavy else len(TOOLS)) as pool:
        results = dict(zip(TOOLS, pool.map(run, TOOLS)))

    assert [checksums(outside) for outside in outsides] == before_outside, "a tool changed a file outside"
    assert checksums(readers) == before_readers, "a read-only tool wrote to the folder"
    for tool, ran in results.items():
        shown = f"{tool}: exit {ran.returncode}\n{ran.stderr.decode(errors='replace')[-2000:]}"
        assert b"Traceback" not in ran.stderr, shown
        assert ran.peak_mb < PEAK_MB, f"{tool} peaked at {ran.peak_mb:.0f} MB"
        if tool == "audit":
            assert ran.returncode == 1, shown
            codes = {finding["code"] for finding in json.loads(ran.stdout)["findings"]}
            assert case.audit_code in codes, (codes, shown)
        else:
            assert ran.returncode in case.exits[tool], shown
        if ran.returncode == 2:
            assert len(ran.stderr.decode(errors="replace").strip().splitlines()) == 1, shown
    if results["reindex"].returncode == 0:
        store = EventStore(copies["reindex"][0])
        try:  # the rebuilt index answers for the healthy session, whatever the old index held
            assert len(store.read_page(GOOD, limit=100).lines) == 9
        finally:
            store.close()


def test_audit_text_output_escapes_names_that_would_forge_lines(pristine: Path, tmp_path: Path) -> None:
    data, _ = damaged_copy(pristine, tmp_path, "name that forges output")
    ran = run_tool(["audit", str(data)])
    lines = ran.stdout.decode().splitlines()
    assert ran.returncode == 1
    summaries = [line for line in lines if line.startswith("audited ")]
    assert len(summaries) == 1 and summaries[0].startswith("audited 2 sessions, ") \
        and " segments, 18 events, " in summaries[0], lines
    assert any("\\n\\naudited 2 sessions" in line for line in lines)


def test_audit_text_output_escapes_names_that_are_not_utf8(pristine: Path, tmp_path: Path) -> None:
    data, _ = damaged_copy(pristine, tmp_path, "name that is not UTF-8")
    for output_format in ("text", "json"):
        ran = run_tool(["audit", "--format", output_format, str(data)])
        assert ran.returncode == 1 and b"Traceback" not in ran.stderr, ran.stderr
        assert b"\\udcff" in ran.stdout or b"\\\\udcff" in ran.stdout


def test_a_session_folder_named_segments_is_audited_as_a_session(pristine: Path, tmp_path: Path) -> None:
    received = tmp_path / "recv" / "segments"  # "segments" is a valid session id
    shutil.copytree(pristine / "segments" / HIT, received)
    with open(received / sorted(p.name for p in received.glob("*.jsonl"))[-1], "ab") as file:
        file.write(b"garbage\n")
    ran = run_tool(["audit", "--format", "json", str(received)])
    report = json.loads(ran.stdout)
    assert ran.returncode == 1
    assert report["summary"]["sessions"] == 1
    assert "INVALID_JSON" in report["summary"]["findings"]


def test_a_clean_folder_is_clean_and_counts_no_unexpected_entries(pristine: Path) -> None:
    ran = run_tool(["audit", "--index", "--format", "json", str(pristine)])
    report = json.loads(ran.stdout)
    assert ran.returncode == 0, report
    assert report["summary"]["unexpected_entries"] == 0
    assert report["summary"]["errors"] == 0


def test_a_server_boots_on_the_corpus_and_answers_503_only_for_what_it_cannot_read(tmp_path: Path, serve) -> None:
    """Every session-level case in one folder, each in its own session, plus a trigger in the index:
    the server boots, answers for the healthy session, and 503 for a session whose files it refuses."""
    session_cases = {f"case-{number:02d}": name for number, name in enumerate(CASES)
                     if not CASES[name].whole_folder and not CASES[name].heavy}
    data = tmp_path / "data"
    build_store(data, (GOOD, *session_cases))
    for session_id, name in session_cases.items():
        outside = tmp_path / "outside" / session_id
        outside.mkdir(parents=True)
        CASES[name].damage(data, outside, session_id)
    CASES["trigger in the index"].damage(data, tmp_path)
    before = checksums(tmp_path / "outside")
    server = serve(data)
    assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
    good = requests.get(f"{server.url}/api/sessions/{GOOD}/events", params={"limit": 100}, timeout=10)
    assert good.status_code == 200 and [e["seq"] for e in good.json()["events"]] == list(range(1, 10))
    for session_id, name in session_cases.items():
        answer = requests.get(f"{server.url}/api/sessions/{session_id}/events", timeout=10)
        assert answer.status_code == (200 if CASES[name].served else 503), (name, answer.text)
    appended = requests.post(f"{server.url}/api/sessions/{GOOD}/events", json={"type": "user_message"}, timeout=10)
    assert appended.status_code == 201 and appended.json()["seq"] == 10
    assert checksums(tmp_path / "outside") == before


@pytest.mark.parametrize("case_name", ["segments folder is a link", "locks folder is a link"])
def test_the_store_refuses_a_folder_whose_own_folders_are_links(case_name: str, pristine: Path, tmp_path: Path):
    data, outside = damaged_copy(pristine, tmp_path, case_name)
    before = checksums(outside)
    with pytest.raises(StorageError, match="not a folder: this data folder is refused"):
        EventStore(data)
    assert checksums(outside) == before
