"""Property: audit calls a folder clean only when it is byte for byte one the store wrote (issue 12).

A real store writes two sessions (rolled, sealed segments), is snapshotted, then every active
segment is sealed (``seal``) and snapshotted again: both folders are ones the store wrote. Each
example applies one random damage to a copy (a byte flipped, bytes cut, inserted or appended, a
file removed, renamed, added, or replaced by a link, FIFO or folder) and audits it in-process.
One damage per example: two removals can leave an earlier state the store also wrote (a session
cut back to a sealed segment), which no audit of the folder alone can tell apart.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventsvc import EventStore
from eventsvc.ops.audit import ERROR, plan_audit, run_audit
from hostile import build_store

Snapshot = dict[str, tuple[str, bytes]]


def snapshot(folder: Path) -> Snapshot:
    found: Snapshot = {}
    for root, dirs, files in os.walk(folder):
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            key = os.path.relpath(path, folder)
            if os.path.islink(path):
                found[key] = ("link", os.fsencode(os.readlink(path)))
            elif os.path.isdir(path):
                found[key] = ("dir", b"")
            elif os.path.isfile(path):
                with open(path, "rb") as file:
                    found[key] = ("file", file.read())
            else:
                found[key] = ("other", b"")
    return found


def written_by_store(current: Snapshot, states: list[Snapshot]) -> bool:
    """Whether each session folder is as the store left it before or after sealing it (``seal``
    seals session by session, so any mix of the two is a folder the store wrote)."""
    sessions = {key.split(os.sep)[0] for state in states for key in state}
    if {key.split(os.sep)[0] for key in current} != sessions:
        return False
    return all(any(_part(current, session) == _part(state, session) for state in states) for session in sessions)


def _part(state: Snapshot, session: str) -> Snapshot:
    return {key: value for key, value in state.items() if key.split(os.sep)[0] == session}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Snapshot]]:
    store_dir = tmp_path_factory.mktemp("written") / "store"
    build_store(store_dir)
    before = snapshot(store_dir / "segments")
    store = EventStore(store_dir)
    try:
        for session_id in store.session_ids():
            store.seal_active(session_id)
    finally:
        store.close()
    return store_dir / "segments", [before, snapshot(store_dir / "segments")]


def files_of(segments_dir: Path) -> list[Path]:
    return sorted(path for path in segments_dir.rglob("*") if path.is_file())


DAMAGES = ("flip", "cut", "insert", "append", "remove", "rename", "add", "link", "fifo", "folder")
NAMES = st.sampled_from(["00000000000000000001.jsonl", "00000000000000000042.jsonl", "00000000000000000009.seal.json",
                         "00000000000000000001.jsonl.torn-7", "notes.txt", "00000000000000000009.seal.json.tmp",
                         "0000000000000000001.jsonl", "x.jsonl"])


def damage(segments_dir: Path, data: st.DataObject) -> None:
    files = files_of(segments_dir)
    target = data.draw(st.sampled_from(files), label="file")
    content = target.read_bytes()
    kind = data.draw(st.sampled_from(DAMAGES), label="damage")
    at = data.draw(st.integers(0, max(len(content) - 1, 0)), label="at")
    if kind == "flip" and content:
        flipped = content[at] ^ data.draw(st.integers(1, 255), label="xor")
        target.write_bytes(content[:at] + bytes([flipped]) + content[at + 1:])
    elif kind == "cut":
        end = data.draw(st.integers(at, len(content)), label="end")
        target.write_bytes(content[:at] + content[end:])
    elif kind == "insert":
        target.write_bytes(content[:at] + data.draw(st.binary(min_size=1, max_size=16), label="bytes") + content[at:])
    elif kind == "append":
        target.write_bytes(content + data.draw(st.binary(min_size=1, max_size=16), label="bytes"))
    elif kind == "remove":
        target.unlink()
    elif kind == "rename":
        target.rename(target.with_name(data.draw(NAMES, label="name")))
    elif kind == "add":
        folder = data.draw(st.sampled_from([segments_dir, *sorted(p for p in segments_dir.iterdir())]), label="in")
        name = data.draw(NAMES, label="name")
        if not (folder / name).exists():
            (folder / name).write_bytes(data.draw(st.binary(min_size=1, max_size=64), label="content"))
    elif kind == "link":
        target.unlink()
        target.symlink_to(data.draw(st.sampled_from([*files, Path("/dev/zero"), target.with_name("gone")])))
    elif kind == "fifo":
        target.unlink()
        os.mkfifo(target)
    elif kind == "folder":
        target.unlink()
        target.mkdir()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_audit_is_clean_only_for_a_folder_the_store_wrote(written: tuple[Path, list[Snapshot]],
                                                          tmp_path_factory: pytest.TempPathFactory,
                                                          data: st.DataObject) -> None:
    sealed, states = written
    work = tmp_path_factory.mktemp("damaged") / "data"
    shutil.copytree(sealed, work / "segments")
    damage(work / "segments", data)
    summary = run_audit(plan_audit([work]))
    identical = written_by_store(snapshot(work / "segments"), states)
    assert (summary.count(ERROR) == 0) == identical, dict(summary.findings)
