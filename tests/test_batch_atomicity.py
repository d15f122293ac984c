"""append_many is all or none, also when the process dies in the middle of writing the batch."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eventsvc import EventStore
from eventsvc.errors import StorageError, StorageFull
from eventsvc.store.files import batch_marks, segments
from eventsvc.store.files.index import Index


class Crash(BaseException):
    """Stands for the process dying: nothing after the write runs, no cleanup code either."""


class DiesAfterFirstLine(segments.SegmentIO):
    """Writes only the batch's first complete line, then the process 'dies'."""

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        first_line = bytes(data[: bytes(data).index(b"\n") + 1])
        os.pwrite(fd, first_line, offset)
        raise Crash()


def batch(n: int, tag: str) -> list[dict]:
    return [{"type": "user_message", "event_id": f"{tag}-{i}", "payload": {"i": i}} for i in range(n)]


def segment_file(data_dir: Path) -> Path:
    return data_dir / "segments" / "s1" / segments.segment_name(1)


def test_batch_cut_short_at_a_line_boundary_is_cut_aside_whole(data_dir):
    store = EventStore(data_dir)
    store.append_many("s1", batch(2, "before"))
    end = segment_file(data_dir).stat().st_size
    store.io = DiesAfterFirstLine()
    with pytest.raises(Crash):
        store.append_many("s1", batch(3, "lost"))
    # The first line of the batch is complete on disk: without the batch mark it would be indexed.
    assert segment_file(data_dir).stat().st_size > end

    reopened = EventStore(data_dir)
    events = reopened.get_events_by_session("s1")
    assert [e["event_id"] for e in events] == ["before-0", "before-1"]
    assert segment_file(data_dir).stat().st_size == end
    aside = list(segment_file(data_dir).parent.glob("*.torn-*"))
    assert len(aside) == 1 and aside[0].read_bytes().count(b"\n") == 1
    assert reopened.append("s1", {"type": "status"})["seq"] == 3


def test_a_batch_that_reached_the_disk_whole_is_indexed_after_a_crash(data_dir):
    """Killed after the write and fsync but before the index commit: the batch is whole, so it stays."""
    script = textwrap.dedent(f"""
        import os, signal
        from eventsvc import EventStore
        from eventsvc.store.files.index import Index
        store = EventStore({str(data_dir)!r})
        store.append("s1", {{"type": "status"}})
        Index.commit_append = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
        store.append_many("s1", [{{"type": "user_message", "event_id": "kept-%d" % i}} for i in range(3)])
    """)
    result = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert result.returncode == -signal.SIGKILL
    reopened = EventStore(data_dir)
    assert [e["seq"] for e in reopened.get_events_by_session("s1")] == [1, 2, 3, 4]
    assert not list(segment_file(data_dir).parent.glob("*.torn-*"))


def test_a_failed_batch_leaves_no_mark_that_could_cut_later_appends(data_dir):
    store = EventStore(data_dir)

    class NoSpace(segments.SegmentIO):
        def pwrite(self, fd, data, offset):
            raise OSError(28, "No space left on device")

    store.io = NoSpace()
    with pytest.raises(StorageFull):
        store.append_many("s1", batch(3, "failed"))
    store.io = segments.SegmentIO()
    store.append("s1", {"type": "status"})
    store.append("s1", {"type": "status"})
    with open(segment_file(data_dir), "ab") as log:
        log.write(b'{"torn')
    reopened = EventStore(data_dir)
    assert [e["seq"] for e in reopened.get_events_by_session("s1")] == [1, 2]


# -- the session's batch mark (batch_marks): durable first, per session, hostile input at recovery


def mark_file(data_dir: Path, session_id: str = "s1") -> Path:
    return data_dir / "segments" / session_id / batch_marks.MARK_FILE


def index_copy(data_dir: Path) -> dict[str, bytes]:
    """The index's files as they are now (what a power cut could leave, had later commits not reached the disk)."""
    return {name: (data_dir / name).read_bytes() for name in ("index.sqlite3", "index.sqlite3-wal")
            if (data_dir / name).exists()}


def restore_index(data_dir: Path, files: dict[str, bytes]) -> None:
    (data_dir / "index.sqlite3-shm").unlink(missing_ok=True)
    (data_dir / "index.sqlite3-wal").unlink(missing_ok=True)
    for name, content in files.items():
        (data_dir / name).write_bytes(content)


