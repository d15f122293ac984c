"""A disk that refuses writes: ENOSPC, EDQUOT and EIO from pwrite (also after a partial write) and fsync.

Faults come from a SegmentIO subclass passed to the store; the files and SQLite are real.
A failed append must leave the segment byte-identical and the index unchanged, and the
next append after the fault clears must take the next contiguous seq.
"""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from eventsvc import EventStore
from eventsvc.errors import StorageError, StorageFull
from eventsvc.store.files import segments


class FaultyIO(segments.SegmentIO):
    """Fails one system call with ``err`` while armed.

    ``mode``: ``pwrite`` raises at once; ``partial_pwrite`` writes half the bytes, then raises;
    ``short_pwrite`` writes and reports half the bytes, then raises on the call for the rest;
    ``fsync`` lets the write through and fails the flush.
    """

    def __init__(self, mode: str, err: int) -> None:
        self.mode = mode
        self.err = err
        self.armed = True
        self.failures = 0
        self._half_written = False

    def _fail(self) -> None:
        self.failures += 1
        raise OSError(self.err, os.strerror(self.err))

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        if self.armed and self.mode == "pwrite":
            self._fail()
        if self.armed and self.mode == "partial_pwrite":
            os.pwrite(fd, bytes(data[: len(data) // 2]), offset)
            self._fail()
        if self.armed and self.mode == "short_pwrite":
            if self._half_written:
                self._half_written = False
                self._fail()
            self._half_written = True
            return os.pwrite(fd, bytes(data[: len(data) // 2]), offset)
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        if self.armed and self.mode == "fsync":
            self._fail()
        super().fsync(fd)


FAULTS = [
    ("pwrite", errno.ENOSPC, StorageFull, "insufficient_storage"),
    ("pwrite", errno.EDQUOT, StorageFull, "insufficient_storage"),
    ("pwrite", errno.EIO, StorageError, "storage_unavailable"),
    ("partial_pwrite", errno.ENOSPC, StorageFull, "insufficient_storage"),
    ("partial_pwrite", errno.EIO, StorageError, "storage_unavailable"),
    ("short_pwrite", errno.ENOSPC, StorageFull, "insufficient_storage"),
    ("short_pwrite", errno.EIO, StorageError, "storage_unavailable"),
    ("fsync", errno.EIO, StorageError, "storage_unavailable"),
    ("fsync", errno.ENOSPC, StorageFull, "insufficient_storage"),
]
FAULT_IDS = [f"{mode}-{errno.errorcode[err]}" for mode, err, _, _ in FAULTS]


def session_files(data_dir: Path, session_id: str) -> dict[str, bytes]:
    """The session's log on disk: its segments and any torn tails kept beside them, with their bytes."""
    folder = data_dir / "segments" / session_id
    return {path.name: path.read_bytes() for path in sorted(folder.glob(f"*{segments.SEGMENT_SUFFIX}*"))}


def message(n: int, **fields) -> dict:
    return {"type": "user_message", "payload": {"n": n, "text": "x" * n}, **fields}


def assert_raised_as(raised: pytest.ExceptionInfo, error: type, code: str) -> None:
    assert type(raised.value) is error
    assert raised.value.code == code


@pytest.fixture
def faulty_store(data_dir: Path):
    """A store whose disk works until the test arms the fault."""
    stores: list[EventStore] = []

    def _open(mode: str, err: int, **options) -> tuple[EventStore, FaultyIO]:
        io = FaultyIO(mode, err)
        io.armed = False
        store = EventStore(data_dir, io=io, **options)
        stores.append(store)
        return store, io

    yield _open
    for store in stores:
        store.close()


@pytest.mark.parametrize(("mode", "err", "error", "code"), FAULTS, ids=FAULT_IDS)
def test_failed_append_leaves_log_and_index_unchanged(faulty_store, data_dir, mode, err, error, code):
    store, io = faulty_store(mode, err)
    written = [store.append("s1", message(n)) for n in range(3)]
    before = session_files(data_dir, "s1")
    io.armed = True

    with pytest.raises(StorageError) as raised:
        store.append("s1", message(3, event_id="after-fault"))

    assert io.failures >= 1
    assert_raised_as(raised, error, code)
    assert session_files(data_dir, "s1") == before
    assert store.last_seq("s1") == 3
    assert store.get_events_by_session("s1") == written
    reopened = EventStore(data_dir)
    try:
        assert reopened.get_events_by_session("s1") == written
        assert session_files(data_dir, "s1") == before
    finally:
        reopened.close()

    io.armed = False
    stored = store.append("s1", message(3, event_id="after-fault"))

    assert stored["seq"] == 4
    segment = data_dir / "segments" / "s1" / segments.segment_name(1)
    data = segment.read_bytes()
    assert data.startswith(before[segment.name]) and data.endswith(b"\n")
    assert json.loads(data[len(before[segment.name]):]) == stored
    assert [event["seq"] for event in store.get_events_by_session("s1")] == [1, 2, 3, 4]


@pytest.mark.parametrize(("mode", "err", "error", "code"),
                         [FAULTS[0], FAULTS[4], FAULTS[7]], ids=[FAULT_IDS[0], FAULT_IDS[4], FAULT_IDS[7]])
def test_failed_batch_stores_none_of_its_events(faulty_store, data_dir, mode, err, error, code):
    store, io = faulty_store(mode, err)
    written = store.append_many("s1", [message(n) for n in range(2)])
    before = session_files(data_dir, "s1")
    batch = [message(n, event_id=f"batch-{n}", run_id="r1") for n in range(5)]
    io.armed = True

    with pytest.raises(StorageError) as raised:
        store.append_many("s1", batch)

    assert_raised_as(raised, error, code)
    assert session_files(data_dir, "s1") == before
    assert store.get_events_by_session("s1") == written
    assert store.get_events_by_run("s1", "r1") == []
    assert store.run_session("r1") is None
    io.armed = False
    assert [event["seq"] for event in store.append_many("s1", batch)] == [3, 4, 5, 6, 7]


@pytest.mark.parametrize(("mode", "err", "error", "code"),
                         [FAULTS[0], FAULTS[3], FAULTS[7]], ids=[FAULT_IDS[0], FAULT_IDS[3], FAULT_IDS[7]])
def test_failed_first_write_of_a_rolled_segment_leaves_no_file(faulty_store, data_dir, mode, err, error, code):
    store, io = faulty_store(mode, err, segment_bytes=1)  # every append starts a new segment
    written = [store.append("s1", message(n)) for n in range(3)]
    before = session_files(data_dir, "s1")
    assert segments.list_bases(data_dir / "segments" / "s1") == [1, 2, 3]
    io.armed = True

    with pytest.raises(StorageError) as raised:
        store.append("s1", message(3))

    assert_raised_as(raised, error, code)
    assert session_files(data_dir, "s1") == before
    assert store.get_events_by_session("s1") == written
    io.armed = False
    assert store.append("s1", message(3))["seq"] == 4
    assert segments.list_bases(data_dir / "segments" / "s1") == [1, 2, 3, 4]


@pytest.mark.parametrize(("mode", "err", "error", "code"),
                         [FAULTS[0], FAULTS[4], FAULTS[7]], ids=[FAULT_IDS[0], FAULT_IDS[4], FAULT_IDS[7]])
def test_failed_first_append_of_a_session_leaves_no_segment(faulty_store, data_dir, mode, err, error, code):
    store, io = faulty_store(mode, err)
    io.armed = True

    with pytest.raises(StorageError) as raised:
        store.append("fresh", message(0, run_id="r-fresh"))

    assert_raised_as(raised, error, code)
    assert session_files(data_dir, "fresh") == {}
    assert store.last_seq("fresh") == 0
    assert store.run_session("r-fresh") is None
    io.armed = False
    assert store.append("fresh", message(0, run_id="r-fresh"))["seq"] == 1
    assert store.run_session("r-fresh") == "fresh"


def test_write_reporting_zero_bytes_is_a_storage_error(faulty_store, data_dir):
    class NoProgressIO(segments.SegmentIO):
        def pwrite(self, fd: int, data: bytes, offset: int) -> int:
            return 0

    store, _ = faulty_store("pwrite", errno.EIO)
    store.append("s1", message(0))
    before = session_files(data_dir, "s1")
    store.io = NoProgressIO()

    with pytest.raises(StorageError) as raised:
        store.append("s1", message(1))

    assert_raised_as(raised, StorageError, "storage_unavailable")
    assert session_files(data_dir, "s1") == before
    store.io = segments.SegmentIO()
    assert store.append("s1", message(1))["seq"] == 2


# -- over HTTP -----------------------------------------------------------------------------------

HTTP_FAULTS = [
    ("pwrite", errno.ENOSPC, 507, "insufficient_storage"),
    ("partial_pwrite", errno.ENOSPC, 507, "insufficient_storage"),
    ("pwrite", errno.EIO, 503, "storage_unavailable"),
    ("partial_pwrite", errno.EIO, 503, "storage_unavailable"),
    ("fsync", errno.EIO, 503, "storage_unavailable"),
]


@pytest.mark.parametrize(("mode", "err", "status", "code"), HTTP_FAULTS,
                         ids=[f"{mode}-{errno.errorcode[err]}" for mode, err, _, _ in HTTP_FAULTS])
def test_storage_faults_over_http(app, client, data_dir, mode, err, status, code):
    url = "/api/sessions/s1/events"
    assert client.post(url, json=[message(0), message(1)]).status_code == 201
    before = session_files(data_dir, "s1")
    faulty = FaultyIO(mode, err)
    app.extensions["eventsvc.store"].io = faulty

    for body in (message(2, event_id="e-2"), [message(2, event_id="e-2"), message(3, event_id="e-3")]):
        response = client.post(url, json=body)
        assert response.status_code == status
        assert response.is_json
        error = response.get_json()["error"]
        assert error["code"] == code
        assert "Traceback" not in response.get_data(as_text=True)
    assert faulty.failures >= 2
    assert session_files(data_dir, "s1") == before
    page = client.get(url).get_json()
    assert [event["seq"] for event in page["events"]] == [1, 2]

    faulty.armed = False
    response = client.post(url, json=message(2, event_id="e-2"))
    assert response.status_code == 201
    assert response.get_json()["seq"] == 3
    assert [event["seq"] for event in client.get(url).get_json()["events"]] == [1, 2, 3]
