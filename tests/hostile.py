"""A hostile-folder corpus, built by the tests: a real store's folder, then one kind of damage each.

Every case damages a copy of the same small store (two sessions, sealed rolled segments, an
index) and may point links at a sentinel folder outside it, which no tool may change. Shared by
the CLI corpus test and the server-boot test.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eventsvc import EventStore
from eventsvc.store.files import segments

GOOD, HIT = "good", "hit"  # HIT is the session each case damages; GOOD stays healthy
LONG_LINE_BYTES = 48 * 1024 * 1024


def run_events(run_id: str) -> list[dict]:
    return [{"type": "user_message", "payload": {"text": "hello"}},
            {"type": "run_created", "run_id": run_id},
            {"type": "run_started", "run_id": run_id},
            {"type": "tool_call", "run_id": run_id, "payload": {"name": "search"}},
            {"type": "tool_result", "run_id": run_id, "payload": {"ok": True}},
            {"type": "assistant_message", "run_id": run_id, "payload": {"text": "done"}},
            {"type": "run_completed", "run_id": run_id},
            {"type": "user_message", "payload": {"text": "thanks"}},
            {"type": "assistant_message", "payload": {"text": "you are welcome"}}]


def build_store(data_dir: Path, session_ids: tuple[str, ...] = (GOOD, HIT)) -> None:
    """Sessions of 9 events each, 400-byte segments (so rolled and sealed ones), and an index."""
    store = EventStore(data_dir, segment_bytes=400, fsync=False)
    try:
        for session_id in session_ids:
            for event in run_events(f"{session_id}-run"):
                store.append(session_id, event)
    finally:
        store.close()


def first_segment(data_dir: Path, session_id: str = HIT) -> Path:
    folder = data_dir / "segments" / session_id
    return folder / segments.segment_name(segments.list_bases(folder)[0])


def last_segment(data_dir: Path, session_id: str = HIT) -> Path:
    folder = data_dir / "segments" / session_id
    return folder / segments.segment_name(segments.list_bases(folder)[-1])


def replace_with_link(path: Path, target: str | Path) -> None:
    path.unlink()
    path.symlink_to(target)


def make_socket(path: Path) -> None:
    """A UNIX socket file at ``path`` (bound in a short folder first: socket paths are short)."""
    with tempfile.TemporaryDirectory(prefix="s") as short:
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(os.path.join(short, "s"))
            os.rename(os.path.join(short, "s"), path)
        finally:
            sock.close()


def sql(index: Path, *statements: str) -> None:
    connection = sqlite3.connect(index)
    try:
        for statement in statements:
            connection.execute(statement)
        connection.commit()
    finally:
        connection.close()


@dataclass(frozen=True)
class Case:
    """One kind of damage and what each tool must answer: its exit code(s) and audit's finding code."""

    damage: Callable[..., None]  # (data folder, sentinel folder outside it, session to damage)
    audit_code: str
    exits: dict[str, tuple[int, ...]]
    export_args: tuple[str, ...] = ()
    # Whether a server still reads what it indexed of the session; False: 503, as for any session
    # folder holding a link or special file once the server looks at it (here: its index rebuilt).
    served: bool = True
    heavy: bool = False  # writes a long line: run with fewer copies
    whole_folder: bool = False  # damages the folder's own files (index, locks), not one session


READ_ONLY_OK = {"stats": (0,), "export": (0,)}
WRITERS_REFUSE = {"reindex": (2,), "seal": (2,)}


def _session_link(data: Path, outside: Path, session: str = HIT) -> None:
    elsewhere = outside / "session"
    shutil.copytree(data / "segments" / session, elsewhere)
    with open(elsewhere / segments.segment_name(segments.list_bases(elsewhere)[-1]), "ab") as file:
        file.write(b'{"partial')  # reindex used to cut this off out there, and write a .torn- file beside it
    shutil.rmtree(data / "segments" / session)
    (data / "segments" / session).symlink_to(elsewhere)


def _seal_tmp_link(data: Path, outside: Path, session: str = HIT) -> None:
    (outside / "victim.txt").write_text("must stay as it is\n")
    base = segments.list_bases(data / "segments" / session)[-1]
    (data / "segments" / session / f"{base:020d}.seal.json.tmp").symlink_to(outside / "victim.txt")


def _index_link(data: Path, outside: Path, session: str = HIT) -> None:
    build_store(outside / "other-store")
    replace_with_link(data / "index.sqlite3", outside / "other-store" / "index.sqlite3")


def _dangling_lock(data: Path, outside: Path, session: str = HIT) -> None:
    lock = data / "locks" / "store.lock"
    if os.path.lexists(lock):
        lock.unlink()
    lock.parent.mkdir(exist_ok=True)
    lock.symlink_to(outside / "created-by-a-tool")


def _segment_link(data: Path, outside: Path, session: str = HIT) -> None:
    shutil.copy(first_segment(data, session), outside / "segment.jsonl")
    replace_with_link(first_segment(data, session), outside / "segment.jsonl")