class Recording(segments.SegmentIO):
    """Records the order of the system calls that make a batch durable."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write_mark(self, fd: int, record: bytes, *, fsync: bool) -> None:
        super().write_mark(fd, record, fsync=fsync)
        self.calls.append("mark, flushed" if fsync else "mark")

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        self.calls.append("lines")
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self.calls.append("lines flushed")
        super().fsync(fd)


def test_the_mark_is_flushed_before_any_line_of_the_batch_is_written(data_dir):
    store = EventStore(data_dir)
    store.io = io = Recording()
    store.append_many("s1", batch(3, "b"))
    assert io.calls == ["mark, flushed", "lines", "lines flushed"]
    mark = batch_marks.read(mark_file(data_dir).parent)
    assert mark == (1, 0, segment_file(data_dir).stat().st_size)
    io.calls.clear()
    store.append("s1", {"type": "status"})
    assert io.calls == ["lines", "lines flushed"]  # a single event is all or none by itself


def test_each_batch_overwrites_the_mark_in_place(data_dir):
    store = EventStore(data_dir)
    store.append_many("s1", batch(2, "a"))
    first = os.stat(mark_file(data_dir))
    end = segment_file(data_dir).stat().st_size
    store.append_many("s1", batch(2, "b"))
    second = os.stat(mark_file(data_dir))
    assert (second.st_ino, second.st_size) == (first.st_ino, batch_marks.RECORD_BYTES)
    assert batch_marks.read(mark_file(data_dir).parent) == (1, end, segment_file(data_dir).stat().st_size)


def test_a_batch_killed_mid_write_is_cut_aside_whole_after_a_real_sigkill(data_dir):
    """SIGKILL with only the batch's first line written: the mark, durable before it, has the batch cut."""
    script = textwrap.dedent(f"""
        import os, signal
        from eventsvc import EventStore
        from eventsvc.store.files import segments

        class KilledAfterFirstLine(segments.SegmentIO):
            def pwrite(self, fd, data, offset):
                os.pwrite(fd, bytes(data[: bytes(data).index(b"\\n") + 1]), offset)
                os.kill(os.getpid(), signal.SIGKILL)

        store = EventStore({str(data_dir)!r})
        store.append_many("s1", [{{"type": "status", "event_id": "before-%d" % i}} for i in range(2)])
        store.io = KilledAfterFirstLine()
        store.append_many("s1", [{{"type": "user_message", "event_id": "lost-%d" % i}} for i in range(3)])
    """)
    result = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert result.returncode == -signal.SIGKILL
    reopened = EventStore(data_dir)
    assert [e["event_id"] for e in reopened.get_events_by_session("s1")] == ["before-0", "before-1"]
    aside = list(segment_file(data_dir).parent.glob("*.torn-*"))
    assert len(aside) == 1 and aside[0].read_bytes().count(b"\n") == 1
    assert not mark_file(data_dir).exists()  # settled: it can never cut anything written there later
    assert reopened.append_many("s1", batch(2, "next"))[0]["seq"] == 3


def test_a_crash_while_the_mark_is_written_leaves_nothing_of_the_batch(data_dir):
    """A mark torn mid-write reads as no mark; the batch's lines were never written, so none are lost."""
    store = EventStore(data_dir)
    store.append_many("s1", batch(2, "before"))
    end = segment_file(data_dir).stat().st_size

    class DiesWritingTheMark(segments.SegmentIO):
        def write_mark(self, fd: int, record: bytes, *, fsync: bool) -> None:
            os.pwrite(fd, record[:30], 0)
            raise Crash()

    store.io = DiesWritingTheMark()
    with pytest.raises(Crash):
        store.append_many("s1", batch(3, "lost"))
    assert segment_file(data_dir).stat().st_size == end
    reopened = EventStore(data_dir)
    assert [e["event_id"] for e in reopened.get_events_by_session("s1")] == ["before-0", "before-1"]
    assert [e["seq"] for e in reopened.append_many("s1", batch(2, "next"))] == [3, 4]
    assert reopened.get_events_by_session("s1")[-1]["event_id"] == "next-1"


