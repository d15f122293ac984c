"""append_many is all or none, also when the process dies in the middle of writing the batch."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eventsvc import EventStore
from eventsvc.errors import StorageFull
from eventsvc.store.files import segments


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


class DiesBeforeWriting(segments.SegmentIO):
    """The process 'dies' after the batch's mark is committed and before the first byte of the batch."""

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        raise Crash()


class IndexSnapshotAtWrite(segments.SegmentIO):
    """Copies the index's files just before the log is written: what a power cut would leave of the
    index if the append's own index commit (synchronous=NORMAL) never reached the disk."""

    def __init__(self, data_dir: Path, into: Path) -> None:
        self.data_dir, self.into = data_dir, into

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        self.into.mkdir()
        for name in ("index.sqlite3", "index.sqlite3-wal"):
            if (self.data_dir / name).exists():
                (self.into / name).write_bytes((self.data_dir / name).read_bytes())
        return super().pwrite(fd, data, offset)


def test_a_mark_left_by_a_batch_that_died_before_writing_never_cuts_a_later_acknowledged_append(data_dir, tmp_path):
    store = EventStore(data_dir)
    store.append("s1", {"type": "status", "event_id": "first"})
    store.io = DiesBeforeWriting()
    with pytest.raises(Crash):
        store.append_many("s1", batch(3, "never-written"))
    # The session is consistent (nothing past its checkpoint), so no repair settles the mark.
    snapshot = tmp_path / "index-at-write"
    store.io = IndexSnapshotAtWrite(data_dir, snapshot)
    acknowledged = store.append("s1", {"type": "status", "event_id": "acknowledged"})
    store.close()
    # Power cut: the line is on disk (fdatasync), its index commit is not.
    for name in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"):
        (data_dir / name).unlink(missing_ok=True)
        if (snapshot / name).exists():
            (data_dir / name).write_bytes((snapshot / name).read_bytes())

    reopened = EventStore(data_dir)
    assert [e["event_id"] for e in reopened.get_events_by_session("s1")] == ["first", "acknowledged"]
    assert reopened.get_events_by_session("s1")[-1] == acknowledged
    assert not list(segment_file(data_dir).parent.glob("*.torn-*"))