def _fifo_segment(data: Path, outside: Path, session: str = HIT) -> None:
    path = first_segment(data, session)
    path.unlink()
    os.mkfifo(path)


def _socket_segment(data: Path, outside: Path, session: str = HIT) -> None:
    path = last_segment(data, session)
    path.unlink()
    make_socket(path)


def _dev_zero_segment(data: Path, outside: Path, session: str = HIT) -> None:
    replace_with_link(last_segment(data, session), "/dev/zero")


def _dev_zero_seal(data: Path, outside: Path, session: str = HIT) -> None:
    base = segments.list_bases(data / "segments" / session)[0]
    replace_with_link(data / "segments" / session / f"{base:020d}.seal.json", "/dev/zero")


def _directory_segment(data: Path, outside: Path, session: str = HIT) -> None:
    path = last_segment(data, session)
    path.unlink()
    path.mkdir()


def _deep_line(data: Path, outside: Path, session: str = HIT) -> None:
    with open(last_segment(data, session), "ab") as file:
        file.write(b"[" * 100_000 + b"]" * 100_000 + b"\n")


def _deep_seal(data: Path, outside: Path, session: str = HIT) -> None:
    base = segments.list_bases(data / "segments" / session)[0]
    (data / "segments" / session / f"{base:020d}.seal.json").write_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n")


def _superscript_name(data: Path, outside: Path, session: str = HIT) -> None:
    shutil.copy(first_segment(data, session), data / "segments" / session / ("0" * 19 + "\u00b2.jsonl"))


def _arabic_indic_name(data: Path, outside: Path, session: str = HIT) -> None:
    name = "\u0660" * 19 + "\u0661.jsonl"  # "00000000000000000001" in Arabic-Indic digits
    shutil.copy(first_segment(data, session), data / "segments" / session / name)


def _overflow_name(data: Path, outside: Path, session: str = HIT) -> None:
    (data / "segments" / session / ("9" * 20 + ".jsonl")).write_bytes(first_segment(data, session).read_bytes())


def _not_utf8_name(data: Path, outside: Path, session: str = HIT) -> None:
    folder = os.fsencode(data / "segments" / session)
    with open(folder + b"/\xff\xfe.jsonl", "wb") as file:
        file.write(b"garbage\n")
    with open(folder + b"/\xff", "wb") as file:
        file.write(b"x")


def _forged_output_name(data: Path, outside: Path, session: str = HIT) -> None:
    name = "x\n\naudited 2 sessions, 3 segments, 18 events, 2 runs: 0 errors, 0 warnings, 0 information\n.jsonl"
    (data / "segments" / session / name).write_bytes(b"")


def _line_with(field_name: str, value: object) -> Callable[..., None]:
    import json

    def damage(data: Path, outside: Path, session: str = HIT) -> None:
        path = last_segment(data, session)
        lines = path.read_bytes().splitlines(keepends=True)
        envelope = json.loads(lines[-1])
        envelope[field_name] = value
        path.write_bytes(b"".join(lines[:-1]) + json.dumps(envelope, separators=(",", ":")).encode() + b"\n")

    return damage


def _trigger_in_index(data: Path, outside: Path, session: str = HIT) -> None:
    sql(data / "index.sqlite3", "CREATE TRIGGER wipe AFTER INSERT ON event BEGIN DELETE FROM event; END")


def _recursive_view(name: str) -> Callable[..., None]:
    def damage(data: Path, outside: Path, session: str = HIT) -> None:
        sql(data / "index.sqlite3", f"DROP TABLE {name}",
            f"CREATE VIEW {name} AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
            "SELECT i AS session_id, i AS seq, i AS last_seq, i AS segment, i AS end_offset FROM n")

    return damage


def _long_line(data: Path, outside: Path, session: str = HIT) -> None:
    with open(last_segment(data, session), "ab") as file:
        block = b"x" * (1 << 20)
        file.write(b'{"payload":"')
        for _ in range(LONG_LINE_BYTES >> 20):
            file.write(block)
        file.write(b'"}\n')


def _folder_link(name: str) -> Callable[..., None]:
    def damage(data: Path, outside: Path, session: str = HIT) -> None:
        shutil.move(data / name, outside / name)
        (data / name).symlink_to(outside / name)

    return damage


def _stray_entries(data: Path, outside: Path, session: str = HIT) -> None:
    (data / "segments" / session / "notes.txt").write_text("not part of the log\n")
    (data / "segments" / "a file").write_text("not a session\n")