def test_a_batch_whose_index_commit_was_lost_is_kept_with_the_appends_after_it(data_dir):
    """Power cut: the index's commits (synchronous=NORMAL) are lost, the flushed lines are not. The
    mark sits at the checkpoint, but the whole batch is on disk: it and what follows are indexed."""
    store = EventStore(data_dir)
    store.append("s1", {"type": "status", "event_id": "first"})
    store.close()
    before = index_copy(data_dir)
    store = EventStore(data_dir)
    store.append_many("s1", batch(3, "acked"))
    store.append("s1", {"type": "status", "event_id": "after"})
    store.close()
    restore_index(data_dir, before)
    reopened = EventStore(data_dir)
    assert [e["event_id"] for e in reopened.get_events_by_session("s1")] == [
        "first", "acked-0", "acked-1", "acked-2", "after"]
    assert not list(segment_file(data_dir).parent.glob("*.torn-*"))


def test_a_failed_batch_removes_its_mark_before_the_next_append(data_dir):
    """Otherwise a single append written where the batch was to go, its index commit lost in a power
    cut, would sit under the mark and be cut aside with it: an acknowledged event lost."""
    store = EventStore(data_dir)
    store.append_many("s1", batch(2, "before"))
    store.close()
    store = EventStore(data_dir)
    before = index_copy(data_dir)

    class NoSpace(segments.SegmentIO):
        def pwrite(self, fd, data, offset):
            raise OSError(28, "No space left on device")

    store.io = NoSpace()
    with pytest.raises(StorageFull):
        store.append_many("s1", batch(3, "failed"))
    assert not mark_file(data_dir).exists()
    store.io = segments.SegmentIO()
    store.append("s1", {"type": "status", "event_id": "acked"})
    store.close()
    restore_index(data_dir, before)
    reopened = EventStore(data_dir)
    assert [e["event_id"] for e in reopened.get_events_by_session("s1")] == ["before-0", "before-1", "acked"]