CASES: dict[str, Case] = {
    "session folder is a link": Case(_session_link, "UNEXPECTED_ENTRY",
                                     {"stats": (1,), "export": (2,), **WRITERS_REFUSE}, served=False),
    "seal temp file is a link": Case(_seal_tmp_link, "UNEXPECTED_ENTRY", {**READ_ONLY_OK, **WRITERS_REFUSE},
                                     served=False),
    "index is a link": Case(_index_link, "UNEXPECTED_ENTRY", {**READ_ONLY_OK, **WRITERS_REFUSE}, whole_folder=True),
    "dangling lock link": Case(_dangling_lock, "UNEXPECTED_ENTRY", {**READ_ONLY_OK, **WRITERS_REFUSE},
                               whole_folder=True),
    "segment links outside": Case(_segment_link, "UNEXPECTED_ENTRY",
                                  {"stats": (1,), "export": (2,), **WRITERS_REFUSE}, served=False),
    "segment is a FIFO": Case(_fifo_segment, "UNEXPECTED_ENTRY",
                              {"stats": (1,), "export": (2,), **WRITERS_REFUSE}, served=False),
    "segment is a socket": Case(_socket_segment, "UNEXPECTED_ENTRY",
                                {"stats": (1,), "export": (2,), **WRITERS_REFUSE}, served=False),
    "segment links to /dev/zero": Case(_dev_zero_segment, "UNEXPECTED_ENTRY",
                                       {"stats": (1,), "export": (2,), **WRITERS_REFUSE}, served=False),
    "segment is a folder": Case(_directory_segment, "UNEXPECTED_ENTRY",
                                {"stats": (1,), "export": (2,), **WRITERS_REFUSE}, served=False),
    "seal links to /dev/zero": Case(_dev_zero_seal, "UNEXPECTED_ENTRY", {**READ_ONLY_OK, **WRITERS_REFUSE},
                                    served=False),
    "deeply nested line": Case(_deep_line, "INVALID_JSON",
                               {"stats": (0,), "export": (2,), "reindex": (1,), "seal": (2,)}),
    "deeply nested seal": Case(_deep_seal, "SEAL_MISMATCH", {**READ_ONLY_OK, "reindex": (0,), "seal": (0,)}),
    "superscript digit in a name": Case(_superscript_name, "SEGMENT_NAME_MISMATCH",
                                        {**READ_ONLY_OK, "reindex": (0,), "seal": (0,)}),
    "Arabic-Indic digits in a name": Case(_arabic_indic_name, "SEGMENT_NAME_MISMATCH",
                                          {**READ_ONLY_OK, "reindex": (0,), "seal": (0,)}),
    "name past the largest seq": Case(_overflow_name, "SEGMENT_NAME_MISMATCH",
                                      {**READ_ONLY_OK, "reindex": (0,), "seal": (0,)}),
    "name that is not UTF-8": Case(_not_utf8_name, "UNEXPECTED_ENTRY", {**READ_ONLY_OK, "reindex": (0,), "seal": (0,)}),
    "name that forges output": Case(_forged_output_name, "SEGMENT_NAME_MISMATCH",
                                    {**READ_ONLY_OK, "reindex": (0,), "seal": (0,)}),
    "type is a list": Case(_line_with("type", ["user_message"]), "INVALID_ENVELOPE",
                           {"stats": (0,), "export": (2,), "reindex": (1,), "seal": (2,)},
                           export_args=("--type", "user_message")),
    "session_id is a number": Case(_line_with("session_id", 7), "INVALID_ENVELOPE",
                                   {"stats": (0,), "export": (2,), "reindex": (1,), "seal": (2,)},
                                   export_args=("--format", "cloudevents")),
    "trigger in the index": Case(_trigger_in_index, "INDEX_UNUSABLE", {**READ_ONLY_OK, "reindex": (0,), "seal": (0,)},
                                 whole_folder=True),
    "recursive view named event": Case(_recursive_view("event"), "INDEX_UNUSABLE",
                                       {**READ_ONLY_OK, "reindex": (0,), "seal": (0,)}, whole_folder=True),
    "recursive view named session": Case(_recursive_view("session"), "INDEX_UNUSABLE",
                                         {**READ_ONLY_OK, "reindex": (0,), "seal": (0,)}, whole_folder=True),
    "48 MiB line": Case(_long_line, "LINE_TOO_LONG", {"stats": (0,), "export": (2,), "reindex": (1,), "seal": (2,)},
                        heavy=True),
    "segments folder is a link": Case(_folder_link("segments"), "UNEXPECTED_ENTRY",
                                      {"stats": (2,), "export": (2,), **WRITERS_REFUSE}, whole_folder=True),
    "locks folder is a link": Case(_folder_link("locks"), "UNEXPECTED_ENTRY", {**READ_ONLY_OK, **WRITERS_REFUSE},
                                   whole_folder=True),
    "stray entries": Case(_stray_entries, "UNEXPECTED_ENTRY", {**READ_ONLY_OK, "reindex": (0,), "seal": (0,)}),
}


def checksums(folder: Path) -> dict[str, tuple[str, str]]:
    """Every entry below ``folder`` (links not followed): its kind and its content's or target's digest."""
    found: dict[str, tuple[str, str]] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                found[path] = ("link", os.readlink(path))
            elif os.path.isfile(path):
                digest = hashlib.sha256()
                with open(path, "rb") as file:
                    for chunk in iter(lambda: file.read(1 << 20), b""):
                        digest.update(chunk)
                found[path] = ("file", digest.hexdigest())
            else:
                found[path] = ("other", "")
    return found