def test_a_batch_whose_index_commit_failed_removes_its_mark(data_dir, monkeypatch):
    """Cut back and not acknowledged: its mark must not stay at the checkpoint either."""
    store = EventStore(data_dir)
    store.append_many("s1", batch(2, "before"))
    store.close()
    store = EventStore(data_dir)
    before = index_copy(data_dir)
    size = segment_file(data_dir).stat().st_size

    def failing_commit(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    with monkeypatch.context() as patched:
        patched.setattr(Index, "commit_append", failing_commit)
        with pytest.raises(StorageError):
            store.append_many("s1", batch(3, "failed"))
    assert segment_file(data_dir).stat().st_size == size
    assert not mark_file(data_dir).exists()
    store.append("s1", {"type": "status", "event_id": "acked"})
    store.close()
    restore_index(data_dir, before)
    reopened = EventStore(data_dir)
    assert [e["event_id"] for e in reopened.get_events_by_session("s1")] == ["before-0", "before-1", "acked"]


def test_a_mark_whose_crc_does_not_match_is_ignored(data_dir):
    """A mark from elsewhere (or flipped bits) never cuts lines: only a well-formed record counts."""
    store = EventStore(data_dir)
    store.append_many("s1", batch(2, "kept"))
    store.close()
    before = index_copy(data_dir)
    store = EventStore(data_dir)
    start = segment_file(data_dir).stat().st_size
    store.append("s1", {"type": "status", "event_id": "single"})
    store.close()
    restore_index(data_dir, before)
    forged = bytearray(batch_marks.record(1, start, start + 10_000))
    forged[-2:-1] = b"0" if forged[-2:-1] != b"0" else b"1"  # one hex digit of the CRC
    mark_file(data_dir).write_bytes(bytes(forged))
    reopened = EventStore(data_dir)
    assert [e["event_id"] for e in reopened.get_events_by_session("s1")] == ["kept-0", "kept-1", "single"]


@pytest.mark.parametrize(("content", "honoured"), [
    (lambda start: batch_marks.record(1, start, start + 10_000), True),
    (lambda start: batch_marks.record(1, start, start + 10_000)[:-1], False),  # no newline
    (lambda start: batch_marks.record(1, start, start + 10_000) + b"x", False),
    (lambda start: b"\x00" * batch_marks.RECORD_BYTES, False),
    (lambda start: b"batch " + b"9" * 200_000, False),
    (lambda start: batch_marks.record(0, start, start + 10_000), False),  # no segment 0
    (lambda start: batch_marks.record(1, start + 10_000, start), False),  # ends before it starts
], ids=["well-formed", "no-newline", "trailing-byte", "zeros", "huge", "segment-0", "backwards"])
def test_only_a_well_formed_mark_at_the_checkpoint_cuts_lines(data_dir, content, honoured):
    store = EventStore(data_dir)
    store.append("s1", {"type": "status", "event_id": "first"})
    store.close()
    before = index_copy(data_dir)
    start = segment_file(data_dir).stat().st_size
    store = EventStore(data_dir)
    store.append("s1", {"type": "status", "event_id": "second"})
    store.close()
    restore_index(data_dir, before)
    mark_file(data_dir).write_bytes(content(start))
    reopened = EventStore(data_dir)
    kept = [e["event_id"] for e in reopened.get_events_by_session("s1")]
    assert kept == (["first"] if honoured else ["first", "second"])
    assert len(list(segment_file(data_dir).parent.glob("*.torn-*"))) == (1 if honoured else 0)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_mark_that_is_not_a_regular_file_is_never_followed_or_opened(data_dir, tmp_path, kind):
    """The batch is refused with nothing written; a link or FIFO in the mark's place is removed
    (itself, never its target), so the next batch goes through; a folder there keeps refusing."""
    store = EventStore(data_dir)
    store.append_many("s1", batch(2, "before"))
    outside = tmp_path / "outside"
    outside.write_bytes(b"not the store's")
    mark_file(data_dir).unlink()
    if kind == "symlink":
        mark_file(data_dir).symlink_to(outside)
    elif kind == "fifo":
        os.mkfifo(mark_file(data_dir))
    else:
        mark_file(data_dir).mkdir()
    size = segment_file(data_dir).stat().st_size
    with pytest.raises(StorageError):
        store.append_many("s1", batch(2, "refused"))
    assert segment_file(data_dir).stat().st_size == size
    assert outside.read_bytes() == b"not the store's"
    if kind == "directory":
        with pytest.raises(StorageError):
            store.append_many("s1", batch(2, "refused-again"))
        assert [e["event_id"] for e in store.get_events_by_session("s1")] == ["before-0", "before-1"]
    else:
        assert not os.path.lexists(mark_file(data_dir))
        assert [e["seq"] for e in store.append_many("s1", batch(2, "next"))] == [3, 4]
        assert outside.read_bytes() == b"not the store's"


def test_a_mark_an_earlier_version_left_in_the_index_is_honoured_once(data_dir):
    """Data written before marks moved to the session folder: a pending_batch row still cuts a
    partial batch at the checkpoint, and every row is dropped at open, whatever the log holds."""
    store = EventStore(data_dir)
    store.append_many("s1", batch(2, "before"))
    store.close()
    start = segment_file(data_dir).stat().st_size
    lost = json.dumps({"type": "status", "timestamp": "2026-01-01T00:00:00.000000Z", "session_id": "s1",
                       "run_id": None, "seq": 3, "source": "api", "event_id": "lost-0", "payload": {}},
                      separators=(",", ":")).encode() + b"\n"  # the first line of three, the rest never written
    with open(segment_file(data_dir), "ab") as log:
        log.write(lost)
    database = sqlite3.connect(data_dir / "index.sqlite3")
    with database:
        database.execute('INSERT INTO pending_batch (session_id, segment, "offset", end_offset) VALUES (?, ?, ?, ?)',
                         ("s1", 1, start, start + 3 * len(lost)))
        database.execute('INSERT INTO pending_batch (session_id, segment, "offset", end_offset) VALUES (?, ?, ?, ?)',
                         ("s2", 1, 0, 500))  # a session with no folder: nothing to cut
    database.close()
    reopened = EventStore(data_dir)
    assert [e["event_id"] for e in reopened.get_events_by_session("s1")] == ["before-0", "before-1"]
    assert len(list(segment_file(data_dir).parent.glob("*.torn-*"))) == 1
    assert reopened._index.pending_batch_sessions() == []
    # The session with no folder had its row dropped too: its first append, were its index commit lost
    # in a power cut, must not sit under it.
    reopened.append("s2", {"type": "status", "event_id": "s2-first"})
    reopened.close()
    restore_index(data_dir, {})
    assert [e["event_id"] for e in EventStore(data_dir).get_events_by_session("s2")] == ["s2-first"]
